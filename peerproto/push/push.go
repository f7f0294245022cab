// Package push is the push policy of a node: how the stream is split into
// sub-streams, which partner a peer subscribes to for each, what a parent
// admits, and when a parent is replaced. Fresh chunks travel by push along
// these subscriptions (New CoolStreaming's sub-streams: sub-stream k
// carries every segment whose number is k modulo the sub-stream count, so
// a child's sub-streams come from several parents); buffer-map pull
// repairs what push missed. The engine keeps the subscriptions and
// forwards chunks; this package decides. It is pure.
package push

import (
	"math/rand/v2"
	"time"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// Policy constants.
const (
	// DefaultSubstreams is the number of sub-streams a stream is split
	// into: enough parents per child that one failing parent loses a
	// quarter of the stream, few enough that a parent's sub-stream fans
	// out to several children.
	DefaultSubstreams = 4
	// MaxHops is the deepest a node may be on a sub-stream: a parent at
	// MaxHops-1 or deeper is not chosen (it also ends count-to-infinity
	// when a parent loss leaves a stale loop).
	MaxHops = 12
	// Share is the part of a peer's upload cap its children's
	// subscriptions may take (the rest serves pull repairs).
	Share = 0.8
	// ServerShare is the part of the server's upload cap its roots may
	// take (the rest answers deadline repairs from every peer).
	ServerShare = 0.7
	// MaxChildren bounds the subscriptions a node without an upload cap
	// admits (sub-stream subscriptions, not children).
	MaxChildren = 16
	// DefaultNewcomerBaseOnly is how long a newcomer whose download is not
	// measured yet subscribes to the base layer only (engine.Config).
	DefaultNewcomerBaseOnly = 10 * time.Second
)

// Substream returns the sub-stream of segment seq out of k.
func Substream(seq uint64, k int) int {
	if k <= 1 {
		return 0
	}
	return int(seq % uint64(k))
}

// Cost is the upload in bytes/s one subscription to a sub-stream takes in
// the layers below n: the stream's rate in those layers over k.
func Cost(layerRates []float64, n, k int) float64 {
	c := 0.0
	for l := 0; l < n && l < len(layerRates); l++ {
		c += layerRates[l]
	}
	return c / float64(max(k, 1))
}

// Load is a parent's view of its children when it decides on one more.
type Load struct {
	// Capacity is the upload the parent may spend on push in bytes/s
	// (0: unknown, bounded by MaxChildren instead).
	Capacity float64
	// Used is what the admitted subscriptions cost now; Subs counts them.
	Used float64
	Subs int
}

// Admit tells how many of the wanted layers a parent pushes to a new or
// changed subscription (granted; 0: refused) and how many of them count
// against its capacity (charged). A subscription is admitted when its
// base layer fits in what is left of the capacity; it is then granted
// every wanted layer, and charged the most that fit, lowest first. The
// layers beyond those are pushed best effort: a congested parent sheds
// them first (its queue is served lowest layer first, enhancement pieces
// wait while its uplink is half backed up, upload.EnhancementWaits, and a
// push queued longer than its TTL is dropped), so they cost the base
// nothing. costOf(n) is the subscription's cost in n layers; the
// subscription's own current cost is already out of Used.
//
// Measured in the simulator (TestSimQuick, seed 1): granting only the
// layers that fit (the rule before) kept the third layer from 99.6% of
// deadlines at N = 500 (quality 0.47); granting every layer and charging
// them all (fewer children per parent) raised quality to 0.68 but cost
// the homogeneous 1.2x swarm its base (0.99 -> 0.90); charging what fits
// keeps the base (0.998-1.000) and gives 0.56-0.59.
func Admit(ld Load, wanted int, costOf func(n int) float64) (granted, charged int) {
	if wanted <= 0 {
		return 0, 0
	}
	if ld.Capacity <= 0 {
		if ld.Subs >= MaxChildren {
			return 0, 0
		}
		return wanted, wanted
	}
	for n := wanted; n > 0; n-- {
		if ld.Used+costOf(n) <= ld.Capacity {
			return wanted, n
		}
	}
	return 0, 0
}

// PreemptGap is how much more upload a subscriber must have than a full
// parent's weakest child for the parent to drop that child and admit the
// subscriber (the dropped child finds another parent, often the
// newcomer): upload capacity moves toward the roots, as in the tree
// baseline's swaps, and the trees grow wider near the server. The
// simulator's upload classes are 2x apart, so 1.5 swaps across classes
// only. Measured in the simulator (TestSimQuick seed 1, with Awaited):
// coop single layer at N = 500 0.65 -> 0.77 base continuity (preempting
// in the subscriber's sub-stream only: 0.73), coop layered N = 1000
// unchanged (0.9997, quality 0.60); 2.5 (swapping 3x for 0.5x only):
// 0.71.
const PreemptGap = 1.5

// Preempt returns the index of the child a full parent drops to admit a
// subscriber whose upload is up: the one with the least upload, if the
// subscriber has at least PreemptGap times more; -1: none. uploads holds
// the upload of each of the parent's subscriptions' children.
func Preempt(uploads []float64, up float64) int {
	w := -1
	for i, u := range uploads {
		if u*PreemptGap > up {
			continue
		}
		if w < 0 || u < uploads[w] {
			w = i
		}
	}
	return w
}

// Awaited tells whether a child waits for its parent's push of an
// enhancement layer of segment seq rather than pulling it: only if the
// parent pushed a piece of that layer in the sub-stream's previous round
// (newest is 1 + the newest segment it pushed in the layer, 0: none; k
// the sub-stream count). A parent grants every layer but pushes the
// upper ones best effort (Admit), so one that ran out of upload sheds
// them, and a child waiting for them until they are urgent misses them.
// Measured in the simulator (TestSimQuick seed 1): quality 0.553 ->
// 0.601 at N = 1000 with 3.18 server copies per segment (3.15 before;
// never waiting for enhancement pushes gave 0.602 with 3.49); waiting
// on the same rule for the base layer too: 0.572.
func Awaited(newest, seq uint64, k int) bool {
	return newest > 0 && newest-1+uint64(max(k, 1)) >= seq
}

// Reserves tells whether a peer parent admits subscriptions by the cost
// of every layer of the stream, whatever the child asks for now (a
// newcomer asks for the base alone, and asks for more once it plays
// more): when its push capacity carries the whole stream at least once.
// Admitting by what was asked filled the parents with base-only
// newcomers in the join storm, and once they asked for every layer the
// upper ones were granted far beyond the parents' upload and shed, so
// the third layer never left the roots (TestSimQuick seed 1, coop
// layered N = 1000: quality 0.60 -> 0.86 with reserving, committed
// pushes first and the enhancement floor). A parent with less (a
// homogeneous 1.2x swarm's peers) admits by what was asked: reserving
// there leaves room for one child per sub-stream, chains instead of
// trees (base continuity 0.37).
func Reserves(capacity, streamRate float64) bool {
	return capacity > 0 && capacity >= streamRate
}

// Candidate is a partner considered as the parent of one sub-stream.
type Candidate struct {
	// Hops is the partner's advertised distance from the server on the
	// sub-stream (0: the server; wire.NoHops: none).
	Hops uint8
	// Score ranks partners of equal hops (higher first): what they
	// deliver and their upload.
	Score float64
	// Excluded marks a partner that refused or failed lately.
	Excluded bool
}

// Choose returns the index of the parent for a sub-stream, or -1: the
// nearest partner to the server (fewest hops, below MaxHops and below
// mine so that push never loops), then the best score, ties at random.
func Choose(cands []Candidate, mine uint8, rng *rand.Rand) int {
	best, ties := -1, 0
	for i, c := range cands {
		if c.Excluded || c.Hops == wire.NoHops || int(c.Hops) >= MaxHops-1 || c.Hops >= mine {
			continue
		}
		if best >= 0 {
			b := cands[best]
			if c.Hops > b.Hops || c.Hops == b.Hops && c.Score < b.Score {
				continue
			}
			if c.Hops == b.Hops && c.Score == b.Score {
				ties++
				if rng.IntN(ties+1) != 0 {
					continue
				}
			} else {
				ties = 0
			}
		}
		best = i
	}
	return best
}

// HopsVia is a child's hop count through a parent at parentHops.
func HopsVia(parentHops uint8) uint8 {
	if parentHops == wire.NoHops || int(parentHops)+1 >= MaxHops {
		return wire.NoHops
	}
	return parentHops + 1
}

// LagLimit is how many segments behind the live edge a parent's newest
// push may be: what still arrives before the child must repair (the
// playout delay less the repair slack), and never less than three rounds
// of the k sub-streams (a sub-stream's newest segment is up to k-1 behind
// the edge by construction). Measured in the simulator (TestSimQuick,
// 3 seeds, 5 s playout delay): a limit of 7 segments (3.5 s) replaced so
// many parents of deep trees that N = 1000 fell to 0.15-0.70 base
// continuity; 12 gave 0.99.
func LagLimit(playout, repair, segment time.Duration, k int) uint64 {
	n := 0
	if segment > 0 {
		n = int((playout - repair) / segment)
	}
	return uint64(max(n, 3*k))
}

// Lagging tells whether a parent that last pushed segment newest (ok:
// it pushed any) lags the live edge by limit segments or more: its
// pushes come too late to spare the child's repairs.
func Lagging(newest uint64, ok bool, edge, limit uint64) bool {
	if !ok {
		return false // judged by the engine from the subscription's age
	}
	return edge > newest && edge-newest >= limit
}
