package rtmpguard

import (
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// Conn wraps a server-side RTMP connection: reads return only bytes the
// Framer validated, and every read and write carries a deadline, so idle
// and half-open connections end after Timeout.
type Conn struct {
	net.Conn
	// Timeout is the read and write deadline applied to each operation.
	Timeout time.Duration
	// OnReject is called once with the reason a connection is refused.
	OnReject func(error)

	framer   *Framer
	in       []byte // received, not yet validated
	out      []byte // validated, not yet returned
	buf      []byte
	err      error
	rejected atomic.Bool
}

// maxPending bounds bytes held while waiting for a chunk to complete: one
// chunk is at most MaxChunkSize plus headers.
func (c *Conn) maxPending() int { return c.framer.lim.MaxChunkSize + 32 }

// NewConn wraps conn with a guard using lim.
func NewConn(conn net.Conn, lim Limits, timeout time.Duration) *Conn {
	return &Conn{Conn: conn, Timeout: timeout, framer: NewFramer(lim), buf: make([]byte, 32<<10)}
}

// Read implements io.Reader over validated bytes.
func (c *Conn) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		if c.Timeout > 0 {
			_ = c.Conn.SetReadDeadline(time.Now().Add(c.Timeout))
		}
		n, err := c.Conn.Read(c.buf)
		if n > 0 {
			c.in = append(c.in, c.buf[:n]...)
			ok, ferr := c.framer.Feed(c.in)
			c.out = append(c.out, c.in[:ok]...)
			c.in = append(c.in[:0], c.in[ok:]...)
			if ferr == nil && len(c.in) > c.maxPending() {
				ferr = fmt.Errorf("%w: %d bytes", ErrBufferedLimit, len(c.in))
			}
			if ferr != nil {
				c.reject(ferr)
				// Hand over what was validated before the violation,
				// then fail: the offending bytes never reach the library.
				c.err = ferr
			}
		}
		if err != nil && c.err == nil {
			c.err = err
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	if len(c.out) == 0 {
		c.out = nil
	}
	return n, nil
}

func (c *Conn) reject(err error) {
	if c.rejected.CompareAndSwap(false, true) {
		if c.OnReject != nil {
			c.OnReject(err)
		}
		_ = c.Conn.Close()
	}
}

// Write implements io.Writer with a deadline.
func (c *Conn) Write(p []byte) (int, error) {
	if c.Timeout > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.Timeout))
	}
	return c.Conn.Write(p)
}

// Framer exposes the connection's framer (for counters).
func (c *Conn) Framer() *Framer { return c.framer }
