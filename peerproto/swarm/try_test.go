package swarm

import (
	"testing"
	"time"
)

func TestTry(t *testing.T) {
	start := time.Now()
	r := Run(Scenario{Seed: 1})
	t.Logf("wall %v events %d CI %.4f p5 %.4f offload %.3f copies %.2f q %.3f overhead %.4f redund %.3f startup %v/%v lat %v/%v/%v measured %d started %d",
		time.Since(start), r.Events, r.Continuity, r.ContinuityP5, r.Offload, r.CopiesPerSegment, r.Quality, r.ControlOverhead, r.Redundancy,
		r.StartupP50, r.StartupP95, r.LatencyP50, r.LatencyP95, r.LatencyP99, r.PeersMeasured, r.PeersStarted)
	worst := r.Peers[0]
	for _, p := range r.Peers {
		if p.Continuity < worst.Continuity {
			worst = p
		}
	}
	t.Logf("worst %+v", worst.Continuity)
	st := worst.Stats
	t.Logf("worst stats timeouts %d busy %d served %d fromServer %d fromPeers %d layers %d", st.Timeouts, st.RejectedBusy, st.ServedChunks, st.UsefulFromServer, st.UsefulFromPeers, worst.FinalLayers)
}
