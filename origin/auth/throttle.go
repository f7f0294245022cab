package auth

import (
	"net"
	"sync"
	"time"
)

// Throttle defaults.
const (
	DefaultMaxFailures = 5
	DefaultWindow      = time.Minute
	DefaultBlock       = time.Minute
	DefaultMaxEntries  = 4096
)

// Throttle slows down credential and stream-key guessing: a remote IP that
// fails MaxFailures times within Window is refused for Block, whatever it
// sends. Its table is bounded (MaxEntries; expired entries go first, then
// the oldest). The zero value is ready and uses the defaults.
type Throttle struct {
	// MaxFailures is the failures within Window that block an IP (default 5).
	MaxFailures int
	// Window is the period failures are counted over (default 1m).
	Window time.Duration
	// Block is how long a blocked IP is refused (default 1m).
	Block time.Duration
	// MaxEntries bounds the IPs tracked (default 4096).
	MaxEntries int
	// Now is the clock (default time.Now), for tests.
	Now func() time.Time

	// mu guards ips.
	mu  sync.Mutex
	ips map[string]*failures
}

type failures struct {
	first        time.Time // start of the current window
	count        int
	blockedUntil time.Time
}

// HostOf returns the IP of a "host:port" remote address (or addr itself).
func HostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

func (t *Throttle) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// Blocked reports whether ip is refused now.
func (t *Throttle) Blocked(ip string) bool {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.ips[ip]
	return f != nil && now.Before(f.blockedUntil)
}

// Fail records a failed attempt from ip and reports whether ip is now
// blocked.
func (t *Throttle) Fail(ip string) bool {
	now := t.now()
	window, block, maxFail := t.Window, t.Block, t.MaxFailures
	if window <= 0 {
		window = DefaultWindow
	}
	if block <= 0 {
		block = DefaultBlock
	}
	if maxFail <= 0 {
		maxFail = DefaultMaxFailures
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ips == nil {
		t.ips = make(map[string]*failures)
	}
	f := t.ips[ip]
	if f == nil {
		t.makeRoom(now, window)
		f = &failures{first: now}
		t.ips[ip] = f
	}
	if now.Sub(f.first) > window {
		f.first, f.count = now, 0
	}
	f.count++
	if f.count >= maxFail {
		f.blockedUntil = now.Add(block)
		f.first, f.count = now, 0
	}
	return now.Before(f.blockedUntil)
}

// makeRoom evicts entries when the table is full: expired ones first,
// then the one whose window started first. Runs under t.mu.
func (t *Throttle) makeRoom(now time.Time, window time.Duration) {
	limit := t.MaxEntries
	if limit <= 0 {
		limit = DefaultMaxEntries
	}
	if len(t.ips) < limit {
		return
	}
	var oldestIP string
	var oldest time.Time
	for ip, f := range t.ips {
		if now.Sub(f.first) > window && !now.Before(f.blockedUntil) {
			delete(t.ips, ip)
			continue
		}
		if oldestIP == "" || f.first.Before(oldest) {
			oldestIP, oldest = ip, f.first
		}
	}
	if len(t.ips) >= limit {
		delete(t.ips, oldestIP)
	}
}

// Len is the number of IPs tracked.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.ips)
}
