// Package partners is the partner-management policy of a peer: how a
// connected partner is scored, which partner a full list evicts, how many
// partners to refill and in what order candidates are dialled. The server
// partner is protected: it is never a Member here (the engine keeps it
// apart), so it is never scored, evicted or counted against the target.
// The package is pure: the engine measures, this decides.
package partners

import (
	"math/rand/v2"
	"sort"
	"time"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// Policy constants.
const (
	// DefaultTarget is the target number of peer partners M (the one
	// home of this default on the P2P side: engine.Config.Partners and
	// coop-peer's --partners; the origin's plugin.partners is
	// pluginapi.DefaultPartners, pinned equal by
	// integration/defaults_test.go).
	//
	// A peer looks for the parent of each push sub-stream among its
	// partners only; when the push slots of a swarm about equal its demand
	// (a single-layer stream, whose every subscription carries a quarter of
	// the whole stream), six partners were often all full and 9% of the
	// sub-streams had no parent. Measured in the simulator (TestSimQuick,
	// seeds 1-2, M = 6 -> 10): coop single layer 0.832 -> 0.936 at N = 500
	// and 0.72 -> 0.83 at N = 1000, coop layered N = 1000 base 0.9987 ->
	// 0.9999 and quality 0.844 -> 0.914, homogeneous 1.2x 0.989 -> 0.995;
	// control overhead 1.5% -> 1.9% and about twice the simulator's CPU.
	// M = 8: 0.916 / 0.741; M = 14: 0.954 / 0.854 (more control).
	DefaultTarget = 10
	// MinAgeToEvict is how long a partner is kept before it may be
	// evicted for under-delivering.
	MinAgeToEvict = 20 * time.Second
	// EvictBelow evicts the worst partner when its score is under this
	// share of the median partner's.
	EvictBelow = 0.2
	// DialTimeout forgets a dial that has not connected after this long.
	DialTimeout = 5 * time.Second
)

// Score ranks a connected partner: what it delivers to us (recv, bytes/s),
// half of what it takes from us (sent: a partner we feed is useful to the
// swarm), over 1 + its RTT in seconds.
func Score(recv, sent float64, rtt time.Duration) float64 {
	s := recv + 0.5*sent
	return s / (1 + rtt.Seconds())
}

// CandidateScore ranks a candidate for dialling: its upload over its RTT
// (in ms, plus 10).
func CandidateScore(c wire.Candidate) float64 {
	up := float64(c.UploadRate) + 1
	rtt := float64(c.RTTMicros)/1000 + 10 // ms
	return up / rtt
}

// Member is a peer partner as the eviction policy sees it.
type Member struct {
	ID wire.PeerID
	// Score is the partner's Score now.
	Score float64
	// Age is how long it has been a partner.
	Age time.Duration
}

// Evict sorts a full list of members by score, worst first (in place, so
// the caller sees the same order; a list under target is left as it is),
// and tells whether the worst is to be evicted: the
// list is full (at least target members), the worst has been a partner
// longer than MinAgeToEvict, scores under EvictBelow of the median and
// there is a candidate to replace it.
func Evict(members []Member, target, candidates int) bool {
	if len(members) < target || len(members) == 0 {
		return false
	}
	sort.Slice(members, func(i, j int) bool { return members[i].Score < members[j].Score })
	worst, median := members[0], members[len(members)/2].Score
	return worst.Age > MinAgeToEvict && worst.Score < EvictBelow*median && candidates > 0
}

// Want is how many partners to dial: the target minus the peer partners
// held and the dials under way (never negative).
func Want(target, held, dialing int) int { return max(target-held-dialing, 0) }

// Rank orders candidates for dialling: high upload and small RTT first,
// each score times a random factor in [0.5, 1.5) so the mesh does not
// collapse onto the same few peers. cands should be in a deterministic
// order (the engine sorts them by ID); Rank draws one number from rnd per
// candidate, in that order, and returns indexes into cands.
func Rank(cands []wire.Candidate, rnd *rand.Rand) []int {
	keys := make([]float64, len(cands))
	for i, c := range cands {
		keys[i] = CandidateScore(c) * (0.5 + rnd.Float64())
	}
	idx := make([]int, len(cands))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return keys[idx[a]] > keys[idx[b]] })
	return idx
}

