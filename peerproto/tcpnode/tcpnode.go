// Package tcpnode runs an engine over real TCP: a listener for partners,
// a dialer, one event loop goroutine that owns the engine (every message,
// connection change and tick goes through it), a reader goroutine and a
// bounded writer queue per connection.
package tcpnode

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// readBuffer is each connection's read buffer: a few control messages or
// a piece's header (4 KiB a connection: 20 MiB for 5 000 peers at the
// server).
const readBuffer = 4 << 10

// Node is an engine on TCP.
type Node struct {
	// Config configures the engine. ListenAddr is filled from the
	// listener when empty.
	Config engine.Config
	// Listen is the TCP listen address ("" : no listener, dial only).
	Listen string
	// Advertise overrides the address partners are told to dial.
	Advertise string
	// HandshakeTimeout bounds the Hello exchange [5s].
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that sends nothing [30s].
	IdleTimeout time.Duration
	// MaxQueue bounds the bytes queued for one connection [8 MiB]; a
	// partner that lets more pile up is disconnected.
	MaxQueue int
	// StallTimeout closes a connection whose pending write makes no
	// progress for this long (a stopped receiver) [10s].
	StallTimeout time.Duration
	// MaxConns bounds admitted connections; past it a Hello is refused as
	// full [2048].
	MaxConns int
	// MsgRate bounds the messages per second the node takes from one
	// connection (burst MsgRate/2); past it the connection's reader waits,
	// so one flooding partner cannot monopolise the event loop [1000].
	MsgRate int
	// Tick is the engine tick interval [50ms].
	Tick time.Duration
	// Log receives the node's logs.
	Log *slog.Logger
	// OnAdmitError sees every refused or failed handshake; a refusal by
	// the other side is a *RejectedError.
	OnAdmitError func(remote string, err error)
	// Server, when set, is the server partner's address: the node dials
	// it at start and again whenever it is not connected (the server
	// restarted, the network blinked).
	Server string
	// Servers are further addresses of the server partner (other nodes
	// of a cluster serving the stream). The node tries Server and then
	// Servers in turn until one admits it; when it loses that server it
	// goes on with the next address, while its partners keep it playing.
	// A Reject with reason wire.RejectRedirect makes it try the address
	// the Reject names first.
	Servers []string
	// ServerRetry is the pause after a round in which every server
	// address failed; it doubles each failed round up to ServerRetryMax
	// [1s].
	ServerRetry time.Duration
	// ServerRetryMax caps that pause [DefaultServerRetryMax].
	ServerRetryMax time.Duration
	// MaxRedirects bounds the redirects followed in a row without being
	// admitted [DefaultMaxRedirects].
	MaxRedirects int
	// ServerIdleTimeout closes the server partner's connection when it
	// sends nothing for this long, so a silent (dead) server is replaced
	// sooner than IdleTimeout [IdleTimeout].
	ServerIdleTimeout time.Duration
	// OnServer, when set, sees the outcome of every attempt to reach a
	// server address on the event loop: nil when admitted, else the
	// error (a refusal is a *RejectedError).
	OnServer func(addr string, err error)
	// Transport, when set, dials the partners whose address it handles
	// (WebRTC "rtc:" addresses, transport.go) and names the address
	// partners are told; its inbound connections come through HandOff.
	Transport Transport
	// NetDelay, test and benchmark only, delays what the node writes to
	// each remote by the table's one-way delay (netdelay.go); nil: the
	// table named by $COOP_NETDELAY_FILE, if any.
	NetDelay *NetDelay

	eng    *engine.Engine
	ln     net.Listener
	events chan func()
	conns  map[wire.PeerID]*conn
	rng    *rand.Rand
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
	closed chan struct{}

	// servers is serverList() at Start; srv is the failover state
	// (event loop only); serverAddr is the connected server's address.
	servers    []string
	srv        serverState
	serverAddr atomic.Pointer[string]

	counters Counters
	slowLog  rate.Sometimes
}

