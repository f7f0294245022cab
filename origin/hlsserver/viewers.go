package hlsserver

import (
	"sync"
	"time"
)

// Bounds of the HLS viewer count.
const (
	// viewerWindow: a connection that fetched a playlist this recently
	// is a viewer (players reload the playlist every segment or part).
	viewerWindow = 10 * time.Second
	// maxViewers bounds the connections remembered; past it the count
	// saturates (and memory does not grow).
	maxViewers = 1 << 16
)

// viewers estimates the HLS clients: HTTP is stateless, so a viewer is a
// client connection (remote address) that fetched a playlist within
// viewerWindow. A player that spreads its requests over several
// connections counts once per connection that reloads the playlist.
type viewers struct {
	// mu guards seen and pruned.
	mu     sync.Mutex
	seen   map[string]time.Time
	pruned time.Time
}

// touch records a playlist fetch from remote at now.
func (v *viewers) touch(remote string, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen == nil {
		v.seen = make(map[string]time.Time)
	}
	if _, ok := v.seen[remote]; !ok && len(v.seen) >= maxViewers {
		v.pruneLocked(now)
		if len(v.seen) >= maxViewers {
			return
		}
	}
	v.seen[remote] = now
}

// count is the viewers at now.
func (v *viewers) count(now time.Time) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	if now.Sub(v.pruned) > time.Second {
		v.pruneLocked(now)
	}
	n := 0
	for _, at := range v.seen {
		if now.Sub(at) <= viewerWindow {
			n++
		}
	}
	return n
}

func (v *viewers) pruneLocked(now time.Time) {
	v.pruned = now
	for k, at := range v.seen {
		if now.Sub(at) > viewerWindow {
			delete(v.seen, k)
		}
	}
}
