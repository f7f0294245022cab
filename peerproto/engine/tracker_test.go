package engine_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/partners"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// fakeTracker records what the server partner tells its Tracker (unit
// test double; the real backend is plugin/tracker).
type fakeTracker struct {
	joined map[wire.PeerID]partners.Known
	left   []wire.PeerID
	asked  []partners.Query
}

func (f *fakeTracker) Join(id wire.PeerID, v partners.Known) { f.joined[id] = v }
func (f *fakeTracker) Leave(id wire.PeerID)                  { f.left = append(f.left, id); delete(f.joined, id) }
func (f *fakeTracker) Candidates(q partners.Query) []wire.Candidate {
	f.asked = append(f.asked, q)
	return []wire.Candidate{{Peer: 77, Addr: "tracker:77"}}
}

func candidatesSent(env *recEnv, to wire.PeerID) []wire.Candidate {
	for i, m := range env.sent {
		if c, ok := m.(*wire.Candidates); ok && env.to[i] == to {
			return c.List
		}
	}
	return nil
}

func TestTheServerAsksItsTrackerForCandidates(t *testing.T) {
	env := newRecEnv()
	tr := &fakeTracker{joined: map[wire.PeerID]partners.Known{}}
	srv := engine.New(engine.Config{Role: wire.RoleServer, ID: 1, Stream: "s", Tracker: tr}, env)
	connectPeer(t, srv, 2)
	connectPeer(t, srv, 3)
	require.Len(t, tr.joined, 2, "every connected peer joins the tracker")
	require.Equal(t, "127.0.0.1:1", tr.joined[2].Addr(), "with a live view of its state")

	env.sent, env.to = nil, nil
	srv.Receive(2, &wire.GetCandidates{Max: 5})
	require.Equal(t, []wire.Candidate{{Peer: 77, Addr: "tracker:77"}}, candidatesSent(env, 2), "the answer is the tracker's")
	require.Len(t, tr.asked, 1)
	require.Equal(t, wire.PeerID(2), tr.asked[0].Asker)
	require.Equal(t, 5, tr.asked[0].N)

	srv.Disconnected(3)
	require.Equal(t, []wire.PeerID{3}, tr.left, "a peer that leaves leaves the tracker")
}

func TestWithoutATrackerTheServerRanksItsOwnPartners(t *testing.T) {
	env := newRecEnv()
	srv := engine.New(engine.Config{Role: wire.RoleServer, ID: 1, Stream: "s"}, env)
	connectPeer(t, srv, 2)
	connectPeer(t, srv, 3)
	env.sent, env.to = nil, nil
	srv.Receive(2, &wire.GetCandidates{Max: 5})
	got := candidatesSent(env, 2)
	require.Len(t, got, 1)
	require.Equal(t, wire.PeerID(3), got[0].Peer, "every other peer, never the asker")
}