// Counters are a node's transport events, safe to read at any time.
type Counters struct {
	// SlowDisconnects counts partners closed for a full send queue or a
	// stalled write.
	SlowDisconnects atomic.Uint64
	// FullRefusals counts Hellos refused at MaxConns.
	FullRefusals atomic.Uint64
	// Throttled counts times a connection's reader waited for MsgRate.
	Throttled atomic.Uint64
	// Conns is the number of admitted connections now.
	Conns atomic.Int64
	// ServerConnects counts the times a server address admitted the
	// node; ServerRedirects the redirects it followed.
	ServerConnects, ServerRedirects atomic.Uint64
}

// Counters returns the node's transport counters.
func (n *Node) Counters() *Counters { return &n.counters }

// RejectedError is a refusal by the other side of a handshake.
type RejectedError struct {
	// Reason is the wire.Reject reason.
	Reason uint8
	// Addr is the node to use instead (wire.RejectRedirect only).
	Addr string
}

func (e *RejectedError) Error() string {
	switch e.Reason {
	case wire.RejectAuth:
		return "refused by peer: bad join token"
	case wire.RejectBanned:
		return "refused by peer: banned"
	case wire.RejectFull:
		return "refused by peer: partner list full"
	case wire.RejectVersion:
		return "refused by peer: protocol, version or stream mismatch"
	case wire.RejectNotFound:
		return "refused by peer: no such stream"
	case wire.RejectRedirect:
		return "redirected by peer to " + e.Addr
	default:
		return fmt.Sprintf("refused by peer: reason %d", e.Reason)
	}
}

// conn is one admitted connection.
type conn struct {
	id     wire.PeerID
	nc     net.Conn
	idle   time.Duration // the read idle timeout
	mu     sync.Mutex
	queue  [][]byte
	queued int
	wake   chan struct{}
	done   chan struct{}
	once   sync.Once
	// slow is set once the connection is closed for being too slow (its
	// later sends are dropped silently).
	slow atomic.Bool
}

// Start listens (when Listen is set) and starts the event loop.
func (n *Node) Start() error {
	if n.HandshakeTimeout <= 0 {
		n.HandshakeTimeout = 5 * time.Second
	}
	if n.IdleTimeout <= 0 {
		n.IdleTimeout = 30 * time.Second
	}
	if n.MaxQueue <= 0 {
		n.MaxQueue = 8 << 20
	}
	if n.Tick <= 0 {
		n.Tick = 50 * time.Millisecond
	}
	if n.StallTimeout <= 0 {
		n.StallTimeout = 10 * time.Second
	}
	if n.MaxConns <= 0 {
		n.MaxConns = 2048
	}
	if n.MsgRate <= 0 {
		n.MsgRate = 1000
	}
	n.slowLog = rate.Sometimes{Interval: 10 * time.Second}
	if n.ServerRetry <= 0 {
		n.ServerRetry = time.Second
	}
	if n.ServerRetryMax <= 0 {
		n.ServerRetryMax = DefaultServerRetryMax
	}
	if n.MaxRedirects <= 0 {
		n.MaxRedirects = DefaultMaxRedirects
	}
	if n.ServerIdleTimeout <= 0 {
		n.ServerIdleTimeout = n.IdleTimeout
	}
	n.servers = n.serverList()
	if n.Log == nil {
		n.Log = slog.Default()
	}
	if err := n.loadNetDelay(); err != nil {
		return err
	}
	if n.Config.ID == 0 {
		n.Config.ID = wire.PeerID(rand.Uint64() | 1)
	}
	n.rng = rand.New(rand.NewPCG(rand.Uint64(), uint64(n.Config.ID)))
	n.events = make(chan func(), 4096)
	n.conns = make(map[wire.PeerID]*conn)
	n.closed = make(chan struct{})
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if n.Listen != "" {
		ln, err := net.Listen("tcp", n.Listen)
		if err != nil {
			return fmt.Errorf("peer listen on %s: %w", n.Listen, err)
		}
		n.ln = ln
		if n.Config.ListenAddr == "" {
			n.Config.ListenAddr = ln.Addr().String()
		}
	}
	if n.Advertise != "" {
		n.Config.ListenAddr = n.Advertise
	}
	if n.Transport != nil {
		n.Config.ListenAddr = n.Transport.Advertise(n.Config.ListenAddr)
	}
	n.eng = engine.New(n.Config, (*env)(n))
	n.wg.Add(1)
	go n.loop()
	if n.ln != nil {
		n.wg.Add(1)
		go n.accept()
	}
	return nil
}