// Known is a peer a candidate list may name, as its server or a partner
// sees it. Upload is read only when the peer is eligible (it may touch a
// rate meter).
type Known interface {
	// Addr is where partners reach it ("": it takes no inbound
	// connections and is never a candidate).
	Addr() string
	// Upload is its upload in bytes/s: reported, else declared, else
	// measured.
	Upload() float64
	// RTT is its smoothed round-trip time to the one who ranks.
	RTT() time.Duration
	// Partners is how many partners it reported.
	Partners() int
}

// Query is a request for candidates.
type Query struct {
	// Asker is the peer asking; AskerRTT its RTT to the one who ranks.
	Asker    wire.PeerID
	AskerRTT time.Duration
	// N is how many candidates to return (at most wire.MaxCandidates).
	N int
	// MaxPartners: a peer reporting this many partners will refuse, and
	// ranks last.
	MaxPartners int
	// Rand draws the random factor of each score.
	Rand *rand.Rand
}

// Player is a Known that also tells whether it plays the stream well
// (Playing). A Known that is not a Player counts as playing (the Redis
// tracker's members from other nodes).
type Player interface {
	Playing() bool
}

// notPlayingFactor scales the rank of a candidate that does not play yet
// (a newcomer, or a peer in trouble): it has little to give. In the
// simulator's flash crowd (100 peers, then 900 within 10 s; TestSimQuick
// seed 1) newcomers handed to newcomers played 0.898 of the base; ranked
// this way, 0.962, with layered N = 500/1000 unchanged (0.9998/0.9997).
const notPlayingFactor = 0.1

// Candidates ranks the known peers for an asker: high upload and an RTT
// close to the asker's (a proxy for nearby), times a random factor in
// [0.5, 1.5); a peer that does not play yet (Player) ranks ten times
// lower, and one whose partner list is full ranks last. ids must be
// sorted (the draws from q.Rand follow their order); the asker and peers
// without an address are skipped.
func Candidates(ids []wire.PeerID, known func(wire.PeerID) Known, q Query) []wire.Candidate {
	return CandidatesOf(len(ids), func(i int) (wire.PeerID, Known) { return ids[i], known(ids[i]) }, q)
}

// CandidatesOf is Candidates over count peers read by index: peer(i) is
// the i-th in ID order (a nil Known is skipped without a draw). It keeps
// only the best q.N as it goes, so a server with N peers ranks them in
// O(N) per request, not O(N log N) (the simulator's 10 000-peer join
// storm spent half its time sorting whole swarms for 16 names).
func CandidatesOf(count int, peer func(i int) (wire.PeerID, Known), q Query) []wire.Candidate {
	n := min(q.N, wire.MaxCandidates)
	type scored struct {
		c wire.Candidate
		s float64
	}
	top := make([]scored, 0, max(n, 0)) // best first
	for i := range count {
		id, p := peer(i)
		if p == nil || id == q.Asker || p.Addr() == "" {
			continue
		}
		up := p.Upload()
		rtt := p.RTT()
		d := (rtt - q.AskerRTT).Seconds()
		if d < 0 {
			d = -d
		}
		score := (up + 1) / (1 + d*20) * (0.5 + q.Rand.Float64())
		if pl, ok := p.(Player); ok && !pl.Playing() {
			score *= notPlayingFactor
		}
		if p.Partners() >= q.MaxPartners {
			score /= 100
		}
		if len(top) == n && (n == 0 || score <= top[n-1].s) {
			continue
		}
		at := sort.Search(len(top), func(j int) bool { return top[j].s < score })
		if len(top) < n {
			top = append(top, scored{})
		}
		copy(top[at+1:], top[at:len(top)-1])
		top[at] = scored{wire.Candidate{Peer: id, Addr: p.Addr(), UploadRate: uint64(up), RTTMicros: uint32(rtt / time.Microsecond)}, score}
	}
	out := make([]wire.Candidate, len(top))
	for i, t := range top {
		out[i] = t.c
	}
	return out
}
