package swarm

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/lab/sim"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/wire"
)

func logResult(t *testing.T, r Result) {
	t.Helper()
	t.Logf("N=%d CI mean %.4f p5 %.4f, quality %.3f, offload %.3f, copies/segment %.2f, redundancy %.3f, overhead %.4f, startup p50 %v p95 %v, latency p50 %v p95 %v, events %d",
		len(r.Peers), r.Continuity, r.ContinuityP5, r.Quality, r.Offload, r.CopiesPerSegment, r.Redundancy,
		r.ControlOverhead, r.StartupP50, r.StartupP95, r.LatencyP50, r.LatencyP95, r.Events)
}

// The reference swarm: a server partner and 100 peers, 60 s of a
// 1 Mbit/s stream in 3 layers, mean peer upload 1.5x the stream rate,
// server upload capped at 4x.
func TestSwarmOf100PeersPlaysAndOffloadsTheServer(t *testing.T) {
	start := time.Now()
	r := Run(Scenario{Seed: 1})
	logResult(t, r)
	t.Logf("wall time %v", time.Since(start))
	require.Len(t, r.Peers, 100)
	require.Equal(t, 100, r.PeersStarted, "every peer plays")
	for _, p := range r.Peers {
		require.Greater(t, p.PlayedInWindow, 50, "peer %d played", p.ID)
	}
	require.GreaterOrEqual(t, r.Continuity, 0.99, "base-layer continuity")
	require.GreaterOrEqual(t, r.Offload, 0.85, "offload")
	require.LessOrEqual(t, r.CopiesPerSegment, 4.0+1e-9, "the server never exceeds its cap")
}

// cappedRun joins a peer whose download carries the base layer only
// (0.65x the stream rate against 0.5x for the base) from 8 s to 50 s.
func cappedRun(seed uint64) (capped *sim.Node, whileCapped int, baseCI float64) {
	sc := Scenario{Seed: seed, Duration: 100 * time.Second, Events: []Event{
		{At: 8 * time.Second, Do: func(s *Swarm) {
			capped = s.AddPeer(1.5)
			capped.Down = 0.65 * s.Sc.StreamRate
		}},
		{At: 50 * time.Second, Do: func(s *Swarm) {
			whileCapped = capped.Engine.Layers()
			capped.Down = 10 * s.Sc.StreamRate
		}},
	}}
	New(sc).Run()
	var due, base float64
	for _, rec := range capped.Engine.Stats().PlayedAt {
		if at := rec.At.Sub(sim.Epoch); at > 20*time.Second && at < 50*time.Second {
			due++
			if rec.Layers > 0 {
				base++
			}
		}
	}
	return capped, whileCapped, base / due
}

func TestCappedPeerDropsALayerKeepsTheBaseAndReaddsItWhenTheCapLifts(t *testing.T) {
	var cis []float64
	for seed := uint64(1); seed <= 3; seed++ {
		capped, whileCapped, ci := cappedRun(seed)
		st := capped.Engine.Stats()
		t.Logf("seed %d: layers while capped %d, base continuity while capped %.4f, switches %d", seed, whileCapped, ci, st.LayerSwitches)
		require.Equal(t, 1, whileCapped, "seed %d: base layer only while the link carries only the base", seed)
		require.True(t, readdedAfter(capped, 50*time.Second), "seed %d: a layer comes back after the cap lifts", seed)
		cis = append(cis, ci)
	}
	require.GreaterOrEqual(t, Percentile(cis, 50), 0.99, "median base continuity while capped")
}

func TestChurnOfAFifthOfThePeersEveryTenSeconds(t *testing.T) {
	var cis []float64
	for seed := uint64(1); seed <= 3; seed++ {
		sc := Scenario{Seed: seed, Duration: 90 * time.Second}
		for at := 20 * time.Second; at < 80*time.Second; at += 10 * time.Second {
			sc.Events = append(sc.Events, Event{At: at, Do: func(s *Swarm) {
				alive := s.AlivePeers()
				n := len(alive) / 5
				rnd := s.Net.Rand()
				for i := 0; i < n; i++ {
					j := rnd.IntN(len(alive))
					s.RemovePeer(alive[j], rnd.IntN(2) == 0) // half leave politely, half crash
					alive = append(alive[:j], alive[j+1:]...)
					s.AddPeer(0)
				}
			}})
		}
		r := Run(sc)
		logResult(t, r)
		cis = append(cis, r.Continuity)
	}
	require.GreaterOrEqual(t, Percentile(cis, 50), 0.97, "median base-layer continuity under churn")
}