// Addr is the listener's address.
func (n *Node) Addr() net.Addr {
	if n.ln == nil {
		return nil
	}
	return n.ln.Addr()
}

// Do runs f on the event loop with the engine and waits for it.
func (n *Node) Do(f func(e *engine.Engine)) error {
	done := make(chan struct{})
	select {
	case n.events <- func() { f(n.eng); close(done) }:
	case <-n.closed:
		return errors.New("tcpnode: closed")
	}
	select {
	case <-done:
		return nil
	case <-n.closed:
		return errors.New("tcpnode: closed")
	}
}

// Connect dials a node (the server partner, typically).
func (n *Node) Connect(addr string) {
	n.post(func() { n.dial(wire.Candidate{Addr: addr}) })
}

// Close says goodbye, closes every connection and stops.
func (n *Node) Close() {
	select {
	case <-n.closed:
		return
	default:
	}
	_ = n.Do(func(e *engine.Engine) { e.Close() })
	time.Sleep(20 * time.Millisecond) // let the goodbyes out
	n.cancel()
	if n.ln != nil {
		n.ln.Close()
	}
	n.wg.Wait()
}

func (n *Node) post(f func()) {
	select {
	case n.events <- f:
	case <-n.ctx.Done():
	}
}

func (n *Node) loop() {
	defer n.wg.Done()
	defer close(n.closed)
	t := time.NewTicker(n.Tick)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			for _, c := range n.conns {
				c.close()
			}
			return
		case f := <-n.events:
			f()
		case <-t.C:
			n.eng.Tick()
			n.keepServer()
		}
	}
}

// HandOff gives the node an inbound connection whose Hello the caller has
// already read with r (a listener shared by several streams dispatches by
// the Hello's stream). The node owns nc from then on.
func (n *Node) HandOff(nc net.Conn, r *wire.Reader, hello *wire.Hello) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.handshake(nc, true, 0, r, hello, nil)
	}()
}

func (n *Node) accept() {
	defer n.wg.Done()
	for {
		nc, err := n.ln.Accept()
		if err != nil {
			if n.ctx.Err() != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.handshake(nc, true, 0, nil, nil, nil)
		}()
	}
}

func (n *Node) dial(c wire.Candidate) { n.dialThen(c, nil) }

// dialThen dials c; done, when set, runs on the event loop once the
// attempt is over (connected or failed).
func (n *Node) dialThen(c wire.Candidate, done func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if done != nil {
			defer n.post(done)
		}
		nc, err := n.dialConn(c)
		if err != nil {
			n.post(func() { n.eng.DialFailed(c.Peer) })
			if n.OnAdmitError != nil && c.Addr == n.Server {
				n.OnAdmitError(c.Addr, err)
			}
			n.Log.Debug("dial failed", "addr", c.Addr, "err", err)
			return
		}
		n.handshake(nc, false, c.Peer, nil, nil, nil)
	}()
}

