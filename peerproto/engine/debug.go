package engine

import "fmt"

// DebugString summarises the node's state (for tests and logs).
func (e *Engine) DebugString() string {
	now := e.env.Now()
	s := fmt.Sprintf("id=%d playing=%v playhead=%d start=%d live=%d layers=%d have0=%d partners=%d queue=%d",
		e.cfg.ID, e.playing, e.playhead, e.startSeq, e.liveEdge, e.qos.Layers(), e.have.Count(0), len(e.partners), len(e.queue))
	if e.playing {
		s += fmt.Sprintf(" deadline(playhead)-now=%v", e.Deadline(e.playhead).Sub(now))
	}
	for k := 0; k < e.push.k; k++ {
		sb := e.push.subs[k]
		s += fmt.Sprintf("\n  sub %d parent=%d asked=%v layers=%d/%d newest=%d pushed=%v hops=%d", k, sb.parent, sb.asked, sb.layers, sb.want, sb.newest, sb.pushed, e.push.hops[k])
	}
	if e.push.k > 0 {
		s += fmt.Sprintf("\n  push used=%.0f subs=%d cap=%.0f", e.push.used, e.push.nsubs, e.pushCapacity())
	}
	for _, p := range e.partners {
		bm := -1
		if p.bm != nil {
			bm = p.bm.Count(0)
		}
		s += fmt.Sprintf("\n  partner %d server=%v bm0=%d inflight=%d rate=%.0f rtt=%v busy=%v hops=%v child=%v", p.id, p.server, bm, len(p.inflight), p.tput, p.rtt.Smoothed(0), now.Before(p.busyUntil), p.hops[:e.push.k], p.childLayers[:e.push.k])
	}
	return s
}

// DebugCap is the measured download capacity (bytes/s; 0: not measured).
func (e *Engine) DebugCap() float64 {
	if !e.downCap.Measured() {
		return 0
	}
	return e.downCap.Value()
}
