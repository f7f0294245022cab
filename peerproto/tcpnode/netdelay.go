package tcpnode

// A test- and benchmark-only network delay shim. Loopback has no delay, so
// a swarm of real processes on one machine never sees the round trips a
// real network has; netem is not available here. With a delay table, a
// node delays every frame it writes to a remote by that remote's one-way
// delay: a delay line per connection (frames stamped on write, released
// in order at stamp+delay, up to releaseLag later to batch writes, by
// one goroutine per connection, bounded memory). It sits behind the per-connection send queue (the backlog the
// engine sees), like the network does, so a stalled receiver still fills
// that queue and is skipped and then closed as without the shim.
//
// It is off unless configured (Node.NetDelay, or the file named by
// $COOP_NETDELAY_FILE) and costs nothing when off. Never use it in
// production: it only slows a node down.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// EnvNetDelayFile names the environment variable holding the path of a
// delay table (test and benchmark only; see NetDelay). coop-peer and the
// plugin read it through Node.Start (the origin passes its environment to
// the plugin process).
const EnvNetDelayFile = "COOP_NETDELAY_FILE"

// Limits of the delay shim.
const (
	// maxNetDelayFile bounds the table file's size.
	maxNetDelayFile = 16 << 20
	// maxOneWay bounds one table entry (a typo in milliseconds must not
	// stop a node for hours).
	maxOneWay = 10 * time.Second
	// DefaultDelayLineBytes bounds the bytes in one connection's delay
	// line; a writer waits (up to its write deadline) when it is full.
	DefaultDelayLineBytes = 1 << 20
	// delayLineFrames bounds the frames in one delay line (tiny writes
	// must not grow the bookkeeping without bound either).
	delayLineFrames = 16384
	// closeLinger bounds how long a closed connection's delay line goes
	// on delivering what it holds (beyond the delay itself).
	closeLinger = 2 * time.Second
	// releaseLag holds a due frame up to this much longer, so that the
	// frames due meanwhile go in the same write: frames stamped a few
	// hundred microseconds apart (the pieces of one segment) went out in
	// one writev each, 16% of a coop-peer's CPU in the real swarm bench.
	// 1 ms is below the accuracy of the delays (tens of ms, drawn from a
	// model); a frame is still never early.
	releaseLag = time.Millisecond
)

// NetDelay is a table of one-way delays between node addresses (the
// host:port a node listens on or advertises: a coop-peer's -listen, the
// plugin's peer port). Test and benchmark only.
//
// Its file is JSON:
//
//	{"defaultMs": 0, "oneWayMs": {"127.0.0.1:7000": {"127.0.0.1:7001": 12.5, ...}, ...}}
//
// oneWayMs[from][to] is the delay of what from writes to to; a pair
// missing from the table takes defaultMs.
type NetDelay struct {
	// Default is the delay of a pair missing from the table.
	Default time.Duration
	// OneWay[from][to] is the delay of what from sends to to.
	OneWay map[string]map[string]time.Duration
	// LineBytes bounds the bytes in one connection's delay line
	// [DefaultDelayLineBytes].
	LineBytes int
}

// netDelayFile is the file form of a NetDelay.
type netDelayFile struct {
	DefaultMs float64                       `json:"defaultMs"`
	OneWayMs  map[string]map[string]float64 `json:"oneWayMs"`
}

