//go:build js && wasm

package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"syscall/js"
	"time"

	"golang.org/x/time/rate"

	"github.com/coopstreaming/coop/peer/wasm/frames"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// Limits of the driver; those of tcpnode where they mean the same.
const (
	tickEvery        = 50 * time.Millisecond
	handshakeTimeout = 5 * time.Second
	dialTimeout      = 15 * time.Second // a session not open in 15 s is abandoned (docs/webrtc.md)
	maxQueue         = 8 << 20          // bytes queued for one connection before it is closed as too slow
	sendHigh         = 1 << 20          // write while the channel buffers less than this
	msgRate          = 1000             // messages per second taken from one connection
	maxConns         = 64
	serverRetry      = time.Second
	serverRetryMax   = 10 * time.Second
)

// serverName is how the page names the server partner in dial and open.
const serverName = "server"

// conn is one channel handed in by the page.
type conn struct {
	handle   int
	js       js.Value
	want     wire.PeerID // the peer dialled (0: inbound or the server)
	server   bool        // dialled as the server partner
	outbound bool
	opened   time.Time
	id       wire.PeerID // set once admitted
	up       bool        // admitted: the engine knows it
	closed   bool
	split    frames.Splitter
	lim      *rate.Limiter
	queue    [][]byte // pieces waiting for the channel's buffer to drain
	queued   int
	// Media payload bytes received from and sent to this partner.
	mediaIn, mediaOut uint64
}

// maxDeparted bounds the per-partner byte totals kept for partners gone.
const maxDeparted = 256

// sourceBytes is one partner's media bytes, for the page's "bytes by
// source".
type sourceBytes struct {
	Peer     string `json:"peer"`
	Server   bool   `json:"server"`
	BytesIn  uint64 `json:"bytesIn"`
	BytesOut uint64 `json:"bytesOut"`
	Gone     bool   `json:"gone,omitempty"`
}

// driver is the engine's Env in the page. Everything runs on the page's
// event loop, one call at a time (run).
type driver struct {
	done chan struct{}

	eng  *engine.Engine
	host js.Value
	rng  *rand.Rand
	play *player

	conns   map[int]*conn
	byPeer  map[wire.PeerID]*conn
	next    int
	dialing map[wire.PeerID]time.Time // peer dials asked of the page
	failed  []wire.PeerID             // dial failures for the engine, at the next run

	departed []sourceBytes // totals of partners gone, newest last (at most maxDeparted)

	serverDialAt   time.Time // when the server dial was asked (zero: none pending)
	serverNextDial time.Time
	serverBackoff  time.Duration

	queue   []func()
	running bool
	ticker  js.Func
	timer   js.Value
	u8      js.Value
}

func newDriver() *driver {
	return &driver{
		done: make(chan struct{}), conns: make(map[int]*conn), byPeer: make(map[wire.PeerID]*conn),
		dialing: make(map[wire.PeerID]time.Time), u8: js.Global().Get("Uint8Array"),
	}
}

// do queues f and runs the queue unless a call is already running it.
func (d *driver) do(f func()) {
	d.queue = append(d.queue, f)
	if d.running {
		return
	}
	d.running = true
	defer func() { d.running = false }()
	for len(d.queue) > 0 {
		f := d.queue[0]
		d.queue = d.queue[1:]
		d.safely(f)
	}
}

// safely runs f, turning a panic into a log line: one bad event must not
// kill the tab's peer.
func (d *driver) safely(f func()) {
	defer func() {
		if r := recover(); r != nil {
			d.log("error", fmt.Sprintf("driver panic: %v", r))
		}
	}()
	f()
}

func (d *driver) log(level, msg string) {
	if d.host.Type() == js.TypeObject {
		if f := d.host.Get("log"); f.Type() == js.TypeFunction {
			f.Invoke(level, msg)
			return
		}
	}
	js.Global().Get("console").Call("log", "coop: "+level+": "+msg)
}

// --- JS entry points ---

