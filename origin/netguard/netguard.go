// Package netguard hardens the origin's TCP listeners against what a remote
// party or the operating system can do to them: an Accept that fails for
// lack of file descriptors is retried with backoff (logged once per
// interval) instead of ending the accept loop; connections beyond a cap are
// closed at once; and connections that are not in a long-lived state
// (playing, recording) must finish a request within an idle timeout, so
// idle, half-request and slowloris connections are closed.
package netguard

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coopstreaming/coop/origin/ratelog"
)

// Listener wraps a net.Listener. Its zero fields take the documented
// defaults; set them before the first Accept.
type Listener struct {
	net.Listener
	// Name labels logs and metrics ("rtsp", "rtmp", "http").
	Name string
	// MaxConns caps the open connections (0: no cap). Connections beyond
	// it are closed as soon as they are accepted.
	MaxConns int
	// IdleTimeout, when positive, wraps each connection in a *Conn that must
	// see a complete request (Touch) every IdleTimeout unless it is Exempt.
	IdleTimeout time.Duration
	// Log receives the rate-limited warnings (default slog.Default()).
	Log *slog.Logger
	// OnReject is called with a reason ("conn_limit", "accept_error") for
	// every refused connection or failed accept (optional; e.g. a metric).
	OnReject func(reason string)

	open   atomic.Int64
	warn   ratelog.Limiter
	closed atomic.Bool
}

// maxBackoff bounds the wait between failing Accept calls.
const maxBackoff = time.Second

// Accept returns the next connection. Temporary failures (EMFILE, ENFILE,
// ECONNABORTED, …) are retried with a backoff up to one second; only a
// closed listener or a permanent error is returned.
func (l *Listener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) || !isTemporary(err) {
				return nil, err
			}
			l.reject("accept_error")
			l.warnf("accept failing, retrying (out of file descriptors?)", err)
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else {
				backoff = min(2*backoff, maxBackoff)
			}
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if l.MaxConns > 0 && l.open.Load() >= int64(l.MaxConns) {
			l.reject("conn_limit") // counted before the peer can see the close
			_ = c.Close()
			l.warnf("connection refused: too many open connections", nil, "remote", c.RemoteAddr().String(), "max", l.MaxConns)
			continue
		}
		l.open.Add(1)
		return l.wrap(c), nil
	}
}

// Close closes the listener.
func (l *Listener) Close() error {
	l.closed.Store(true)
	return l.Listener.Close()
}

// Open is the number of connections accepted and not yet closed.
func (l *Listener) Open() int { return int(l.open.Load()) }

func (l *Listener) reject(reason string) {
	if l.OnReject != nil {
		l.OnReject(reason)
	}
}

func (l *Listener) warnf(msg string, err error, attrs ...any) {
	log := l.Log
	if log == nil {
		log = slog.Default()
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	l.warn.Warn(log, msg, append([]any{"listener", l.Name}, attrs...)...)
}

func (l *Listener) wrap(c net.Conn) net.Conn {
	gc := &Conn{Conn: c, timeout: l.IdleTimeout, onClose: func() { l.open.Add(-1) }}
	if gc.timeout > 0 {
		gc.deadline = time.Now().Add(gc.timeout)
	}
	return gc
}

// isTemporary reports errors after which Accept may succeed later.
func isTemporary(err error) bool {
	var te interface{ Temporary() bool }
	if errors.As(err, &te) {
		return te.Temporary()
	}
	return false
}

// Conn is a connection accepted by a Listener. Until Exempt is called, each
// Read must end before the connection's deadline, which Touch moves to now
// + the idle timeout; so a peer that sends nothing, or dribbles a request
// byte by byte, is cut off after the idle timeout.
type Conn struct {
	net.Conn
	timeout time.Duration
	onClose func()
	once    sync.Once

	// mu guards exempt and deadline, and orders the deadline a Read sets
	// against Exempt clearing it.
	mu       sync.Mutex
	exempt   bool
	deadline time.Time
}

// Read reads with the idle deadline unless the connection is exempt.
func (c *Conn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.timeout > 0 && !c.exempt {
		_ = c.Conn.SetReadDeadline(c.deadline)
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

// SetReadDeadline passes the owner's deadline through once the connection
// is exempt; before, the idle deadline rules.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timeout > 0 && !c.exempt {
		return nil
	}
	return c.Conn.SetReadDeadline(t)
}

// Touch records a complete request: the connection has another idle
// timeout to send the next one.
func (c *Conn) Touch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timeout > 0 {
		c.deadline = time.Now().Add(c.timeout)
	}
}

// Exempt lifts (on) or restores (off) the idle deadline, for connections
// that enter or leave a state whose liveness their owner checks (an RTSP
// session that plays or records).
func (c *Conn) Exempt(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exempt == on {
		return
	}
	c.exempt = on
	if on {
		_ = c.Conn.SetReadDeadline(time.Time{})
	} else if c.timeout > 0 {
		c.deadline = time.Now().Add(c.timeout)
		_ = c.Conn.SetReadDeadline(c.deadline)
	}
}

// Close closes the connection (once for the listener's count).
func (c *Conn) Close() error {
	c.once.Do(c.onClose)
	return c.Conn.Close()
}
