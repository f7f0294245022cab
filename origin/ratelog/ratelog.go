// Package ratelog is the origin's one home for warnings a remote party can
// trigger: each distinct message is written at most once per interval, with
// the count of the ones suppressed since, so an attack cannot flood the log.
// Count every event in a metric as well (coop_origin_rejected_total).
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultInterval is the default minimum time between two lines of one message.
const DefaultInterval = 10 * time.Second

// maxMessages bounds the messages tracked; messages are constant strings
// from the code, so the bound is only a safety net.
const maxMessages = 256

// Limiter rate-limits log lines per message. The zero value is ready and
// uses DefaultInterval.
type Limiter struct {
	// Interval is the minimum time between two lines of one message.
	Interval time.Duration
	// Now is the clock (default time.Now), for tests.
	Now func() time.Time

	// mu guards last.
	mu   sync.Mutex
	last map[string]*entry
}

type entry struct {
	at         time.Time
	suppressed uint64
}

// Warn writes msg at warning level unless it was written less than
// Interval ago; a line that follows suppressed ones says how many.
func (l *Limiter) Warn(log *slog.Logger, msg string, args ...any) {
	l.Log(log, slog.LevelWarn, msg, args...)
}

// Log is Warn at any level.
func (l *Limiter) Log(log *slog.Logger, level slog.Level, msg string, args ...any) {
	n, ok := l.Allow(msg)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Log(context.Background(), level, msg, args...)
}

// Allow reports whether msg may be written now, and how many lines of it
// were suppressed since the last one.
func (l *Limiter) Allow(msg string) (suppressed uint64, ok bool) {
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	interval := l.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = make(map[string]*entry)
	}
	e := l.last[msg]
	if e == nil {
		if len(l.last) >= maxMessages {
			clear(l.last)
		}
		l.last[msg] = &entry{at: t}
		return 0, true
	}
	if t.Sub(e.at) < interval {
		e.suppressed++
		return 0, false
	}
	n := e.suppressed
	e.at, e.suppressed = t, 0
	return n, true
}
