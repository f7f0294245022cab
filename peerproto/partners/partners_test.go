package partners

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/wire"
)

func TestScoreWeighsDeliveryTakingAndRTT(t *testing.T) {
	for _, tc := range []struct {
		name       string
		recv, sent float64
		rtt        time.Duration
		want       float64
	}{
		{"delivery alone at zero RTT", 1000, 0, 0, 1000},
		{"what we feed counts half", 0, 1000, 0, 500},
		{"one second of RTT halves the score", 1000, 1000, time.Second, 750},
		{"an idle partner scores zero", 0, 0, 50 * time.Millisecond, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.InDelta(t, tc.want, Score(tc.recv, tc.sent, tc.rtt), 1e-9)
		})
	}
}

func TestCandidateScorePrefersUploadAndSmallRTT(t *testing.T) {
	near := wire.Candidate{UploadRate: 100_000, RTTMicros: 10_000}
	far := wire.Candidate{UploadRate: 100_000, RTTMicros: 200_000}
	slow := wire.Candidate{UploadRate: 10_000, RTTMicros: 10_000}
	require.Greater(t, CandidateScore(near), CandidateScore(far))
	require.Greater(t, CandidateScore(near), CandidateScore(slow))
	require.InDelta(t, 1.0/10, CandidateScore(wire.Candidate{}), 1e-12, "no upload, no RTT: (0+1)/(0+10)")
}

func TestEvictTheWorstOnlyWhenFullOldPoorAndReplaceable(t *testing.T) {
	old, young := MinAgeToEvict+time.Second, MinAgeToEvict-time.Second
	full := func(worstScore float64, worstAge time.Duration) []Member {
		return []Member{{ID: 2, Score: 100, Age: old}, {ID: 3, Score: 90, Age: old},
			{ID: 4, Score: worstScore, Age: worstAge}, {ID: 5, Score: 110, Age: old}}
	}
	for _, tc := range []struct {
		name       string
		members    []Member
		target     int
		candidates int
		evict      bool
	}{
		{"full, old, far under the median, a candidate: evicted", full(5, old), 4, 3, true},
		{"not full: kept", full(5, old), 5, 3, false},
		{"too young: kept", full(5, young), 4, 3, false},
		{"no candidate to replace it: kept", full(5, old), 4, 0, false},
		{"above a fifth of the median: kept", full(30, old), 4, 3, false},
		{"empty list", nil, 0, 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.evict, Evict(tc.members, tc.target, tc.candidates))
			for i := 1; len(tc.members) >= tc.target && i < len(tc.members); i++ {
				require.LessOrEqual(t, tc.members[i-1].Score, tc.members[i].Score, "sorted worst first")
			}
		})
	}
}

func TestWantNeverNegative(t *testing.T) {
	for _, tc := range []struct{ target, held, dialing, want int }{
		{6, 0, 0, 6}, {6, 4, 1, 1}, {6, 6, 0, 0}, {6, 5, 3, 0},
	} {
		require.Equal(t, tc.want, Want(tc.target, tc.held, tc.dialing), "%+v", tc)
	}
}

func TestRankIsDeterministicPerSeedAndFavoursStrongCandidates(t *testing.T) {
	cands := []wire.Candidate{
		{Peer: 2, UploadRate: 1_000, RTTMicros: 100_000},
		{Peer: 3, UploadRate: 1_000_000, RTTMicros: 5_000},
		{Peer: 4, UploadRate: 50_000, RTTMicros: 20_000},
	}
	a := Rank(cands, rand.New(rand.NewPCG(7, 9)))
	b := Rank(cands, rand.New(rand.NewPCG(7, 9)))
	require.Equal(t, a, b, "same seed, same order")
	require.ElementsMatch(t, []int{0, 1, 2}, a)
	// A candidate 1000x stronger outranks the weakest whatever the draw
	// (the random factor is within [0.5, 1.5)).
	require.Equal(t, 1, a[0])
	require.Equal(t, 0, a[2])
	require.Empty(t, Rank(nil, rand.New(rand.NewPCG(1, 1))))
}

type known struct {
	addr     string
	up       float64
	rtt      time.Duration
	partners int
}

func (k known) Addr() string       { return k.addr }
func (k known) Upload() float64    { return k.up }
func (k known) RTT() time.Duration { return k.rtt }
func (k known) Partners() int      { return k.partners }

