package tracker

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/partners"
	"github.com/coopstreaming/coop/peerproto/wire"
)

type view struct {
	addr     string
	up       float64
	rtt      time.Duration
	partners int
}

func (v view) Addr() string       { return v.addr }
func (v view) Upload() float64    { return v.up }
func (v view) RTT() time.Duration { return v.rtt }
func (v view) Partners() int      { return v.partners }

func query(asker wire.PeerID, n int) partners.Query {
	return partners.Query{Asker: asker, AskerRTT: 20 * time.Millisecond, N: n, MaxPartners: 10, Rand: rand.New(rand.NewPCG(1, 2))}
}

func ids(cs []wire.Candidate) []wire.PeerID {
	out := make([]wire.PeerID, len(cs))
	for i, c := range cs {
		out[i] = c.Peer
	}
	return out
}

func TestCandidatesRankJoinedPeersButTheAsker(t *testing.T) {
	tr := NewMemory()
	tr.Join(2, view{"a:1", 100_000, 20 * time.Millisecond, 3})
	tr.Join(3, view{"a:2", 1_000_000, 20 * time.Millisecond, 3})  // strong and as near as the asker
	tr.Join(4, view{"", 1_000_000, 20 * time.Millisecond, 3})     // takes no inbound connections
	tr.Join(5, view{"a:3", 1_000_000, 20 * time.Millisecond, 10}) // full: ranks last
	tr.Join(6, view{"a:4", 50_000, 20 * time.Millisecond, 3})
	got := ids(tr.Candidates(query(6, 16)))
	require.Equal(t, []wire.PeerID{3, 2, 5}, got, "the asker and the undialable are skipped; a full peer ranks last")
	require.Len(t, tr.Candidates(query(6, 1)), 1, "bounded by N")

	tr.Leave(3)
	require.Equal(t, 4, tr.Len())
	require.NotContains(t, ids(tr.Candidates(query(6, 16))), wire.PeerID(3), "a peer that left is not handed out")
}

func TestCandidatesAreDeterministicPerSeed(t *testing.T) {
	tr := NewMemory()
	for id := wire.PeerID(2); id < 40; id++ {
		tr.Join(id, view{"x", float64(id%7) * 10_000, time.Duration(id%5) * 10 * time.Millisecond, 2})
	}
	require.Equal(t, tr.Candidates(query(100, 16)), tr.Candidates(query(100, 16)))
}

func TestARejoinedPeerIsKnownOnceAndLeavesOnce(t *testing.T) {
	tr := NewMemory()
	tr.Join(7, view{"a:1", 100_000, 20 * time.Millisecond, 3})
	tr.Join(3, view{"a:2", 100_000, 20 * time.Millisecond, 3})
	tr.Join(7, view{"a:3", 100_000, 20 * time.Millisecond, 3}) // reconnected: the new view replaces the old
	require.Equal(t, 2, tr.Len())
	require.Equal(t, []wire.PeerID{3, 7}, memberIDs(tr), "kept sorted, each peer once")
	cs := tr.Candidates(query(1, 16))
	require.Len(t, cs, 2)
	for _, c := range cs {
		if c.Peer == 7 {
			require.Equal(t, "a:3", c.Addr)
		}
	}
	tr.Leave(7)
	tr.Leave(7) // twice is harmless
	require.Equal(t, []wire.PeerID{3}, memberIDs(tr))
	require.Equal(t, []wire.PeerID{3}, ids(tr.Candidates(query(1, 16))))
}

func memberIDs(tr *Memory) []wire.PeerID {
	out := make([]wire.PeerID, len(tr.members))
	for i, m := range tr.members {
		out[i] = m.id
	}
	return out
}