func (d *driver) jsStart(args []js.Value) any {
	if len(args) < 1 || args[0].Type() != js.TypeObject {
		return "start(opts): opts missing"
	}
	if d.eng != nil {
		return "already started"
	}
	o := args[0]
	str := func(k string) string {
		if v := o.Get(k); v.Type() == js.TypeString {
			return v.String()
		}
		return ""
	}
	num := func(k string) float64 {
		if v := o.Get(k); v.Type() == js.TypeNumber {
			return v.Float()
		}
		return 0
	}
	cfg := engine.Config{Role: wire.RolePeer, Stream: str("stream"), Token: str("token"), ListenAddr: "rtc:",
		UploadCap: num("uploadCap"), PlayoutDelay: time.Duration(num("playoutDelayMs")) * time.Millisecond}
	if p := str("peer"); p != "" {
		id, err := parsePeer(p)
		if err != nil {
			return err.Error()
		}
		cfg.ID = id
	}
	for cfg.ID == 0 {
		cfg.ID = wire.PeerID(rand.Uint64())
	}
	if k := str("streamKey"); k != "" {
		key, err := hex.DecodeString(k)
		if err != nil || len(key) != wire.StreamKeySize {
			return "streamKey: 64 hex digits expected"
		}
		cfg.StreamKey = key
	}
	if cfg.Stream == "" {
		return "stream missing"
	}
	d.host = o.Get("host")
	d.rng = rand.New(rand.NewPCG(rand.Uint64(), uint64(cfg.ID)))
	d.play = newPlayer(d, int(num("playLayers")))
	cfg.OnPlay = d.play.onPlay
	cfg.OnHeader = d.play.onHeader
	cfg.OnRestart = d.play.onRestart
	d.do(func() {
		d.eng = engine.New(cfg, d)
		d.ticker = js.FuncOf(func(js.Value, []js.Value) any { d.do(d.tick); return nil })
		d.timer = js.Global().Call("setInterval", d.ticker, tickEvery.Milliseconds())
		d.tick()
	})
	return formatPeer(cfg.ID)
}

func (d *driver) jsOpen(args []js.Value) any {
	if len(args) < 3 || args[0].Type() != js.TypeObject {
		return -1
	}
	d.next++
	c := &conn{handle: d.next, js: args[0], outbound: args[2].Truthy(), opened: time.Now(),
		lim: rate.NewLimiter(msgRate, msgRate/2)}
	c.split.MaxFrame = 64 << 10 // the first frame is a Hello (or a Reject)
	switch p := args[1].String(); {
	case p == serverName:
		c.server = true
	case p != "":
		id, err := parsePeer(p)
		if err != nil {
			c.js.Call("close")
			return -1
		}
		c.want = id
	}
	d.do(func() {
		if d.eng == nil || len(d.conns) >= maxConns {
			c.js.Call("close")
			d.failDial(c)
			return
		}
		d.conns[c.handle] = c
		delete(d.dialing, c.want)
		if c.outbound {
			d.write(c, wire.Marshal(d.eng.Hello()))
		}
	})
	return c.handle
}

func (d *driver) jsMessage(args []js.Value) any {
	if len(args) < 2 {
		return nil
	}
	h := args[0].Int()
	v := args[1]
	n := v.Get("byteLength").Int()
	if n > frames.MaxMessage {
		d.do(func() { d.drop(d.conns[h], frames.ErrMessageTooLarge) })
		return nil
	}
	b := make([]byte, n)
	js.CopyBytesToGo(b, v)
	d.do(func() {
		c := d.conns[h]
		if c == nil || c.closed {
			return
		}
		if err := c.split.Push(b); err != nil {
			d.drop(c, err)
			return
		}
		d.read(c)
	})
	return nil
}

func (d *driver) jsClosed(args []js.Value) any {
	if len(args) < 1 {
		return nil
	}
	h := args[0].Int()
	d.do(func() { d.gone(d.conns[h]) })
	return nil
}

func (d *driver) jsDrained(args []js.Value) any {
	if len(args) < 1 {
		return nil
	}
	h := args[0].Int()
	d.do(func() {
		if c := d.conns[h]; c != nil {
			d.flush(c)
		}
	})
	return nil
}