func TestPollutingPeerIsBannedAndNoBadDataIsAccepted(t *testing.T) {
	const polluter = wire.PeerID(10)
	var s *Swarm
	truth := map[uint64]*manifest.Manifest{}
	bad := 0
	sc := Scenario{Seed: 4, Duration: 45 * time.Second,
		Configure: func(c *engine.Config) {
			c.OnPlay = func(seq uint64, layers [][]byte) {
				m := truth[seq]
				for l, chunk := range layers {
					if m == nil || m.Check(l, chunk) != nil {
						bad++
					}
				}
			}
		},
		Events: []Event{{At: 2*time.Second + 500*time.Millisecond, Do: func(s *Swarm) {
			s.Net.Node(polluter).Tamper = func(m wire.Message) wire.Message {
				d, ok := m.(*wire.Data)
				if !ok || len(d.Payload) == 0 {
					return m
				}
				flipped := bytes.Clone(d.Payload)
				flipped[len(flipped)/2] ^= 0xff
				return &wire.Data{Seq: d.Seq, Layer: d.Layer, Manifest: d.Manifest, Payload: flipped}
			}
		}}},
	}
	s = New(sc)
	s.OnSegment = func(seq uint64, m *manifest.Manifest) { truth[seq] = m }
	r := s.Run()
	logResult(t, r)
	require.Zero(t, bad, "bad chunks played")
	banners := 0
	for _, p := range r.Peers {
		if p.ID == polluter {
			continue
		}
		nd := s.Net.Node(p.ID)
		if nd.Engine.Banned(polluter) {
			banners++
		}
		require.NotContains(t, nd.Engine.Partners(), polluter, "peer %d still partners the polluter", p.ID)
	}
	t.Logf("%d peers banned the polluter", banners)
	require.Positive(t, banners)
}

// readdedAfter tells whether the node subscribed to more than one layer
// at some point after t (simulated time since the epoch).
func readdedAfter(nd *sim.Node, t time.Duration) bool {
	for _, rec := range nd.Engine.Stats().PlayedAt {
		if rec.At.Sub(sim.Epoch) > t && rec.Subscribed > 1 {
			return true
		}
	}
	return false
}

func TestSameSeedGivesIdenticalResults(t *testing.T) {
	sc := Scenario{Seed: 9, Peers: 30, Duration: 20 * time.Second}
	a, b := Run(sc), Run(sc)
	require.Equal(t, a.Events, b.Events)
	require.Equal(t, a.Continuity, b.Continuity)
	require.Equal(t, a.Offload, b.Offload)
	for i := range a.Peers {
		require.Equal(t, a.Peers[i].Stats.MediaBytesIn, b.Peers[i].Stats.MediaBytesIn)
	}
}

// TestOffloadWithinAnalyticBound is the simulator's analytic cross-check.
// Every byte a peer gets from peers was uploaded by a peer, and every
// segment leaves the server at least once: offload ≤ min(1 − 1/N, peers'
// upload capacity × time ÷ useful bytes received), which is the familiar
// min(1 − 1/N, mean upload ÷ stream rate) when every peer receives the
// whole stream.
func TestOffloadWithinAnalyticBound(t *testing.T) {
	for _, tc := range []struct {
		n       int
		uploads []UploadClass
	}{
		{30, []UploadClass{{1, 0.4}}},
		{30, []UploadClass{{0.5, 0.2}, {0.5, 1}}},
		{20, nil},
	} {
		sc := Scenario{Seed: 3, Peers: tc.n, Duration: 30 * time.Second, Uploads: tc.uploads,
			Configure: func(c *engine.Config) { c.SkipVerify = true }}
		r := Run(sc)
		meanUp := 0.0
		for _, c := range r.Scenario.Uploads {
			meanUp += c.Share * c.Factor
		}
		var useful, fromPeers float64
		for _, p := range r.Peers {
			useful += float64(p.Stats.UsefulFromServer + p.Stats.UsefulFromPeers)
			fromPeers += float64(p.Stats.UsefulFromPeers)
		}
		capacity := meanUp * r.Scenario.StreamRate * float64(tc.n) * r.Scenario.Duration.Seconds()
		bound := min(1-1/float64(tc.n), capacity/useful)
		t.Logf("N=%d mean upload %.2fx: offload %.3f, bound %.3f (continuity %.3f)", tc.n, meanUp, r.Offload, bound, r.Continuity)
		require.LessOrEqual(t, fromPeers, capacity)
		require.LessOrEqual(t, r.Offload, bound+1e-9)
	}
}

// silentHost never plays: a protocol that reaches nobody.
type silentHost struct{ id wire.PeerID }

func (h silentHost) Hello() *wire.Hello                      { return &wire.Hello{Peer: h.id} }
func (silentHost) Admit(*wire.Hello, bool) error             { return nil }
func (silentHost) Connected(*wire.Hello, bool)               {}
func (silentHost) DialFailed(wire.PeerID)                    {}
func (silentHost) Disconnected(wire.PeerID)                  {}
func (silentHost) Receive(wire.PeerID, wire.Message)         {}
func (silentHost) Tick()                                     {}
func (silentHost) Close()                                    {}
func (silentHost) Stats() engine.Stats                       { return engine.Stats{} }
func (silentHost) Layers() int                               { return 1 }
func (silentHost) AddSegment(uint64, []byte, [][]byte) error { return nil }

// Peers that never play count with continuity 0 once they had time to
// start; the late joiner, without that time, is left out.
func TestPeersThatNeverPlayCountAsMissing(t *testing.T) {
	sc := Scenario{Seed: 1, Peers: 10, Duration: 60 * time.Second, Protocol: &Protocol{Name: "silent",
		NewServer: func(env engine.Env, _ float64) Source { return silentHost{ServerID} },
		NewPeer:   func(env engine.Env, id wire.PeerID, _ float64) Node { return silentHost{id} }}}
	sc.Events = []Event{{At: 50 * time.Second, Do: func(s *Swarm) { s.AddPeer(0) }}}
	r := Run(sc)
	require.Equal(t, 10, r.PeersMeasured)
	require.Equal(t, 10, r.NeverStarted)
	require.Equal(t, 0.0, r.Continuity)
	require.Equal(t, 0, r.PeersStarted)
}
