package tree_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/lab/baseline"
	"github.com/coopstreaming/coop/lab/baseline/tree"
	"github.com/coopstreaming/coop/lab/swarm"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/wire"
)

func protocol() *swarm.Protocol {
	cfg := func(id wire.PeerID, up float64, server bool) baseline.Config {
		return baseline.Config{ID: id, Server: server, Upload: up, StreamRate: 125000, SegmentDuration: 500 * time.Millisecond}
	}
	return &swarm.Protocol{Name: "tree",
		NewServer: func(env engine.Env, up float64) swarm.Source { return tree.New(cfg(swarm.ServerID, up, true), env) },
		NewPeer:   func(env engine.Env, id wire.PeerID, up float64) swarm.Node { return tree.New(cfg(id, up, false), env) },
	}
}

func scenario(seed uint64, n int) swarm.Scenario {
	return swarm.Scenario{Seed: seed, Peers: n, Duration: 60 * time.Second, LayerShares: []float64{1}, ServerUpload: 5, Protocol: protocol()}
}

// checkTree verifies the degree bound and that every live peer hangs in
// the tree.
func checkTree(t *testing.T, s *swarm.Swarm) {
	t.Helper()
	for id, nd := range s.Net.Nodes() {
		h := nd.Host.(*tree.Host)
		require.LessOrEqual(t, h.Children(), h.Slots(), "node %d over its degree bound", id)
		if nd.Alive() && id != swarm.ServerID {
			require.GreaterOrEqual(t, h.Depth(), 1, "live peer %d is not attached", id)
		}
	}
}

func TestTreeDeliversToEveryPeer(t *testing.T) {
	s := swarm.New(scenario(1, 100))
	res := s.Run()
	checkTree(t, s)
	require.Equal(t, 100, res.PeersMeasured)
	require.GreaterOrEqual(t, res.Continuity, 0.99)
	// The server feeds only its children: ⌊5x⌋ = 5 copies.
	require.InDelta(t, 5, res.CopiesPerSegment, 0.3)
}

func TestTreeRepairsAfterParentsCrash(t *testing.T) {
	sc := scenario(2, 100)
	sc.Events = []swarm.Event{{At: 25 * time.Second, Do: func(s *swarm.Swarm) {
		// Crash every child of the root: whole subtrees become orphans.
		for _, id := range s.AlivePeers() {
			if s.Net.Node(id).Host.(*tree.Host).Depth() == 1 {
				s.RemovePeer(id, true)
			}
		}
	}}}
	s := swarm.New(sc)
	res := s.Run()
	checkTree(t, s)
	var late, lateOK float64
	for _, p := range res.Peers {
		if !p.Alive {
			continue
		}
		for _, r := range p.Stats.PlayedAt {
			if r.At.Sub(s.Net.Now()) > -15*time.Second { // the last 15 s
				late++
				if r.Layers > 0 {
					lateOK++
				}
			}
		}
	}
	require.Greater(t, late, 0.0)
	require.GreaterOrEqual(t, lateOK/late, 0.99, "orphans rejoined and play again")
	require.Less(t, res.Continuity, 1.0, "orphans lose what is pushed while they are detached")
}

func TestTreeSameSeedSameResult(t *testing.T) {
	a, b := swarm.Run(scenario(3, 60)), swarm.Run(scenario(3, 60))
	require.Equal(t, a.Continuity, b.Continuity)
	require.Equal(t, a.Events, b.Events)
	require.Equal(t, a.Peers, b.Peers)
}

// Five peers that cannot forward take the root's five slots first: the
// stronger peers that come next displace them, or the tree would stop
// growing.
func TestTreeStrongerJoinersDisplaceLeaves(t *testing.T) {
	sc := scenario(4, 0)
	sc.Peers = -1 // none from the upload distribution
	sc.Events = []swarm.Event{
		{At: time.Second, Do: func(s *swarm.Swarm) {
			for range 5 {
				s.AddPeer(0.5)
			}
		}},
		{At: 5 * time.Second, Do: func(s *swarm.Swarm) {
			for range 20 {
				s.AddPeer(3)
			}
		}},
	}
	s := swarm.New(sc)
	res := s.Run()
	checkTree(t, s)
	require.Equal(t, 25, res.PeersMeasured)
	require.Zero(t, res.NeverStarted)
	require.Greater(t, s.Server.Host.(*tree.Host).Preemptions, 0)
}
