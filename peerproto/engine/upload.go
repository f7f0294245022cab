package engine

import (
	"slices"
	"sort"
	"time"

	"github.com/coopstreaming/coop/peerproto/upload"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// This file is upload control: admission of requests into the queue,
// its order (seeds, urgent fallbacks, newcomers, base layer, contribution)
// and serving it within the upload cap and the transport's backlog.

type servReq struct {
	from  wire.PeerID
	seq   uint64
	layer int
	flags uint8
	at    time.Time
	push  bool // pushed to a child, not a request
	// committed: a push in a layer the child's subscription is charged
	// for (upload.Queued.Committed).
	committed bool
	// piece is the piece pushed (-1: every piece of the chunk, as a
	// request is answered).
	piece int
	// skip are the pieces the requester holds already (not sent).
	skip uint64
}

// bytes is what serving r sends (0 when the segment is not held).
func (r servReq) bytes(s *seg) int {
	if s == nil || s.man == nil || r.layer >= s.man.Layers() {
		return 0
	}
	if r.piece >= 0 {
		return s.man.PieceLen(r.layer, r.piece)
	}
	n := 0
	for i := range s.man.Pieces(r.layer) {
		if r.skip&(1<<i) == 0 {
			n += s.man.PieceLen(r.layer, i)
		}
	}
	return n
}

// held tells whether the segment holds what r sends.
func (r servReq) held(s *seg) bool {
	if s == nil {
		return false
	}
	if r.piece >= 0 {
		_, ok := s.piece(r.layer, r.piece)
		return ok
	}
	return r.layer < len(s.chunks) && s.chunks[r.layer] != nil
}

func (e *Engine) onRequest(p *partner, m *wire.Request, now time.Time) {
	s := e.segs[m.Seq]
	if s == nil || int(m.Layer) >= len(s.chunks) || s.chunks[m.Layer] == nil {
		e.send(p.id, &wire.Reject{Seq: m.Seq, Layer: m.Layer, Reason: wire.RejectNotFound})
		return
	}
	// Layer-aware: the queue is served lower layers first, so a request
	// waits only behind those of its layer and below, and only those count
	// against the queue's bounds (enhancement requests never get a base
	// request refused).
	perPeer, queued, queuedLen := 0, 0, 0
	for _, r := range e.queue {
		if r.from == p.id {
			perPeer++
		}
		if r.layer > int(m.Layer) {
			continue
		}
		queuedLen++
		queued += r.bytes(e.segs[r.seq])
	}
	admit := upload.Admit(upload.Request{
		Server: e.IsServer(), UploadCap: e.cfg.UploadCap, ServerQueue: e.cfg.ServerQueue,
		QueueLen: queuedLen, QueuedBytes: queued, PerPartner: perPeer, ChunkSize: len(s.chunks[m.Layer]),
		Seed: e.seeds[p.id], Urgent: m.Flags&wire.RequestUrgent != 0, Newcomer: now.Sub(p.since) < upload.NewcomerAge,
	})
	if !admit {
		e.stats.RejectedBusy++
		e.send(p.id, &wire.Reject{Seq: m.Seq, Layer: m.Layer, Reason: wire.RejectBusy})
		return
	}
	e.queue = append(e.queue, servReq{from: p.id, seq: m.Seq, layer: int(m.Layer), flags: m.Flags, at: now, piece: -1, skip: m.Held})
	e.serve(now)
}

// serve answers queued requests within the upload cap and the transport's
// backlog: base layer first, then partners that contribute most, with
// newcomers treated as contributors (optimistic slots); the base layer is
// never starved by enhancement layers.
func (e *Engine) serve(now time.Time) {
	// Expire stale requests: the requester has timed out by now.
	e.queue = slices.DeleteFunc(e.queue, func(r servReq) bool {
		if r.push {
			if now.Sub(r.at) > pushTTL {
				e.stats.PushesDropped++
				return true
			}
			return false
		}
		if now.Sub(r.at) > upload.RequestTTL {
			e.send(r.from, &wire.Reject{Seq: r.seq, Layer: uint8(r.layer), Reason: wire.RejectBusy})
			return true
		}
		return false
	})
	if len(e.queue) == 0 {
		return
	}
	order := upload.Order{
		Server:   e.IsServer(),
		Seed:     func(id wire.PeerID) bool { return e.seeds[id] },
		Newcomer: func(id wire.PeerID) bool { return e.isNew(id, now) },
		Score: func(id wire.PeerID) float64 {
			p := e.partners[id]
			if p == nil {
				return 0
			}
			return upload.Contribution(p.recv.Rate(now), now.Sub(p.since), e.IsServer(), p.hello.UploadCap)
		},
	}
	key := func(r servReq) upload.Queued {
		return upload.Queued{From: r.from, Layer: r.layer, Urgent: r.flags&wire.RequestUrgent != 0, Push: r.push, Committed: r.committed}
	}
	sort.SliceStable(e.queue, func(i, j int) bool { return order.Less(key(e.queue[i]), key(e.queue[j])) })
	// With per-connection backlogs a partner whose queue is full is
	// skipped (its requests wait or expire) and the others are served.
	perConn, _ := e.env.(ConnBacklog)
	kept, stop := e.queue[:0], false
	for _, r := range e.queue {
		if stop {
			kept = append(kept, r)
			continue
		}
		// What the transport holds ahead of r: its connection's queue
		// where the transport keeps one per connection (a stalled
		// receiver holds back only its own pieces), else the node's.
		var backlog int
		if perConn != nil {
			backlog = perConn.Backlog(r.from)
		} else if backlog = e.env.UploadBacklog(); backlog >= e.cfg.MaxBacklog {
			stop = true
			kept = append(kept, r)
			continue
		}
		if upload.EnhancementWaits(r.layer, r.committed, backlog, e.cfg.MaxBacklog) {
			kept = append(kept, r)
			continue
		}
		if !r.push && e.repairWaits(r.from) {
			kept = append(kept, r)
			continue
		}
		if perConn != nil && backlog >= e.cfg.MaxBacklog {
			e.stats.SkippedBacklog++
			kept = append(kept, r)
			continue
		}
		s := e.segs[r.seq]
		q := e.partners[r.from]
		if q == nil || r.push && !r.held(s) {
			continue
		}
		if r.push && q.bm != nil && q.bm.Has(r.seq, r.layer) {
			e.stats.PushesSkipped++ // the child announced it already: pulled elsewhere
			continue
		}
		if !r.held(s) || s.man == nil {
			e.send(r.from, &wire.Reject{Seq: r.seq, Layer: uint8(r.layer), Reason: wire.RejectNotFound})
			continue
		}
		n := r.bytes(s)
		if e.limiter != nil && !e.limiter.AllowN(now, n) {
			stop = true
			kept = append(kept, r)
			continue
		}
		from, to := 0, s.man.Pieces(r.layer)
		if r.piece >= 0 {
			from, to = r.piece, r.piece+1
		}
		e.sendPieces(q, r.seq, r.layer, s, from, to, r.skip, r.flags&wire.RequestManifest != 0, r.push, now)
		e.stats.ServedChunks++
	}
	e.queue = kept
}

// repairWaits tells whether the server holds back a request of a peer
// that is not one of its seeds (a repair of what partners did not deliver)
// because its uplink already has more than repairBacklog of its upload
// queued: a seed's fresh chunk, which feeds everyone else, then never waits
// behind repairs on the link. The request stays queued (and expires as
// any other).
func (e *Engine) repairWaits(from wire.PeerID) bool {
	return e.IsServer() && e.cfg.UploadCap > 0 && !e.seeds[from] &&
		float64(e.env.UploadBacklog()) >= repairBacklog.Seconds()*e.cfg.UploadCap
}

func (e *Engine) isNew(id wire.PeerID, now time.Time) bool {
	p := e.partners[id]
	return p != nil && now.Sub(p.since) < upload.NewcomerAge
}
