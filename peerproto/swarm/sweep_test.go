package swarm

import (
	"testing"
)

func TestDebugVariants(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		r := Run(Scenario{Seed: seed})
		var a, b, c, d, e, lateS, lateP uint64
		for _, p := range r.Peers {
			a += p.Stats.MissInFlightServer
			b += p.Stats.MissInFlightPeer
			c += p.Stats.MissNoHolder
			d += p.Stats.MissServerOnly
			e += p.Stats.MissNotRequested
			lateS += p.Stats.LateFromServer
			lateP += p.Stats.LateFromPeers
		}
		t.Logf("seed %d CI %.4f p5 %.3f offload %.3f copies %.2f q %.3f redund %.3f startup %v | miss inflightS %d inflightP %d noholder %d serveronly %d notreq %d | late S %d P %d", seed, r.Continuity, r.ContinuityP5, r.Offload, r.CopiesPerSegment, r.Quality, r.Redundancy, r.StartupP95, a, b, c, d, e, lateS, lateP)
	}
}