func (d *driver) jsDialFailed(args []js.Value) any {
	if len(args) < 1 {
		return nil
	}
	p := args[0].String()
	d.do(func() {
		if p == serverName {
			d.serverFailed()
			return
		}
		if id, err := parsePeer(p); err == nil {
			if _, ok := d.dialing[id]; ok {
				delete(d.dialing, id)
				d.failed = append(d.failed, id)
			}
		}
	})
	return nil
}

func (d *driver) jsStop([]js.Value) any {
	d.do(func() {
		if d.eng != nil {
			d.eng.Close()
		}
		for _, c := range d.conns {
			c.js.Call("close")
		}
		if d.timer.Type() != js.TypeUndefined {
			js.Global().Call("clearInterval", d.timer)
		}
	})
	return nil
}

// --- connections ---

// read takes the frames that are whole, within the connection's message
// rate; the rest wait in the splitter for the next tick.
func (d *driver) read(c *conn) {
	for !c.closed && c.split.Buffered() > 0 {
		if c.up && !c.lim.Allow() {
			return
		}
		m, ok, err := c.split.Next()
		if err != nil {
			d.drop(c, err)
			return
		}
		if !ok {
			return
		}
		if !c.up {
			d.handshake(c, m)
			continue
		}
		if dm, isData := m.(*wire.Data); isData {
			c.mediaIn += uint64(len(dm.Payload))
		}
		d.eng.Receive(c.id, m)
	}
}

// handshake handles a connection's first frame: the dialler's Hello
// (inbound) or the answer to ours (outbound), as tcpnode does.
func (d *driver) handshake(c *conn, m wire.Message) {
	theirs, ok := m.(*wire.Hello)
	if !ok {
		if rej, isRej := m.(*wire.Reject); isRej {
			d.drop(c, fmt.Errorf("refused: reason %d", rej.Reason))
		} else {
			d.drop(c, fmt.Errorf("expected Hello, got %v", m.Type()))
		}
		return
	}
	switch {
	case c.want != 0 && theirs.Peer != c.want:
		d.drop(c, fmt.Errorf("dialled %s, reached %s", formatPeer(c.want), formatPeer(theirs.Peer)))
		return
	case c.server && theirs.Role != wire.RoleServer:
		d.drop(c, errors.New("dialled the server, reached a peer"))
		return
	case !c.server && theirs.Role == wire.RoleServer:
		d.drop(c, errors.New("a server on a peer connection"))
		return
	}
	if _, dup := d.byPeer[theirs.Peer]; dup {
		d.drop(c, errors.New("duplicate connection"))
		return
	}
	if err := d.eng.Admit(theirs, !c.outbound); err != nil {
		if !c.outbound {
			d.write(c, wire.Marshal(&wire.Reject{Reason: rejectReason(err)}))
		}
		d.drop(c, err)
		return
	}
	if !c.outbound {
		d.write(c, wire.Marshal(d.eng.Hello()))
	}
	c.id, c.up = theirs.Peer, true
	c.split.MaxFrame = 0
	d.byPeer[c.id] = c
	if c.server {
		d.serverDialAt, d.serverBackoff = time.Time{}, 0
	}
	d.eng.Connected(theirs, c.outbound)
}

func rejectReason(err error) uint8 {
	switch {
	case errors.Is(err, engine.ErrAuth):
		return wire.RejectAuth
	case errors.Is(err, engine.ErrBanned):
		return wire.RejectBanned
	case errors.Is(err, engine.ErrProtocol):
		return wire.RejectVersion
	}
	return wire.RejectFull
}

// write queues an encoded frame and sends what the channel takes.
func (d *driver) write(c *conn, frame []byte) {
	if c.closed {
		return
	}
	if c.queued+len(frame) > maxQueue {
		d.drop(c, errors.New("partner too slow: send queue full"))
		return
	}
	c.queue = append(c.queue, frames.Pieces(frame)...)
	c.queued += len(frame)
	d.flush(c)
}

// flush sends queued pieces while the channel buffers less than sendHigh;
// the page calls drained when its buffer runs low again.
func (d *driver) flush(c *conn) {
	for len(c.queue) > 0 && !c.closed {
		if c.js.Get("bufferedAmount").Int() >= sendHigh {
			return
		}
		p := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		c.queued -= len(p)
		a := d.u8.New(len(p))
		js.CopyBytesToJS(a, p)
		if r := c.js.Call("send", a); r.Type() == js.TypeBoolean && !r.Bool() {
			d.drop(c, errors.New("channel refused a message"))
			return
		}
	}
}

