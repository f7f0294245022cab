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
	for _, p := range e.partners {
		bm := -1
		if p.bm != nil {
			bm = p.bm.Count(0)
		}
		s += fmt.Sprintf("\n  partner %d server=%v bm0=%d inflight=%d rate=%.0f rtt=%v busy=%v", p.id, p.server, bm, len(p.inflight), p.tput, p.rtt.Smoothed(0), now.Before(p.busyUntil))
	}
	return s
}
