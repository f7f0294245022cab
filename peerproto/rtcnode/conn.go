// Package rtcnode carries the peer protocol over WebRTC data channels
// (docs/webrtc.md): a net.Conn over one detached, ordered, reliable data
// channel (the frame byte stream cut into pieces of at most 16 KiB), the
// PeerConnection setup of an offerer or an answerer, the JSON messages of
// the plugin's signalling WebSocket, and a Transport that a tcpnode.Node
// uses to dial and accept "rtc:" partners through that signalling.
package rtcnode

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/datachannel"
	"github.com/pion/webrtc/v4"
)

// Data channel limits and names (docs/webrtc.md "The data channel").
const (
	// Label is the data channel's label.
	Label = "coop"
	// MaxPiece is the largest message a node sends: the frame byte stream
	// is cut into pieces of at most this size.
	MaxPiece = 16 << 10
	// MaxMessage is the largest message a node accepts; a larger one
	// closes the connection.
	MaxMessage = 64 << 10
	// sctpMaxMessage is the SCTP message size a node advertises
	// (a=max-message-size): above MaxMessage, so a peer that breaks the
	// limit gets its connection closed by the reader rather than a send
	// error it may ignore; it bounds one message's reassembly memory.
	sctpMaxMessage = 256 << 10
	// highWater is the channel's buffered amount past which a write
	// waits; lowWater the level that wakes it.
	highWater = 1 << 20
	lowWater  = 256 << 10
)

// Errors of a data channel connection.
var (
	ErrMessageTooLarge = errors.New("rtcnode: data channel message over 64 KiB")
	ErrTextMessage     = errors.New("rtcnode: text message on the data channel")
	ErrClosed          = errors.New("rtcnode: connection closed")
)

// Addr is a WebRTC endpoint: the selected ICE candidate's address when
// known, else the peer's name.
type Addr struct {
	// IP and Port come from the selected candidate pair (nil IP: unknown).
	IP   net.IP
	Port int
	// Peer is the signalling name of the other end ("server" or a hex
	// peer id); empty for the local side.
	Peer string
}

// Network implements net.Addr.
func (a *Addr) Network() string { return "rtc" }

func (a *Addr) String() string {
	if a.IP != nil {
		return net.JoinHostPort(a.IP.String(), fmt.Sprint(a.Port))
	}
	return "rtc:" + a.Peer
}

// UDPAddr is the address as a *net.UDPAddr (nil when unknown).
func (a *Addr) UDPAddr() *net.UDPAddr {
	if a.IP == nil {
		return nil
	}
	return &net.UDPAddr{IP: a.IP, Port: a.Port}
}

// Conn is a net.Conn over a detached data channel. Reads return the
// stream's bytes (messages concatenated); writes cut it into pieces of
// at most MaxPiece and wait while the channel buffers more than 1 MiB.
type Conn struct {
	pc  *webrtc.PeerConnection
	dc  *webrtc.DataChannel
	raw datachannel.ReadWriteCloserDeadliner

	local, remote net.Addr
	counters      *Counters

	// rbuf and rpend belong to the reader (net.Conn: one reader at a time).
	rbuf  []byte
	rpend []byte

	// wmu serialises writers; low wakes a writer waiting for the buffer
	// to drain; wdeadline is the write deadline (unix nanoseconds, 0 none).
	wmu       sync.Mutex
	low       chan struct{}
	wdeadline atomic.Int64

	once   sync.Once
	closed chan struct{}
	// onClose runs once when the connection closes.
	onClose func()
}

