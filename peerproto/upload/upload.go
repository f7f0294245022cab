// Package upload is the upload-control policy of a node: which requests
// enter its queue (admission), in what order the queue is served
// (ordering, with contribution-weighted and optimistic slots) and the
// limits around them. The engine keeps the queue, the upload cap's token
// bucket and the transport's backlog; this package decides. It is pure.
package upload

import (
	"time"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// Policy constants.
const (
	// MaxQueue bounds a peer's queue of requests.
	MaxQueue = 32
	// MaxPerPartner bounds the requests of one partner in the queue.
	MaxPerPartner = 8
	// NewcomerAge: a partner this young is a newcomer (the server admits
	// and serves its first segments before others: its startup delay).
	NewcomerAge = 5 * time.Second
	// OptimisticAge: a partner this young gets an optimistic slot (scored
	// as a contributor before it could contribute).
	OptimisticAge = 10 * time.Second
	// OptimisticBonus is the optimistic slot's score, in bytes/s.
	OptimisticBonus = 1 << 20
	// RequestTTL expires a queued request the requester has timed out on.
	RequestTTL = 4 * time.Second
)

// Request is one request as admission sees it.
type Request struct {
	// Server tells whether this node is the server partner.
	Server bool
	// UploadCap is the node's upload cap in bytes/s (0: none).
	UploadCap float64
	// ServerQueue bounds the server's queue when it has no cap.
	ServerQueue int
	// QueueLen and QueuedBytes describe the queue now; PerPartner counts
	// the requester's requests in it.
	QueueLen, QueuedBytes, PerPartner int
	// ChunkSize is the size of the chunk asked for.
	ChunkSize int
	// Seed: the requester is one of the server's seeds. Urgent: the
	// request is flagged urgent (a fallback that keeps a peer playing).
	// Newcomer: the requester joined less than NewcomerAge ago.
	Seed, Urgent, Newcomer bool
}

// Admit tells whether a request enters the queue (false: answer Busy).
// A peer refuses past MaxQueue requests or more than a second of upload
// queued (the requester goes elsewhere). The server keeps its queue short
// — half a second of upload, or ServerQueue requests without a cap — so a
// fallback is served in time or refused at once; it never refuses its
// seeds (they feed everyone else), and admits urgent fallbacks and
// newcomers' first segments while less than a second is queued. Nobody
// holds more than MaxPerPartner requests of one partner.
func Admit(r Request) bool {
	full := r.QueueLen >= MaxQueue
	if !r.Server && r.UploadCap > 0 && float64(r.QueuedBytes+r.ChunkSize) > r.UploadCap {
		full = true
	}
	if r.Server {
		full = r.QueueLen >= r.ServerQueue
		if r.UploadCap > 0 {
			full = float64(r.QueuedBytes+r.ChunkSize) > r.UploadCap/2
		}
		if r.Seed {
			full = false
		} else if r.Urgent && float64(r.QueuedBytes) < r.UploadCap {
			full = false
		} else if r.Newcomer && float64(r.QueuedBytes) < r.UploadCap {
			full = false
		}
	}
	return !full && r.PerPartner < MaxPerPartner
}

// Contribution scores a requester for the queue order: what it delivered
// to us lately (recv, bytes/s), plus OptimisticBonus while it is younger
// than OptimisticAge. The server instead ranks by the upload a peer
// declared (declared): it seeds high-upload peers first.
func Contribution(recv float64, age time.Duration, server bool, declared uint64) float64 {
	s := recv
	if age < OptimisticAge {
		s += OptimisticBonus
	}
	if server {
		s = float64(declared)
	}
	return s
}

// Queued is a queued request as the order sees it.
type Queued struct {
	From   wire.PeerID
	Layer  int
	Urgent bool
	// Push: a fresh chunk pushed to a child (not a request).
	Push bool
	// Committed: a push in a layer the parent charged the child's
	// subscription for (push.Admit), not one granted best effort.
	Committed bool
}

// Order is the queue order. Its functions are called lazily, only when
// the keys before them tie.
type Order struct {
	// Server tells whether this node is the server partner.
	Server bool
	// Seed tells whether a requester is one of the server's seeds.
	Seed func(wire.PeerID) bool
	// Newcomer tells whether a requester joined less than NewcomerAge ago.
	Newcomer func(wire.PeerID) bool
	// Score is a requester's Contribution.
	Score func(wire.PeerID) float64
}

// Less orders the queue: the server's seeds first, then (at the server)
// urgent fallbacks and newcomers, then lower layers (the base is never
// starved by enhancement layers), then higher contribution. At a peer,
// above the base layer, committed pushes go before anything else: an
// enhancement layer enters the swarm only through the few roots the
// server feeds, and with pulls of the layer below served first (as
// before) the roots never forwarded the third layer at all — in the
// simulator (TestSimQuick seed 1, coop layered N = 1000) 0 of the 1 259
// layer-2 pushes queued at peers were sent, and with this rule (and the
// admission by the whole stream, push.Reserves) quality rose from 0.68
// to 0.86.
func (o Order) Less(a, b Queued) bool {
	if !o.Server && a.Layer > 0 && b.Layer > 0 && a.Committed != b.Committed {
		return a.Committed
	}
	return o.less(a, b)
}

func (o Order) less(a, b Queued) bool {
	if o.Server && a.Push != b.Push && (a.Push && a.Layer == 0 || b.Push && b.Layer == 0) {
		return a.Push // the server's base-layer pushes feed the roots of every sub-stream tree
	}
	if sa, sb := o.Seed(a.From), o.Seed(b.From); sa != sb {
		return sa
	}
	if o.Server {
		if a.Urgent != b.Urgent {
			return a.Urgent
		}
		if na, nb := o.Newcomer(a.From), o.Newcomer(b.From); na != nb {
			return na
		}
	}
	if a.Layer != b.Layer {
		return a.Layer < b.Layer
	}
	if a.Push != b.Push {
		return a.Push // the fresh edge feeds a child's subtree
	}
	return o.Score(a.From) > o.Score(b.From)
}

// EnhancementFloor is the backlog below which a committed enhancement push
// never waits (EnhancementWaits): two 16 KiB pieces. Half of a backlog bound of
// 0.1 s of upload is less than one piece on a link of 1.5 Mbit/s, so a
// single base piece on the wire held every enhancement piece back, and
// the parents' enhancement pushes expired in their queues: measured in
// the simulator (TestSimQuick seed 1, coop layered N = 1000, with
// push.Reserves and committed pushes first) quality 0.73 without the
// floor, 0.86 with it on every enhancement piece, base continuity 0.999
// both; restricted to committed pushes (EnhancementWaits) 0.844.
const EnhancementFloor = 32 << 10

// EnhancementWaits tells whether a piece of an enhancement layer (layer >
// 0) waits in the queue instead of going onto the transport: while the
// bytes already queued there (backlog) reach half of maxBacklog, and (a
// committed push: one the parent is charged for) EnhancementFloor. The
// floor is for committed pushes only: on every enhancement piece it cost
// a peer whose download carries only the base its base continuity
// (TestCappedPeer: 0.87 median of 3 seeds against at least 0.99). The
// engine's queue is served lowest layer first, but what the transport
// holds leaves first come first served, so an enhancement piece handed
// over ahead of a base piece that arrives a moment later delays it; with
// half of the backlog kept for the base layer, enhancement pushes admitted
// beyond a parent's capacity (push.Admit) are shed before they delay the
// base. Measured in the simulator (TestSimQuick, seed 1): with the rule,
// coop layered N = 1000 plays 0.999 of the base instead of 0.992.
func EnhancementWaits(layer int, committed bool, backlog, maxBacklog int) bool {
	limit := maxBacklog / 2
	if committed {
		limit = max(limit, EnhancementFloor)
	}
	return layer > 0 && backlog >= limit
}