// handshake exchanges Hellos, lets the engine admit the connection and
// then runs its reader. report, when set, is told once whether the
// connection was admitted (nil) or why not, before the reader runs.
func (n *Node) handshake(nc net.Conn, inbound bool, want wire.PeerID, r *wire.Reader, theirs *wire.Hello,
	report func(error)) {
	fail := func(err error) {
		if report != nil {
			report(err)
		}
		if n.OnAdmitError != nil {
			n.OnAdmitError(nc.RemoteAddr().String(), err)
		}
		n.Log.Debug("handshake failed", "remote", nc.RemoteAddr().String(), "err", err)
		nc.Close()
		if !inbound {
			n.post(func() { n.eng.DialFailed(want) })
		}
	}
	// The dialler speaks first; the acceptor answers with its own Hello
	// only after admitting the dialler, or with a Reject.
	var hello *wire.Hello
	if err := n.Do(func(e *engine.Engine) { hello = e.Hello() }); err != nil {
		fail(err)
		return
	}
	if !inbound {
		nc = n.delayed(nc, nc.RemoteAddr().String())
	}
	_ = nc.SetDeadline(time.Now().Add(n.HandshakeTimeout))
	if !inbound {
		if _, err := nc.Write(wire.Marshal(hello)); err != nil {
			fail(fmt.Errorf("send hello: %w", err))
			return
		}
	}
	if theirs == nil {
		var err error
		r, theirs, err = ReadHello(nc)
		if err != nil {
			fail(err)
			return
		}
	}
	if inbound {
		theirs.ListenAddr = dialableAddr(theirs.ListenAddr, nc.RemoteAddr())
		nc = n.delayed(nc, theirs.ListenAddr)
	}
	if want != 0 && theirs.Peer != want {
		fail(fmt.Errorf("dialled %d, reached %d", want, theirs.Peer))
		return
	}
	var admitErr error
	if err := n.Do(func(e *engine.Engine) {
		if len(n.conns) >= n.MaxConns {
			n.counters.FullRefusals.Add(1)
			admitErr = fmt.Errorf("%w: %d connections", engine.ErrFull, len(n.conns))
			return
		}
		admitErr = e.Admit(theirs, inbound)
	}); err != nil {
		nc.Close()
		return
	}
	if admitErr != nil {
		reason := wire.RejectFull
		switch {
		case errors.Is(admitErr, engine.ErrAuth):
			reason = wire.RejectAuth
		case errors.Is(admitErr, engine.ErrBanned):
			reason = wire.RejectBanned
		case errors.Is(admitErr, engine.ErrProtocol):
			reason = wire.RejectVersion
		}
		_, _ = nc.Write(wire.Marshal(&wire.Reject{Reason: reason}))
		fail(admitErr)
		return
	}
	if inbound {
		if _, err := nc.Write(wire.Marshal(hello)); err != nil {
			fail(fmt.Errorf("send hello: %w", err))
			return
		}
	}
	_ = nc.SetDeadline(time.Time{})
	c := &conn{id: theirs.Peer, nc: nc, idle: n.IdleTimeout, wake: make(chan struct{}, 1), done: make(chan struct{})}
	if theirs.Role == wire.RoleServer {
		c.idle = n.ServerIdleTimeout
	}
	registered := false
	if err := n.Do(func(e *engine.Engine) {
		if _, dup := n.conns[c.id]; dup {
			return
		}
		n.conns[c.id] = c
		n.counters.Conns.Add(1)
		registered = true
		e.Connected(theirs, !inbound)
	}); err != nil || !registered {
		nc.Close()
		if report != nil {
			report(errors.New("tcpnode: duplicate connection or closed"))
		}
		return
	}
	if report != nil {
		report(nil)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.writer(c)
	}()
	n.reader(c, r)
}

// ReadHello reads the first frame of a connection, which must be a Hello
// (at most 64 KiB); a Reject becomes a *RejectedError. The returned reader
// goes on with the connection's later frames.
func ReadHello(nc net.Conn) (*wire.Reader, *wire.Hello, error) {
	// Buffered: a frame costs one read(2) for its header, type and body
	// together, and a burst of small control messages one for all (three
	// each unbuffered: 10% of a coop-peer's CPU in the real swarm bench).
	// Large bodies bypass the buffer; it is the same for every connection,
	// so what a remote sends still costs only what it sent.
	r := wire.NewReader(bufio.NewReaderSize(nc, readBuffer))
	r.MaxFrame = 64 << 10 // a Hello is small
	m, _, err := r.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("read hello: %w", err)
	}
	r.MaxFrame = 0
	switch m := m.(type) {
	case *wire.Hello:
		return r, m, nil
	case *wire.Reject:
		return nil, nil, &RejectedError{Reason: m.Reason, Addr: m.Addr}
	default:
		return nil, nil, fmt.Errorf("expected Hello, got %v", m.Type())
	}
}