// drop closes a connection for cause.
func (d *driver) drop(c *conn, err error) {
	if c == nil || c.closed {
		return
	}
	d.log("debug", fmt.Sprintf("closing connection %d (%s): %v", c.handle, formatPeer(c.id), err))
	c.js.Call("close")
	d.gone(c)
}

// gone forgets a connection that closed.
func (d *driver) gone(c *conn) {
	if c == nil || c.closed {
		return
	}
	c.closed = true
	c.queue, c.queued = nil, 0
	delete(d.conns, c.handle)
	if c.up {
		delete(d.byPeer, c.id)
		d.departed = append(d.departed, c.source(true))
		if len(d.departed) > maxDeparted {
			d.departed = d.departed[len(d.departed)-maxDeparted:]
		}
		d.eng.Disconnected(c.id)
	} else {
		d.failDial(c)
	}
}

func (c *conn) source(gone bool) sourceBytes {
	return sourceBytes{Peer: formatPeer(c.id), Server: c.server, BytesIn: c.mediaIn, BytesOut: c.mediaOut, Gone: gone}
}

// failDial reports a dial that ended before its handshake.
func (d *driver) failDial(c *conn) {
	if !c.outbound {
		return
	}
	if c.server {
		d.serverFailed()
	} else if c.want != 0 {
		delete(d.dialing, c.want)
		d.failed = append(d.failed, c.want)
	}
}

func (d *driver) serverFailed() {
	d.serverDialAt = time.Time{}
	d.serverBackoff = min(max(2*d.serverBackoff, serverRetry), serverRetryMax)
	d.serverNextDial = time.Now().Add(d.serverBackoff)
}

// tick runs the engine's periodic work and the driver's timeouts.
func (d *driver) tick() {
	if d.eng == nil {
		return
	}
	now := time.Now()
	for _, id := range d.failed {
		d.eng.DialFailed(id)
	}
	d.failed = d.failed[:0]
	for id, at := range d.dialing {
		if now.Sub(at) > dialTimeout {
			delete(d.dialing, id)
			d.eng.DialFailed(id)
		}
	}
	for _, c := range d.conns {
		if !c.up && now.Sub(c.opened) > handshakeTimeout {
			d.drop(c, errors.New("handshake timeout"))
			continue
		}
		if c.split.Buffered() > 0 {
			d.read(c)
		}
		if len(c.queue) > 0 { // a WebSocket has no bufferedamountlow event
			d.flush(c)
		}
	}
	if !d.eng.HasServer() && d.serverDialAt.IsZero() && !now.Before(d.serverNextDial) && !d.serverConnecting() {
		d.serverDialAt = now
		d.hostCall("dial", serverName)
	} else if !d.serverDialAt.IsZero() && now.Sub(d.serverDialAt) > dialTimeout && !d.serverConnecting() {
		d.serverFailed()
	}
	d.eng.Tick()
}

// serverConnecting tells whether a server channel is open and in its
// handshake.
func (d *driver) serverConnecting() bool {
	for _, c := range d.conns {
		if c.server {
			return true
		}
	}
	return false
}

func (d *driver) hostCall(name string, args ...any) {
	if d.host.Type() != js.TypeObject {
		return
	}
	if f := d.host.Get(name); f.Type() == js.TypeFunction {
		f.Invoke(args...)
	}
}

// --- engine.Env ---

// Now implements engine.Env.
func (d *driver) Now() time.Time { return time.Now() }

// Rand implements engine.Env.
func (d *driver) Rand() *rand.Rand { return d.rng }

// Send implements engine.Env.
func (d *driver) Send(to wire.PeerID, m wire.Message) {
	if c := d.byPeer[to]; c != nil {
		if dm, isData := m.(*wire.Data); isData {
			c.mediaOut += uint64(len(dm.Payload))
		}
		d.write(c, wire.Marshal(m))
	}
}

