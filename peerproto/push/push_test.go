package push

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/wire"
)

func TestSubstreamSplitsSegmentsRoundRobin(t *testing.T) {
	for _, c := range []struct {
		seq     uint64
		k, want int
	}{{0, 4, 0}, {5, 4, 1}, {7, 4, 3}, {9, 1, 0}, {9, 0, 0}} {
		require.Equal(t, c.want, Substream(c.seq, c.k), "seq %d k %d", c.seq, c.k)
	}
}

func TestCostIsTheSubscribedLayersOverTheSubstreams(t *testing.T) {
	rates := []float64{60e3, 30e3, 30e3}
	require.InDelta(t, 15e3, Cost(rates, 1, 4), 1e-9)
	require.InDelta(t, 30e3, Cost(rates, 3, 4), 1e-9)
	require.InDelta(t, 120e3, Cost(rates, 9, 1), 1e-9, "layers past the stream's count cost nothing")
}

func TestAdmitGrantsEveryLayerWhenTheBaseFitsAndChargesWhatFits(t *testing.T) {
	costOf := func(n int) float64 { return float64(10 * n) }
	for _, c := range []struct {
		name            string
		ld              Load
		wanted          int
		granted, charge int
	}{
		{"room for all", Load{Capacity: 100, Used: 50}, 3, 3, 3},
		{"room for two: all granted, two charged", Load{Capacity: 100, Used: 75}, 3, 3, 2},
		{"room for the base: all granted, the base charged", Load{Capacity: 100, Used: 85}, 3, 3, 1},
		{"no room for the base: refused", Load{Capacity: 100, Used: 95}, 3, 0, 0},
		{"nothing wanted", Load{Capacity: 100}, 0, 0, 0},
		{"no cap: bounded by count", Load{Subs: MaxChildren - 1}, 3, 3, 3},
		{"no cap, count reached", Load{Subs: MaxChildren}, 3, 0, 0},
	} {
		g, ch := Admit(c.ld, c.wanted, costOf)
		require.Equal(t, c.granted, g, c.name)
		require.Equal(t, c.charge, ch, c.name)
	}
}

func TestChooseTakesTheNearestThenTheBestAndNeverALoop(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		name  string
		cands []Candidate
		mine  uint8
		want  int
	}{
		{"fewest hops", []Candidate{{Hops: 3, Score: 9}, {Hops: 1, Score: 1}, {Hops: 2, Score: 5}}, wire.NoHops, 1},
		{"best score among equals", []Candidate{{Hops: 2, Score: 1}, {Hops: 2, Score: 7}}, wire.NoHops, 1},
		{"excluded skipped", []Candidate{{Hops: 0, Excluded: true}, {Hops: 4}}, wire.NoHops, 1},
		{"no parent: none", []Candidate{{Hops: wire.NoHops}, {Hops: wire.NoHops}}, wire.NoHops, -1},
		{"too deep", []Candidate{{Hops: MaxHops - 1}}, wire.NoHops, -1},
		{"not at or below me (a loop)", []Candidate{{Hops: 3}, {Hops: 4}}, 3, -1},
		{"nobody", nil, wire.NoHops, -1},
	} {
		require.Equal(t, c.want, Choose(c.cands, c.mine, rng), c.name)
	}
}

func TestChooseBreaksTiesAtRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[int]bool{}
	cands := []Candidate{{Hops: 1, Score: 2}, {Hops: 1, Score: 2}, {Hops: 1, Score: 2}}
	for range 60 {
		seen[Choose(cands, wire.NoHops, rng)] = true
	}
	require.Len(t, seen, 3)
}

func TestHopsViaCountsOneMoreUpToTheLimit(t *testing.T) {
	require.Equal(t, uint8(1), HopsVia(0))
	require.Equal(t, uint8(wire.NoHops), HopsVia(wire.NoHops))
	require.Equal(t, uint8(wire.NoHops), HopsVia(MaxHops-1))
}

func TestLaggingParentsAreThoseWhosePushesComeTooLateToSpareARepair(t *testing.T) {
	limit := LagLimit(10*time.Second, 1500*time.Millisecond, 500*time.Millisecond, 4)
	require.Equal(t, uint64(17), limit, "8.5 s of 500 ms segments")
	require.Equal(t, uint64(12), LagLimit(5*time.Second, 1500*time.Millisecond, 500*time.Millisecond, 4), "at least three rounds of sub-streams")
	require.False(t, Lagging(100, true, 116, limit))
	require.True(t, Lagging(100, true, 117, limit))
	require.False(t, Lagging(0, false, 1000, limit), "a parent that never pushed is judged by age")
	require.False(t, Lagging(110, true, 100, limit))
}

func TestPreemptDropsTheWeakestChildOnlyForClearlyMoreUpload(t *testing.T) {
	for _, c := range []struct {
		name    string
		uploads []float64
		up      float64
		want    int
	}{
		{"no children", nil, 300, -1},
		{"equal uploads never swap", []float64{100, 100}, 100, -1},
		{"just short of the gap", []float64{100}, 149, -1},
		{"at the gap", []float64{100}, 150, 0},
		{"the weakest of several", []float64{150, 50, 100}, 300, 1},
		{"only those far enough below", []float64{250, 150}, 300, 1},
		{"the first of equal weakest", []float64{50, 50}, 300, 0},
	} {
		if got := Preempt(c.uploads, c.up); got != c.want {
			t.Errorf("%s: Preempt(%v, %v) = %d, want %d", c.name, c.uploads, c.up, got, c.want)
		}
	}
}

func TestAwaitedOnlyWhileTheParentPushedTheLayerLastRound(t *testing.T) {
	const k = 4
	for _, c := range []struct {
		newest, seq uint64
		want        bool
	}{
		{0, 10, false}, // never pushed the layer
		{7, 10, true},  // pushed segment 6, the round before 10 (6+4)
		{6, 10, false}, // newest pushed 5: a round was shed
		{11, 10, true}, // already past it (a late or repaired segment)
		{1, 4, true},   // pushed segment 0, the round before 4
	} {
		if got := Awaited(c.newest, c.seq, k); got != c.want {
			t.Errorf("Awaited(%d, %d, %d) = %v, want %v", c.newest, c.seq, k, got, c.want)
		}
	}
}

func TestReservesOnlyWhenTheCapacityCarriesTheWholeStream(t *testing.T) {
	for _, c := range []struct {
		capacity, rate float64
		want           bool
	}{
		{0, 125e3, false},    // no cap: bounded by count instead
		{96e3, 125e3, false}, // a 1.2x peer (80% of its upload)
		{125e3, 125e3, true}, // exactly once
		{300e3, 125e3, true}, // a 3x peer
		{150e3, 0, true},     // rate unknown yet
	} {
		require.Equal(t, c.want, Reserves(c.capacity, c.rate), "%+v", c)
	}
}
