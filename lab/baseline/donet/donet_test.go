package donet_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/lab/baseline"
	"github.com/coopstreaming/coop/lab/baseline/donet"
	"github.com/coopstreaming/coop/lab/swarm"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/wire"
)

func protocol(cfg donet.Config) *swarm.Protocol {
	mk := func(id wire.PeerID, up float64, server bool) donet.Config {
		c := cfg
		c.Config = baseline.Config{ID: id, Server: server, Upload: up, StreamRate: 125000, SegmentDuration: 500 * time.Millisecond,
			PlayoutDelay: cfg.PlayoutDelay}
		return c
	}
	return &swarm.Protocol{Name: "donet",
		NewServer: func(env engine.Env, up float64) swarm.Source { return donet.New(mk(swarm.ServerID, up, true), env) },
		NewPeer:   func(env engine.Env, id wire.PeerID, up float64) swarm.Node { return donet.New(mk(id, up, false), env) },
	}
}

func scenario(seed uint64, n int, cfg donet.Config) swarm.Scenario {
	return swarm.Scenario{Seed: seed, Peers: n, Duration: 60 * time.Second, LayerShares: []float64{1}, ServerUpload: 5,
		Uploads: []swarm.UploadClass{{Share: 1, Factor: 3}}, Protocol: protocol(cfg)}
}

// checkMesh verifies the partner bound and the request pipeline bound.
func checkMesh(t *testing.T, s *swarm.Swarm) {
	t.Helper()
	for id, nd := range s.Net.Nodes() {
		if !nd.Alive() {
			continue
		}
		h := nd.Host.(*donet.Host)
		require.LessOrEqual(t, h.Partners(), 8, "node %d over 2M partners", id)
		for _, p := range h.PartnerIDs() {
			require.LessOrEqual(t, h.InFlight(p), 3, "node %d: too many requests in flight to %d", id, p)
			require.GreaterOrEqual(t, h.InFlight(p), 0)
		}
	}
}

func TestSmallMeshPlaysWithoutServerPartnership(t *testing.T) {
	s := swarm.New(scenario(1, 30, donet.Config{}))
	res := s.Run()
	checkMesh(t, s)
	require.Equal(t, 30, res.PeersMeasured)
	require.GreaterOrEqual(t, res.Continuity, 0.95)
	// The server is a partner of at most 2M peers; the rest comes from
	// peers.
	require.LessOrEqual(t, s.Server.Host.(*donet.Host).Partners(), 8)
	require.Greater(t, res.Offload, 0.6)
}

func TestDepartedMembersFadeFromViews(t *testing.T) {
	const victim = wire.PeerID(5)
	sc := scenario(2, 30, donet.Config{})
	sc.Events = []swarm.Event{{At: 20 * time.Second, Do: func(s *swarm.Swarm) { s.RemovePeer(victim, true) }}}
	s := swarm.New(sc)
	knewBefore := 0
	s.Net.At(s.Net.Now().Add(19*time.Second), func() {
		for _, id := range s.AlivePeers() {
			if s.Net.Node(id).Host.(*donet.Host).Knows(victim) {
				knewBefore++
			}
		}
	})
	s.Run()
	require.Greater(t, knewBefore, 0, "the victim was known before it crashed")
	for _, id := range s.AlivePeers() {
		require.False(t, s.Net.Node(id).Host.(*donet.Host).Knows(victim), "peer %d still lists the crashed member", id)
	}
}

func TestLongerBufferHelpsLargerMesh(t *testing.T) {
	short := swarm.Run(scenario(3, 100, donet.Config{}))
	longCfg := donet.Config{}
	longCfg.PlayoutDelay = 30 * time.Second
	sc := scenario(3, 100, longCfg)
	sc.Duration, sc.Warmup = 90*time.Second, 40*time.Second
	long := swarm.Run(sc)
	t.Logf("N=100: continuity %.3f with a 5 s playout delay, %.3f with 30 s", short.Continuity, long.Continuity)
	require.Greater(t, long.Continuity, short.Continuity)
}

func TestSameSeedSameResult(t *testing.T) {
	a, b := swarm.Run(scenario(4, 40, donet.Config{})), swarm.Run(scenario(4, 40, donet.Config{}))
	require.Equal(t, a.Continuity, b.Continuity)
	require.Equal(t, a.Events, b.Events)
	require.Equal(t, a.Peers, b.Peers)
}