// newConn wraps an open, detached data channel.
func newConn(pc *webrtc.PeerConnection, dc *webrtc.DataChannel, raw datachannel.ReadWriteCloserDeadliner,
	peer string, counters *Counters) *Conn {
	c := &Conn{pc: pc, dc: dc, raw: raw, counters: counters,
		rbuf: make([]byte, MaxMessage+1), low: make(chan struct{}, 1), closed: make(chan struct{})}
	c.local, c.remote = &Addr{}, &Addr{Peer: peer}
	if sctp := pc.SCTP(); sctp != nil {
		if pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair(); err == nil && pair != nil {
			if pair.Local != nil {
				c.local = &Addr{IP: net.ParseIP(pair.Local.Address), Port: int(pair.Local.Port)}
			}
			if pair.Remote != nil {
				c.remote = &Addr{IP: net.ParseIP(pair.Remote.Address), Port: int(pair.Remote.Port), Peer: peer}
			}
		}
	}
	dc.SetBufferedAmountLowThreshold(lowWater)
	dc.OnBufferedAmountLow(func() {
		select {
		case c.low <- struct{}{}:
		default:
		}
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed,
			webrtc.PeerConnectionStateDisconnected:
			go c.Close()
		}
	})
	if counters != nil {
		counters.Conns.Add(1)
	}
	return c
}

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) {
	for len(c.rpend) == 0 {
		n, text, err := c.raw.ReadDataChannel(c.rbuf)
		switch {
		case errors.Is(err, errShortBuffer) || (err == nil && n > MaxMessage):
			c.Close()
			if c.counters != nil {
				c.counters.Oversized.Add(1)
			}
			return 0, ErrMessageTooLarge
		case err != nil:
			select {
			case <-c.closed:
				return 0, ErrClosed
			default:
			}
			return 0, err
		case text:
			c.Close()
			return 0, ErrTextMessage
		}
		c.rpend = c.rbuf[:n]
		if c.counters != nil {
			c.counters.BytesIn.Add(uint64(n))
		}
	}
	n := copy(p, c.rpend)
	c.rpend = c.rpend[n:]
	return n, nil
}

// Write implements net.Conn: the bytes go out in pieces of at most
// MaxPiece; it waits (until the write deadline) while the channel
// buffers more than highWater bytes.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	written := 0
	for len(p) > 0 {
		if err := c.waitBuffer(); err != nil {
			return written, err
		}
		piece := p[:min(len(p), MaxPiece)]
		n, err := c.raw.Write(piece)
		written += n
		if c.counters != nil {
			c.counters.BytesOut.Add(uint64(n))
		}
		if err != nil {
			return written, fmt.Errorf("data channel write: %w", err)
		}
		p = p[len(piece):]
	}
	return written, nil
}

// waitBuffer waits while the channel buffers more than highWater.
func (c *Conn) waitBuffer() error {
	for c.dc.BufferedAmount() > highWater {
		var timeout <-chan time.Time
		if d := c.wdeadline.Load(); d != 0 {
			left := time.Until(time.Unix(0, d))
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			t := time.NewTimer(left)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-c.low:
		case <-c.closed:
			return ErrClosed
		case <-timeout:
			return os.ErrDeadlineExceeded
		case <-time.After(100 * time.Millisecond): // a missed wake-up costs 100 ms at most
		}
	}
	return nil
}

// Close implements net.Conn: it closes the channel and its PeerConnection.
func (c *Conn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		if c.counters != nil {
			c.counters.Conns.Add(-1)
		}
		_ = c.raw.Close()
		go func() { _ = c.pc.Close() }() // Close waits for pion's goroutines: not on a reader's path
		if c.onClose != nil {
			c.onClose()
		}
	})
	return nil
}

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr implements net.Conn: the selected candidate's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	_ = c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.raw.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		c.wdeadline.Store(0)
	} else {
		c.wdeadline.Store(t.UnixNano())
	}
	return c.raw.SetWriteDeadline(t)
}

// Counters are a transport's figures, safe to read at any time.
type Counters struct {
	// BytesIn and BytesOut count data channel payload bytes.
	BytesIn, BytesOut atomic.Uint64
	// Conns is the number of open data channel connections.
	Conns atomic.Int64
	// Dials, DialFailures count outgoing sessions and those that never
	// opened; Accepted the incoming sessions that opened.
	Dials, DialFailures, Accepted atomic.Uint64
	// Oversized counts connections closed for a message over MaxMessage.
	Oversized atomic.Uint64
	// SetupNanos sums the offer-to-open time of opened outgoing sessions
	// (divide by Dials-DialFailures for the mean).
	SetupNanos atomic.Uint64
}