// LoadNetDelay reads a delay table file (at most 16 MiB).
func LoadNetDelay(path string) (*NetDelay, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("delay table: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxNetDelayFile+1))
	if err != nil {
		return nil, fmt.Errorf("delay table %s: %w", path, err)
	}
	if len(b) > maxNetDelayFile {
		return nil, fmt.Errorf("delay table %s: larger than %d bytes", path, maxNetDelayFile)
	}
	d, err := ParseNetDelay(b)
	if err != nil {
		return nil, fmt.Errorf("delay table %s: %w", path, err)
	}
	return d, nil
}

// ParseNetDelay decodes a delay table (the file's JSON form).
func ParseNetDelay(b []byte) (*NetDelay, error) {
	var f netDelayFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	ms := func(v float64, what string) (time.Duration, error) {
		// Compared as floats: a huge value must not wrap round as a
		// Duration.
		if !(v >= 0 && v <= float64(maxOneWay/time.Millisecond)) {
			return 0, fmt.Errorf("%s: %v ms is not a delay in [0, %v]", what, v, maxOneWay)
		}
		return time.Duration(v * float64(time.Millisecond)), nil
	}
	d := &NetDelay{OneWay: make(map[string]map[string]time.Duration, len(f.OneWayMs))}
	var err error
	if d.Default, err = ms(f.DefaultMs, "defaultMs"); err != nil {
		return nil, err
	}
	for from, row := range f.OneWayMs {
		if _, _, err := net.SplitHostPort(from); err != nil {
			return nil, fmt.Errorf("%q is not host:port: %w", from, err)
		}
		m := make(map[string]time.Duration, len(row))
		for to, v := range row {
			if _, _, err := net.SplitHostPort(to); err != nil {
				return nil, fmt.Errorf("%q is not host:port: %w", to, err)
			}
			if m[to], err = ms(v, from+" -> "+to); err != nil {
				return nil, err
			}
		}
		d.OneWay[from] = m
	}
	return d, nil
}

// Marshal returns the table's file form.
func (d *NetDelay) Marshal() ([]byte, error) {
	f := netDelayFile{DefaultMs: float64(d.Default) / float64(time.Millisecond), OneWayMs: map[string]map[string]float64{}}
	for from, row := range d.OneWay {
		m := make(map[string]float64, len(row))
		for to, v := range row {
			m[to] = float64(v) / float64(time.Millisecond)
		}
		f.OneWayMs[from] = m
	}
	return json.Marshal(f)
}

// Between is the one-way delay of what from sends to to.
func (d *NetDelay) Between(from, to string) time.Duration {
	if v, ok := d.OneWay[from][to]; ok {
		return v
	}
	return d.Default
}

// loadNetDelay takes the table named by $COOP_NETDELAY_FILE when the
// node was given none; a table in use is logged (it is test-only).
func (n *Node) loadNetDelay() error {
	if path := os.Getenv(EnvNetDelayFile); n.NetDelay == nil && path != "" {
		d, err := LoadNetDelay(path)
		if err != nil {
			return fmt.Errorf("$%s: %w", EnvNetDelayFile, err)
		}
		n.NetDelay = d
	}
	if n.NetDelay != nil {
		self := n.Advertise
		if self == "" {
			self = n.Listen
		}
		n.Log.Warn("test-only network delay shim on: what this node writes to a remote is delayed by the table's one-way delay",
			"self", self, "remotes_in_table", len(n.NetDelay.OneWay[self]), "default", n.NetDelay.Default)
	}
	return nil
}

// delayed wraps nc in a delay line towards remote (a node address) when
// the node has a delay table and the pair's delay is positive; otherwise
// it returns nc as is.
func (n *Node) delayed(nc net.Conn, remote string) net.Conn {
	if n.NetDelay == nil {
		return nc
	}
	d := n.NetDelay.Between(n.Config.ListenAddr, remote)
	if d <= 0 {
		return nc
	}
	return newDelayConn(nc, d, n.NetDelay.LineBytes)
}

// delayConn is a net.Conn whose writes reach the wire delay later, in
// order: Write stamps a copy of the bytes and queues it; one goroutine
// writes each frame at stamp+delay. Reads are not delayed (the other side
// delays what it writes).
type delayConn struct {
	net.Conn
	delay    time.Duration
	maxBytes int

	// mu guards line, bytes, err, closing and wdeadline.
	mu        sync.Mutex
	line      []stampedFrame
	bytes     int
	err       error // the first error of a write to the wire (sticky)
	closing   bool
	wdeadline time.Time

	more  chan struct{} // a frame was queued or the conn closed (cap 1)
	space chan struct{} // the releaser made room (cap 1)
	done  chan struct{} // closed by Close
	once  sync.Once
	// released is closed when the releaser has ended (tests).
	released chan struct{}
}

type stampedFrame struct {
	due time.Time
	b   []byte
}

func newDelayConn(nc net.Conn, delay time.Duration, maxBytes int) *delayConn {
	if maxBytes <= 0 {
		maxBytes = DefaultDelayLineBytes
	}
	c := &delayConn{Conn: nc, delay: delay, maxBytes: maxBytes, more: make(chan struct{}, 1),
		space: make(chan struct{}, 1), done: make(chan struct{}), released: make(chan struct{})}
	// The wire's write deadline is the releaser's from now on: one set
	// before the wrap (the handshake's) would fail its writes later. A
	// caller's write deadline bounds the wait for room in the line.
	_ = nc.SetWriteDeadline(time.Time{})
	go c.release()
	return c
}

// poke wakes the goroutine waiting on ch, if any, without blocking.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Write queues a copy of p for the wire at now+delay. When the line is
// full it waits for room until the write deadline (a timeout error, as a
// stalled socket gives) or Close (net.ErrClosed).
func (c *delayConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	frame := append([]byte(nil), p...)
	for {
		c.mu.Lock()
		switch {
		case c.closing:
			c.mu.Unlock()
			return 0, net.ErrClosed
		case c.err != nil:
			err := c.err
			c.mu.Unlock()
			return 0, err
		case len(c.line) == 0 || c.bytes+len(frame) <= c.maxBytes && len(c.line) < delayLineFrames:
			c.line = append(c.line, stampedFrame{due: time.Now().Add(c.delay), b: frame})
			c.bytes += len(frame)
			c.mu.Unlock()
			poke(c.more)
			return len(p), nil
		}
		deadline := c.wdeadline
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !deadline.IsZero() {
			wait := time.Until(deadline)
			if wait <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(wait)
			timeout = t.C
			select {
			case <-c.space:
			case <-c.done:
			case <-timeout:
				return 0, os.ErrDeadlineExceeded
			}
			t.Stop()
			continue
		}
		select {
		case <-c.space:
		case <-c.done:
		}
	}
}

// release writes each queued frame to the wire at its due time (at most
// releaseLag later), every frame due by then in one write. After Close it delivers what the line
// holds (bounded by the delay plus closeLinger) and then closes the wire.
func (c *delayConn) release() {
	defer close(c.released)
	defer c.Conn.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var batch net.Buffers
	for {
		c.mu.Lock()
		if len(c.line) == 0 {
			closing := c.closing || c.err != nil
			c.mu.Unlock()
			if closing {
				return
			}
			select {
			case <-c.more:
			case <-c.done:
			}
			continue
		}
		head, closing := c.line[0].due, c.closing
		c.mu.Unlock()
		if wait := time.Until(head) + releaseLag; wait > 0 {
			timer.Reset(wait)
			if closing {
				<-timer.C // closing: the frames still go out at their due times
				continue
			}
			select {
			case <-timer.C:
			case <-c.done:
				timer.Stop()
			}
			continue
		}
		now := time.Now()
		c.mu.Lock()
		batch = batch[:0]
		n, size := 0, 0
		for n < len(c.line) && !c.line[n].due.After(now) {
			batch = append(batch, c.line[n].b)
			size += len(c.line[n].b)
			n++
		}
		c.mu.Unlock()
		_, err := batch.WriteTo(c.Conn)
		c.mu.Lock()
		clear(c.line[:n])
		c.line = c.line[n:]
		if len(c.line) == 0 {
			c.line = nil // let the backing array go
		}
		c.bytes -= size
		if err != nil && c.err == nil {
			c.err = err
		}
		failed := c.err != nil
		c.mu.Unlock()
		poke(c.space)
		if failed {
			return
		}
	}
}

// Close stops taking writes; what the line holds still goes out at its
// due time (the goodbye, a Reject), then the wire closes. Reads end at
// once.
func (c *delayConn) Close() error {
	first := false
	c.once.Do(func() {
		first = true
		c.mu.Lock()
		c.closing = true
		c.mu.Unlock()
		// A receiver that stopped reading must not hold the releaser
		// past the linger.
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.delay + closeLinger))
		if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
			_ = cr.CloseRead()
		}
		close(c.done)
		poke(c.more)
	})
	if !first {
		return net.ErrClosed
	}
	return nil
}

// SetDeadline sets the read deadline of the wire and the write deadline
// of the delay line.
func (c *delayConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetWriteDeadline bounds how long Write waits for room in the line.
func (c *delayConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return net.ErrClosed
	}
	c.wdeadline = t
	return nil
}

// queued is the bytes and frames in the line (tests).
func (c *delayConn) queued() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes, len(c.line)
}

var _ net.Conn = (*delayConn)(nil)
