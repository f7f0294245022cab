package hlsserver

import (
	"net"
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
// client address and player (remote IP and User-Agent) that fetched a
// playlist within viewerWindow. A browser spreads LL-HLS requests over
// several connections, so connections would overcount it; players of one
// kind behind one NAT address count once.
type viewers struct {
	// mu guards seen and pruned.
	mu     sync.Mutex
	seen   map[string]time.Time
	pruned time.Time
}

// maxAgentLen bounds the User-Agent bytes kept in a viewer's key.
const maxAgentLen = 256

// viewerKey names a viewer: the remote IP and the User-Agent.
func viewerKey(remoteAddr, agent string) string {
	ip, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		ip = remoteAddr
	}
	if len(agent) > maxAgentLen {
		agent = agent[:maxAgentLen]
	}
	return ip + " " + agent
}

// touch records a playlist fetch by the viewer key at now.
func (v *viewers) touch(key string, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen == nil {
		v.seen = make(map[string]time.Time)
	}
	if _, ok := v.seen[key]; !ok && len(v.seen) >= maxViewers {
		v.pruneLocked(now)
		if len(v.seen) >= maxViewers {
			return
		}
	}
	v.seen[key] = now
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