// UploadBacklog implements engine.Env: bytes queued in the driver and
// in the channels, every connection.
func (d *driver) UploadBacklog() int {
	n := 0
	for _, c := range d.byPeer {
		n += d.Backlog(c.id)
	}
	return n
}

// Backlog implements engine.ConnBacklog.
func (d *driver) Backlog(to wire.PeerID) int {
	c := d.byPeer[to]
	if c == nil || c.closed {
		return 0
	}
	return c.queued + c.js.Get("bufferedAmount").Int()
}

// Dial implements engine.Env: a WebRTC candidate ("rtc:..." address) is
// asked of the page; a TCP-only one fails (a tab cannot dial TCP).
func (d *driver) Dial(c wire.Candidate) {
	if !strings.HasPrefix(c.Addr, "rtc:") || c.Peer == 0 || len(d.dialing) >= maxConns {
		d.failed = append(d.failed, c.Peer)
		return
	}
	d.dialing[c.Peer] = time.Now()
	d.hostCall("dial", formatPeer(c.Peer))
}

// Disconnect implements engine.Env.
func (d *driver) Disconnect(to wire.PeerID) {
	if c := d.byPeer[to]; c != nil {
		// The engine may be iterating its partners: forget the
		// connection after this call.
		c.js.Call("close")
		d.queue = append(d.queue, func() { d.gone(c) })
	}
}

// --- stats ---

// pageStats is what stats() returns to the page (and tests read).
type pageStats struct {
	Peer            string  `json:"peer"`
	ServerConnected bool    `json:"serverConnected"`
	Partners        int     `json:"partners"`
	Layers          int     `json:"layers"`
	MaxLayers       int     `json:"maxLayers"`
	Started         bool    `json:"started"`
	StartupDelayMs  int64   `json:"startupDelayMs"`
	Due             uint64  `json:"due"`
	BaseOnTime      uint64  `json:"baseOnTime"`
	Continuity      float64 `json:"continuity"`
	FromServer      uint64  `json:"usefulFromServer"`
	FromPeers       uint64  `json:"usefulFromPeers"`
	Offload         float64 `json:"offload"`
	MediaBytesOut   uint64  `json:"mediaBytesOut"`
	BadData         uint64  `json:"badData"`
	// Sources are the media bytes by partner, connected and gone.
	Sources []sourceBytes `json:"sources"`
	// GoHeap is the Go heap in use and GoSys the memory the Go runtime
	// holds (the wasm linear memory it grew to), bytes.
	GoHeap uint64 `json:"goHeapBytes"`
	GoSys  uint64 `json:"goSysBytes"`
	player
}

func (d *driver) jsStats([]js.Value) any {
	var s pageStats
	d.do(func() {
		if d.eng == nil {
			return
		}
		st := d.eng.Stats()
		s.Peer = formatPeer(d.eng.ID())
		s.ServerConnected = d.eng.HasServer()
		s.Partners = len(d.eng.Partners())
		if s.ServerConnected {
			s.Partners--
		}
		s.Layers, s.MaxLayers = d.eng.Layers(), st.Layers
		s.Started, s.StartupDelayMs = st.Started, st.StartupDelay.Milliseconds()
		s.Due, s.BaseOnTime, s.Continuity = st.Due, st.BaseOnTime, st.Continuity()
		s.FromServer, s.FromPeers, s.Offload = st.UsefulFromServer, st.UsefulFromPeers, st.Offload()
		s.MediaBytesOut, s.BadData = st.MediaBytesOut, st.BadData
		s.player = d.play.snapshot()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s.GoHeap, s.GoSys = ms.HeapAlloc, ms.Sys
		s.Sources = append(s.Sources, d.departed...)
		for _, c := range d.byPeer {
			s.Sources = append(s.Sources, c.source(false))
		}
	})
	b, _ := json.Marshal(s)
	return string(b)
}

func formatPeer(id wire.PeerID) string { return fmt.Sprintf("%016x", uint64(id)) }

func parsePeer(s string) (wire.PeerID, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("peer id %q: 16 hex digits expected", s)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("peer id %q: 16 hex digits expected", s)
	}
	return wire.PeerID(v), nil
}
