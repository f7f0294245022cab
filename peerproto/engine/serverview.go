package engine

import "time"

// This file is the server partner as a peer sees it: a peer holds no
// buffer map from the server but marks what the server holds — every
// segment a partner announced (impliedAtServer) and every segment the
// playback clock says has reached it (extrapolateServer) — and backs off
// the server after a busy refusal (busyBackoff), so the server's control
// toward each peer stays O(1) per second.

// impliedAtServer records that the server holds every layer of segment
// seq because a partner announced it (everything a peer holds came from
// the server, which keeps its window): the server need not announce each
// segment to each peer. The playback clock is not moved (a partner's
// announcement is later than the server's); the live edge is, by at most
// impliedAhead past what the server said, so a lying partner cannot send
// requests far ahead.
func (e *Engine) impliedAtServer(seq uint64, now time.Time) {
	srv := e.partners[e.serverID]
	if srv == nil || srv.bm == nil || !e.haveEdge || seq > e.liveEdge+impliedAhead || seq < srv.bm.Base() {
		return
	}
	if srv.bm.Has(seq, 0) {
		return // (false past the map's window: serverHolds moves it)
	}
	e.serverHolds(srv, seq, e.cfg.Layers, now)
	e.impliedEdge = max(e.impliedEdge, seq)
}

// serverHolds records, in the server partner's map srv, that it holds
// the first layers of segment seq (moving the map's window up to it).
func (e *Engine) serverHolds(srv *partner, seq uint64, layers int, now time.Time) {
	if seq >= srv.bm.Base()+uint64(srv.bm.Window()) {
		srv.bm.Advance(seq - uint64(srv.bm.Window()) + 1)
	}
	for l := 0; l < layers; l++ {
		srv.bm.Set(seq, l)
	}
	e.noteServerSegment(seq, now, false)
}

// noteServerSegment records that the server holds segment seq.
func (e *Engine) noteServerSegment(seq uint64, now time.Time, seed bool) {
	s := e.segs[seq]
	if s == nil && seq >= e.have.Base() {
		s = &seg{}
		e.segs[seq] = s
	}
	if s != nil {
		if s.firstSeen.IsZero() {
			s.firstSeen = now
		}
		s.seed = s.seed || seed
	}
}

// serverHoldings records when fresh segments appeared at the server.
func (e *Engine) serverHoldings(p *partner, now time.Time) {
	for i := 0; i < p.bm.Window(); i++ {
		s := p.bm.Base() + uint64(i)
		if p.bm.Has(s, 0) {
			e.noteLiveEdge(s, now, false)
			if e.segs[s] == nil && s >= e.have.Base() {
				e.segs[s] = &seg{firstSeen: now}
			}
		}
	}
}

// busyBackoff is how long a peer leaves a partner alone after a busy
// refusal: busyBackoff from a peer; from the server, doubled with each
// refusal since it last delivered (up to serverBackoffMax), with jitter,
// so thousands of peers whose partners are late do not spend the
// server's upload on refusals (at N = 5000 they were 11 MB of its 24 MB
// of control in 60 s, against 13 MB of media).
func (e *Engine) busyBackoff(p *partner) time.Duration {
	if !p.server {
		return busyBackoff
	}
	p.busyStreak++
	d := busyBackoff << min(p.busyStreak-1, 8)
	d = min(d, serverBackoffMax)
	return time.Duration(float64(d) * (0.75 + 0.5*e.env.Rand().Float64()))
}

// extrapolateServer marks the segments the server holds by now on the
// playback clock: segment s reached the server at the clock's
// AvailableAt(s), and a peer that is not a seed may ask the server for
// it SeedDelay later, as when the server announced every segment to
// every peer. The server then announces to a peer only every
// edgeSyncInterval (flushDelayed): its control toward each peer is
// O(1) per second, whatever N. The extrapolation stops extrapolateAhead
// past the server's last announcement and before a segment it said it
// does not hold (a stream slower than the clock, or stopped).
func (e *Engine) extrapolateServer(now time.Time) {
	// Called on every message: the common case (the next segment is not
	// due yet) returns before the partner lookup.
	if !e.clock.Anchored() || !e.haveEdge || !e.extrapolates(e.liveEdge+1, now) {
		return
	}
	srv := e.partners[e.serverID]
	if srv == nil || srv.bm == nil {
		return
	}
	layers := e.cfg.Layers
	if e.streamLayers > 0 {
		layers = e.streamLayers
	}
	for seq := e.liveEdge + 1; e.extrapolates(seq, now); seq++ {
		e.serverHolds(srv, seq, layers, now)
		e.liveEdge = seq
	}
}

// extrapolates tells whether the server is taken to hold segment seq by
// now: within extrapolateAhead of what it announced, not past a segment
// it said it lacks, and due SeedDelay ago on the playback clock.
func (e *Engine) extrapolates(seq uint64, now time.Time) bool {
	return seq <= e.announcedEdge+extrapolateAhead && !(e.notFoundSet && seq >= e.notFoundAt) &&
		!now.Before(e.clock.AvailableAt(seq).Add(e.cfg.SeedDelay))
}