func TestCandidatesRankUploadClosenessAndRoom(t *testing.T) {
	pool := map[wire.PeerID]known{
		2: {"h:2", 100_000, 30 * time.Millisecond, 2},
		3: {"h:3", 100_000, 530 * time.Millisecond, 2}, // far from the asker's RTT: 1/11 the score
		4: {"h:4", 10_000_000, 30 * time.Millisecond, 10},
		5: {"", 10_000_000, 30 * time.Millisecond, 2}, // not dialable
		6: {"h:6", 10_000_000, 30 * time.Millisecond, 2},
	}
	ids := []wire.PeerID{2, 3, 4, 5, 6}
	get := func(id wire.PeerID) Known { return pool[id] }
	q := func(asker wire.PeerID, n int) Query {
		return Query{Asker: asker, AskerRTT: 30 * time.Millisecond, N: n, MaxPartners: 10, Rand: rand.New(rand.NewPCG(3, 4))}
	}
	peersOf := func(cs []wire.Candidate) []wire.PeerID {
		var out []wire.PeerID
		for _, c := range cs {
			out = append(out, c.Peer)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		asker wire.PeerID
		n     int
		want  []wire.PeerID
	}{
		{"strong, near and with room first; a full one (4) scores a hundredth; a far one (3) last", 2, 16, []wire.PeerID{6, 4, 3}},
		{"the asker is never its own candidate", 6, 16, []wire.PeerID{4, 2, 3}},
		{"bounded by N", 2, 1, []wire.PeerID{6}},
		{"bounded by wire.MaxCandidates", 2, 1 << 20, []wire.PeerID{6, 4, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := Candidates(ids, get, q(tc.asker, tc.n))
			require.Equal(t, tc.want, peersOf(cs))
			for _, c := range cs {
				require.Equal(t, pool[c.Peer].addr, c.Addr)
				require.Equal(t, uint64(pool[c.Peer].up), c.UploadRate)
			}
		})
	}
}

type player struct {
	known
	playing bool
}

func (p player) Playing() bool { return p.playing }

func TestCandidatesRankAPeerThatDoesNotPlayYetLower(t *testing.T) {
	// Peer 2 has twice the upload of peer 3 but does not play yet (a
	// newcomer): 3 comes first, whatever the random factor (at most 3x).
	pool := map[wire.PeerID]Known{
		2: player{known{"h:2", 200_000, 30 * time.Millisecond, 2}, false},
		3: player{known{"h:3", 100_000, 30 * time.Millisecond, 2}, true},
		4: known{"h:4", 100_000, 30 * time.Millisecond, 2}, // not a Player: counts as playing
	}
	for seed := uint64(1); seed <= 20; seed++ {
		cs := Candidates([]wire.PeerID{2, 3, 4}, func(id wire.PeerID) Known { return pool[id] },
			Query{Asker: 1, AskerRTT: 30 * time.Millisecond, N: 3, MaxPartners: 10, Rand: rand.New(rand.NewPCG(seed, 1))})
		require.Len(t, cs, 3)
		require.Equal(t, wire.PeerID(2), cs[2].Peer, "seed %d: the newcomer ranks last", seed)
	}
}

// TestCandidatesOfKeepsTheBestAsAFullSortWould: the streaming top-N
// names the same peers in the same order as ranking every peer and
// cutting the list, and draws the same random numbers.
func TestCandidatesOfKeepsTheBestAsAFullSortWould(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for round := range 50 {
		pool := map[wire.PeerID]Known{}
		var ids []wire.PeerID
		for id := wire.PeerID(1); id <= wire.PeerID(1+rng.IntN(300)); id++ {
			addr := "10.0.0.1:1"
			if rng.IntN(10) == 0 {
				addr = "" // takes no inbound connections
			}
			pool[id] = stubKnown{addr: addr, up: float64(rng.IntN(4) * 100000), rtt: time.Duration(rng.IntN(200)) * time.Millisecond,
				partners: rng.IntN(12), playing: rng.IntN(4) != 0}
			ids = append(ids, id)
		}
		for _, n := range []int{0, 1, 5, 16, wire.MaxCandidates, 1000} {
			q := Query{Asker: wire.PeerID(1 + rng.IntN(len(ids))), AskerRTT: 40 * time.Millisecond, N: n, MaxPartners: 10}
			q.Rand = rand.New(rand.NewPCG(uint64(round), uint64(n)))
			got := Candidates(ids, func(id wire.PeerID) Known { return pool[id] }, q)
			after := q.Rand.Uint64()
			q.Rand = rand.New(rand.NewPCG(uint64(round), uint64(n)))
			want := rankAll(ids, pool, q)
			require.Equal(t, want, got, "round %d, n %d", round, n)
			require.Equal(t, after, q.Rand.Uint64(), "the same draws, one per eligible peer")
		}
	}
}

// rankAll is the reference: score every eligible peer, sort, cut.
func rankAll(ids []wire.PeerID, pool map[wire.PeerID]Known, q Query) []wire.Candidate {
	type scored struct {
		c wire.Candidate
		s float64
	}
	var all []scored
	for _, id := range ids {
		p := pool[id]
		if id == q.Asker || p.Addr() == "" {
			continue
		}
		d := math.Abs((p.RTT() - q.AskerRTT).Seconds())
		s := (p.Upload() + 1) / (1 + d*20) * (0.5 + q.Rand.Float64())
		if !p.(Player).Playing() {
			s *= notPlayingFactor
		}
		if p.Partners() >= q.MaxPartners {
			s /= 100
		}
		all = append(all, scored{wire.Candidate{Peer: id, Addr: p.Addr(), UploadRate: uint64(p.Upload()), RTTMicros: uint32(p.RTT() / time.Microsecond)}, s})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].s > all[j].s })
	out := []wire.Candidate{}
	for i := 0; i < len(all) && i < min(q.N, wire.MaxCandidates); i++ {
		out = append(out, all[i].c)
	}
	return out
}

type stubKnown struct {
	addr     string
	up       float64
	rtt      time.Duration
	partners int
	playing  bool
}

func (s stubKnown) Addr() string       { return s.addr }
func (s stubKnown) Upload() float64    { return s.up }
func (s stubKnown) RTT() time.Duration { return s.rtt }
func (s stubKnown) Partners() int      { return s.partners }
func (s stubKnown) Playing() bool      { return s.playing }
