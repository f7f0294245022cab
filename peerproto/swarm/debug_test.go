package swarm

import (
	"github.com/coopstreaming/coop/peerproto/engine"
	"sort"
	"testing"
	"time"
)

func TestDebugMany(t *testing.T) {
	s := New(Scenario{Seed: 1})
	r := s.Run()
	n := 0
	for _, p := range r.Peers {
		if p.Continuity < 0.5 && n < 3 {
			n++
			t.Logf("peer %d up %.1f CI %.3f startup %v %s", p.ID, p.UploadFactor, p.Continuity, p.StartupDelay, s.Net.Node(p.ID).Engine.DebugString())
		}
	}
	srv := s.Server.Engine.Stats()
	t.Logf("server served %d busy %d mediaOut %d", srv.ServedChunks, srv.RejectedBusy, srv.MediaBytesOut)
	_ = time.Second
}

func TestDebugSweep(t *testing.T) {
	for _, pd := range []time.Duration{3 * time.Second, 5 * time.Second, 8 * time.Second} {
		r := Run(Scenario{Seed: 1, Configure: func(c *engine.Config) { c.PlayoutDelay = pd }})
		var served, timeouts, busy, dup, late uint64
		for _, p := range r.Peers {
			served += p.Stats.ServedChunks
			timeouts += p.Stats.Timeouts
			busy += p.Stats.RejectedBusy
			dup += p.Stats.DuplicateBytes
			late += p.Stats.LateBytes
		}
		t.Logf("pd %v CI %.4f p5 %.3f offload %.3f copies %.2f q %.3f redund %.3f startup %v lat %v | served %d timeouts %d busy %d dup %d late %d",
			pd, r.Continuity, r.ContinuityP5, r.Offload, r.CopiesPerSegment, r.Quality, r.Redundancy, r.StartupP95, r.LatencyP95, served, timeouts, busy, dup, late)
	}
}

func TestDebugTimeline(t *testing.T) {
	s := New(Scenario{Seed: 1})
	start := s.Net.Now()
	for i := 0; i < 100; i++ {
		at := start.Add(2*time.Second + time.Duration(float64(5*time.Second)*float64(i)/100))
		s.Net.At(at, func() { s.AddPeer(0) })
	}
	for sec := 8; sec <= 14; sec += 2 {
		s.Net.Run(start.Add(time.Duration(sec) * time.Second))
		e := s.Net.Node(50).Engine
		st := e.Stats()
		t.Logf("t=%ds late %d dup %d served %d timeouts %d fromS %d fromP %d\n%s", sec, st.LateBytes, st.DuplicateBytes, st.ServedChunks, st.Timeouts, st.UsefulFromServer, st.UsefulFromPeers, e.DebugString())
	}
}

func TestDebugSeeds(t *testing.T) {
	s := New(Scenario{Seed: 1, Duration: 20 * time.Second})
	r := s.Run()
	sort.Slice(r.Peers, func(i, j int) bool {
		return r.Peers[i].Stats.UsefulFromServer+r.Peers[i].Stats.LateBytes > r.Peers[j].Stats.UsefulFromServer+r.Peers[j].Stats.LateBytes
	})
	for _, p := range r.Peers[:6] {
		st := p.Stats
		t.Logf("peer %d up %.1f fromS %d fromP %d late %d served %d CI %.2f\n%s", p.ID, p.UploadFactor, st.UsefulFromServer, st.UsefulFromPeers, st.LateBytes, st.ServedChunks, p.Continuity, s.Net.Node(p.ID).Engine.DebugString())
	}
}