// dialable makes an advertised listen address dialable by others: a
// missing or unspecified host ("[::]:7000", ":7000") becomes the address
// the connection came from.
func dialable(listen string, remote net.Addr) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || listen == "" {
		return listen
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return listen
	}
	ta, ok := remote.(*net.TCPAddr)
	if !ok {
		return listen
	}
	return net.JoinHostPort(ta.IP.String(), port)
}

func (n *Node) reader(c *conn, r *wire.Reader) {
	lim := rate.NewLimiter(rate.Limit(n.MsgRate), max(1, n.MsgRate/2))
	for {
		if !lim.Allow() {
			n.counters.Throttled.Add(1)
			if err := lim.Wait(n.ctx); err != nil {
				c.close()
				return
			}
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(c.idle))
		m, _, err := r.Read()
		if err != nil {
			if n.ctx.Err() == nil {
				n.Log.Debug("connection closed", "peer", c.id, "err", err)
			}
			c.close()
			n.post(func() {
				if n.conns[c.id] == c {
					delete(n.conns, c.id)
					n.counters.Conns.Add(-1)
					c.drain()
					n.eng.Disconnected(c.id)
				}
			})
			return
		}
		n.post(func() {
			if n.conns[c.id] == c {
				n.eng.Receive(c.id, m)
			}
		})
	}
}

func (n *Node) writer(c *conn) {
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		}
		for {
			c.mu.Lock()
			if len(c.queue) == 0 {
				c.mu.Unlock()
				break
			}
			frame := c.queue[0]
			c.queue = c.queue[1:]
			c.mu.Unlock()
			// A write that makes no progress for StallTimeout means a
			// stopped receiver: close it, its queue only hurts itself.
			_ = c.nc.SetWriteDeadline(time.Now().Add(n.StallTimeout))
			_, err := c.nc.Write(frame)
			c.mu.Lock()
			c.queued = max(0, c.queued-len(frame))
			c.mu.Unlock()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && !c.slow.Swap(true) {
					n.counters.SlowDisconnects.Add(1)
					n.slowLog.Do(func() { n.Log.Warn("partner stalled, disconnecting (logged once per 10 s)", "peer", c.id) })
				}
				c.close()
				return
			}
		}
	}
}

func (c *conn) close() {
	c.once.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

// drain empties the queue.
func (c *conn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queue, c.queued = nil, 0
}

// env is the engine.Env of a Node; its methods run on the event loop.
type env Node

func (e *env) Now() time.Time   { return time.Now() }
func (e *env) Rand() *rand.Rand { return e.rng }

func (e *env) UploadBacklog() int {
	total := 0
	for _, c := range e.conns {
		c.mu.Lock()
		total += c.queued
		c.mu.Unlock()
	}
	return total
}

// Backlog implements engine.ConnBacklog: the bytes queued for one
// connection, so a stopped receiver stalls only itself.
func (e *env) Backlog(to wire.PeerID) int {
	c := e.conns[to]
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued
}

func (e *env) Send(to wire.PeerID, m wire.Message) {
	c := e.conns[to]
	if c == nil || c.slow.Load() {
		return
	}
	frame := wire.Marshal(m)
	c.mu.Lock()
	over := c.queued+len(frame) > e.MaxQueue
	if !over {
		c.queue = append(c.queue, frame)
		c.queued += len(frame)
	}
	c.mu.Unlock()
	if over {
		if !c.slow.Swap(true) {
			e.counters.SlowDisconnects.Add(1)
			e.slowLog.Do(func() { e.Log.Warn("partner too slow, disconnecting (logged once per 10 s)", "peer", to) })
		}
		c.close()
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (e *env) Dial(c wire.Candidate) { (*Node)(e).dial(c) }

func (e *env) Disconnect(to wire.PeerID) {
	if c := e.conns[to]; c != nil {
		c.close()
	}
}
