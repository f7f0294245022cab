package engine

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"github.com/coopstreaming/coop/peerproto/buffermap"
	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/monitor"
	"github.com/coopstreaming/coop/peerproto/playback"
	"github.com/coopstreaming/coop/peerproto/qos"
	"github.com/coopstreaming/coop/peerproto/scheduler"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// newQoS is a peer's layer control: slow start (base layer first, one
// more every ramp step) unless QoS is off, where every layer is fetched
// from the start (the ablation switches off QoS, and only QoS).
func newQoS(cfg Config) *qos.Controller {
	c := cfg.QoS
	c.SlowStart = !cfg.DisableQoS
	return qos.New(c, cfg.Layers)
}

// Errors returned by Admit.
var (
	ErrBanned   = errors.New("engine: banned")
	ErrFull     = errors.New("engine: partner list full")
	ErrAuth     = errors.New("engine: bad join token")
	ErrProtocol = errors.New("engine: protocol mismatch")
)

type chunkKey struct {
	seq   uint64
	layer int
}

// partner is a connected node.
type partner struct {
	id         wire.PeerID
	view       *known // how candidate ranking and the Tracker see it
	hello      wire.Hello
	server     bool
	outbound   bool
	since      time.Time
	lastHeard  time.Time
	bm         *buffermap.Map
	rtt        monitor.RTT
	pingNonce  uint64
	pingAt     time.Time
	lastPinged time.Time
	recv       *monitor.Meter // media bytes received from it
	sent       *monitor.Meter // media bytes sent to it
	inflight   map[chunkKey]*request
	inBytes    int
	// inLayer is inBytes per layer: a partner serves lower layers
	// first, so a chunk waits only behind the bytes of its layer and
	// those below.
	inLayer [wire.MaxLayers]int
	// tput estimates the partner's delivery capacity to us in bytes/s:
	// chunk size over its service time (from the later of the request
	// and the previous delivery), so it does not shrink when we ask little.
	tput        float64
	lastArrival time.Time
	busyUntil   time.Time
	// busyStreak counts the server's busy refusals since it last
	// delivered: each doubles the back-off (serverBackoff).
	busyStreak int
	reported   wire.Report
	// upTo is the newest segment the server announced with HaveUpTo
	// (valid when upToSet).
	upTo    uint64
	upToSet bool
	// probe is the chunk the server asked of an accused partner, at
	// probeAt (zero: none outstanding).
	probe   chunkKey
	probeAt time.Time
	// hops is the partner's advertised distance from the server per
	// sub-stream; childLayers the layers we push it per sub-stream (its
	// subscriptions to us) and childCost their admitted upload (push.go).
	hops        [wire.MaxSubstreams]uint8
	childLayers [wire.MaxSubstreams]uint8
	childCost   [wire.MaxSubstreams]float64
	// childCharged is how many of childLayers count against our push
	// capacity (push.Admit); the pushes of the others are best effort.
	childCharged [wire.MaxSubstreams]uint8
	// manSent remembers (as seq+1) the segments whose manifest was sent
	// to this partner with a pushed piece, manSentAt the next slot.
	manSent   [manifestRing]uint64
	manSentAt int
}

// forget takes a request out of the partner's in-flight set.
func (p *partner) forget(k chunkKey, r *request) {
	delete(p.inflight, k)
	p.inBytes -= r.size
	if k.layer < len(p.inLayer) {
		p.inLayer[k.layer] -= r.size
	}
}

type request struct {
	at      time.Time
	expires time.Time
	size    int
	// last is the last piece the supplier will send (the highest one
	// the requester did not hold; -1 before the manifest is known: the
	// manifest's last piece).
	last int
}

// seg is a held segment.
type seg struct {
	rawManifest []byte
	man         *manifest.Manifest
	chunks      [][]byte // whole layer chunks held
	parts       []*partial
	layers      int
	firstSeen   time.Time // when the server was first seen holding it
	seed        bool      // the server asked this node to fetch it now
	added       time.Time // server: when the segment was added
}

// Engine is one node.
type Engine struct {
	cfg Config
	env Env

	partners map[wire.PeerID]*partner
	ordered  []*partner // partners sorted by ID, for deterministic iteration
	serverID wire.PeerID
	bans     *banList

	// epoch is the stream instance (server: chosen by the driver; peer:
	// the server's, from its Welcome, once epochKnown).
	epoch      uint64
	epochKnown bool
	keyPinned  bool // the stream key came from the configuration

	segs     map[uint64]*seg
	have     *buffermap.Map
	liveEdge uint64
	haveEdge bool
	// announcedEdge is the newest segment the server itself announced
	// (peer): the server's holdings are extrapolated at most
	// extrapolateAhead past it, and not to notFoundAt or later (a
	// segment the server said it does not hold, notFoundSet).
	announcedEdge uint64
	notFoundAt    uint64
	notFoundSet   bool
	// streamLayers is the layer count of the server's newest announced
	// segment (0: none yet).
	streamLayers int
	// impliedEdge is the newest segment the server holds by its peers'
	// announcements (impliedAtServer; peer).
	impliedEdge uint64
	header      []byte
	segDur      time.Duration

	joinedAt time.Time
	qos      *qos.Controller // the layers fetched (peer) and reported

	pendingHaves []wire.HaveEntry // chunks received since the last tick, to announce
	queue        []servReq        // upload: requests admitted, not yet served
	limiter      *rate.Limiter    // upload: the cap's token bucket

	lastBM, lastPing time.Time
	pingRound        int
	nonce            uint64

	stats Stats
	down  *monitor.Meter
	up    *monitor.Meter

	peerState   // zero on the server
	serverState // zero on a peer
	push        pushState
}

// peerState is what only a peer keeps: its playback clock and playhead,
// scheduling, partner refill and download-capacity estimate (peer.go).
type peerState struct {
	clock      playback.Clock
	playing    bool
	started    bool // first segment played
	startSeq   uint64
	playhead   uint64
	chunkSizes [wire.MaxLayers]float64 // mean chunk size per layer
	seenLayer  [wire.MaxLayers]bool

	sched   scheduler.Scheduler
	assigns []scheduler.Assignment
	views   []scheduler.Partner
	viewIDs []wire.PeerID

	candidates map[wire.PeerID]wire.Candidate
	dialing    map[wire.PeerID]time.Time
	lastAsked  time.Time
	// lastAskedServer is when the server was last asked for candidates.
	lastAskedServer time.Time

	lastManage, lastReport, lastSchedule time.Time

	// downCap estimates the download capacity: the peak of recent
	// samples of bytes over inter-arrival time of media that arrived
	// while other requests were outstanding (the link was busy).
	downCap     monitor.Peak
	lastArrival time.Time
	busySince   time.Time
}

// serverState is what only the server partner keeps: its seeds, delayed
// announcements, measured stream rate and control budget (server.go).
type serverState struct {
	departed     wire.Report          // byte totals of departed peers
	seeds        map[wire.PeerID]bool // peers told of fresh segments first
	delayed      []delayedHave        // announcements to non-seeds
	segRate      float64              // measured stream rate, bytes/s
	lastSeedPick time.Time
	lastSync     time.Time // the last announcement to every peer
	// ctrlTokens is the control budget in bytes, as of ctrlAt.
	ctrlTokens float64
	ctrlAt     time.Time
}

// New returns a node.
func New(cfg Config, env Env) *Engine {
	cfg = cfg.withDefaults()
	e := &Engine{
		cfg: cfg, env: env,
		partners: make(map[wire.PeerID]*partner),
		bans:     newBanList(),
		segs:     make(map[uint64]*seg),
		have:     buffermap.New(0, cfg.Window, cfg.Layers),
		peerState: peerState{
			candidates: make(map[wire.PeerID]wire.Candidate),
			dialing:    make(map[wire.PeerID]time.Time),
			clock:      playback.Clock{SegmentDuration: cfg.SegmentDuration, PlayoutDelay: cfg.PlayoutDelay},
		},
		serverState: serverState{seeds: make(map[wire.PeerID]bool)},
		segDur:      cfg.SegmentDuration,
		qos:         newQoS(cfg),
		joinedAt:    env.Now(),
		down:        newRateMeter(),
		up:          newRateMeter(),
	}
	if cfg.UploadCap > 0 {
		e.limiter = rate.NewLimiter(rate.Limit(cfg.UploadCap), max(int(cfg.UploadCap/4), 4<<20))
	}
	for l := range e.chunkSizes {
		e.chunkSizes[l] = initialChunkSize
	}
	e.stats.Layers = cfg.Layers
	e.epoch, e.keyPinned = cfg.Epoch, cfg.StreamKey != nil
	e.initPush()
	return e
}

// ID is the node's identity.
func (e *Engine) ID() wire.PeerID { return e.cfg.ID }

// IsServer tells whether the node is the server partner.
func (e *Engine) IsServer() bool { return e.cfg.Role == wire.RoleServer }

// Hello is the handshake message this node sends on every connection.
func (e *Engine) Hello() *wire.Hello {
	h := &wire.Hello{
		Protocol: wire.ProtocolID, Version: wire.Version, Features: wire.FeatureManifest | wire.FeatureLayers,
		Role: e.cfg.Role, Stream: e.cfg.Stream, Peer: e.cfg.ID, ListenAddr: e.cfg.ListenAddr,
		Token: e.cfg.Token, UploadCap: uint64(e.cfg.UploadCap),
	}
	e.stats.ControlBytesOut += uint64(wire.FrameSize(h))
	return h
}

// Admit decides whether to accept a connection whose Hello arrived.
func (e *Engine) Admit(h *wire.Hello, inbound bool) error {
	e.stats.ControlBytesIn += uint64(wire.FrameSize(h))
	if h.Protocol != wire.ProtocolID || h.Version != wire.Version || h.Stream != e.cfg.Stream {
		return fmt.Errorf("%w: %s v%d stream %q", ErrProtocol, h.Protocol, h.Version, h.Stream)
	}
	if e.Banned(h.Peer) {
		return ErrBanned
	}
	if h.Peer == e.cfg.ID {
		return fmt.Errorf("%w: connection to self", ErrProtocol)
	}
	if _, dup := e.partners[h.Peer]; dup {
		return fmt.Errorf("%w: already connected", ErrFull)
	}
	if e.IsServer() {
		return e.admitPeer(h)
	}
	if inbound && h.Role == wire.RolePeer && e.peerPartners() >= e.cfg.MaxPartners {
		return ErrFull
	}
	return nil
}

func (e *Engine) peerPartners() int {
	n := 0
	for _, p := range e.list() {
		if !p.server {
			n++
		}
	}
	return n
}

// Connected registers an admitted connection.
func (e *Engine) Connected(h *wire.Hello, outbound bool) {
	now := e.env.Now()
	delete(e.dialing, h.Peer)
	delete(e.candidates, h.Peer)
	p := &partner{
		id: h.Peer, hello: *h, server: h.Role == wire.RoleServer, outbound: outbound, since: now, lastHeard: now,
		recv: newRateMeter(), sent: newRateMeter(),
		inflight: make(map[chunkKey]*request),
	}
	p.view = &known{p, e}
	for k := range p.hops {
		p.hops[k] = wire.NoHops
	}
	e.partners[h.Peer] = p
	e.ordered = nil
	if p.server {
		e.serverID = h.Peer
	}
	if e.IsServer() {
		e.peerJoined(p)
	} else if !outbound {
		e.send(h.Peer, &wire.Welcome{Peer: e.cfg.ID, SegmentDurationMs: uint32(e.segDur / time.Millisecond),
			LiveEdge: e.liveEdge, Partners: uint16(len(e.partners))})
	}
	e.send(h.Peer, e.have.Encode())
	e.ping(p, now)
	e.helloHops(p)
}

// DialFailed forgets a candidate that could not be reached.
func (e *Engine) DialFailed(id wire.PeerID) {
	delete(e.dialing, id)
	delete(e.candidates, id)
}

// Disconnected forgets a partner.
func (e *Engine) Disconnected(id wire.PeerID) {
	p := e.partners[id]
	if p == nil {
		return
	}
	delete(e.partners, id)
	e.ordered = nil
	e.pushPartnerLeft(p)
	if e.IsServer() {
		e.peerLeft(p)
	}
	if id == e.serverID {
		e.serverID = 0
	}
	e.queue = slices.DeleteFunc(e.queue, func(r servReq) bool { return r.from == id })
}

func (e *Engine) send(to wire.PeerID, m wire.Message) {
	n := wire.FrameSize(m)
	if d, ok := m.(*wire.Data); ok {
		e.stats.MediaBytesOut += uint64(len(d.Payload))
		e.stats.ControlBytesOut += uint64(n - len(d.Payload))
		e.stats.ControlOutByType[wire.TypeData] += uint64(n - len(d.Payload))
	} else {
		if e.IsServer() && e.shed(m, n) {
			e.stats.ControlShed++
			return
		}
		e.stats.ControlBytesOut += uint64(n)
		if t := m.Type(); int(t) < len(e.stats.ControlOutByType) {
			e.stats.ControlOutByType[t] += uint64(n)
		}
	}
	e.env.Send(to, m)
}

// Receive handles one message from a connected node.
func (e *Engine) Receive(from wire.PeerID, m wire.Message) {
	p := e.partners[from]
	if p == nil {
		return
	}
	now := e.env.Now()
	p.lastHeard = now
	if d, ok := m.(*wire.Data); ok {
		e.stats.MediaBytesIn += uint64(len(d.Payload))
		e.stats.ControlBytesIn += uint64(wire.FrameSize(m) - len(d.Payload))
	} else {
		e.stats.ControlBytesIn += uint64(wire.FrameSize(m))
	}
	switch m := m.(type) {
	case *wire.Welcome:
		if p.server && !e.IsServer() && !e.onWelcome(m, now) {
			e.env.Disconnect(from)
			return
		}
	case *wire.BufferMap:
		if p.bm == nil {
			p.bm = buffermap.New(m.Base, e.cfg.Window, e.cfg.Layers)
		}
		p.bm.Advance(m.Base)
		p.bm.Load(m)
		if p.server {
			e.serverHoldings(p, now)
		}
	case *wire.Have:
		e.onHave(p, m, now)
	case *wire.Request:
		e.onRequest(p, m, now)
	case *wire.Cancel:
		e.queue = slices.DeleteFunc(e.queue, func(r servReq) bool {
			return r.from == from && r.seq == m.Seq && r.layer == int(m.Layer)
		})
	case *wire.Data:
		e.onData(p, m, now)
	case *wire.Reject:
		k := chunkKey{m.Seq, int(m.Layer)}
		if r := p.inflight[k]; r != nil {
			p.forget(k, r)
		}
		if m.Reason == wire.RejectBusy {
			p.busyUntil = now.Add(e.busyBackoff(p))
		} else if p.bm != nil {
			p.bm.Clear(m.Seq, int(m.Layer))
			if p.server && m.Seq > e.announcedEdge && (!e.notFoundSet || m.Seq < e.notFoundAt) {
				e.notFoundAt, e.notFoundSet = m.Seq, true // extrapolated too far
			}
		}
	case *wire.GetCandidates:
		e.send(from, &wire.Candidates{List: e.candidatesFor(p, e.candidateListLen(int(m.Max)))})
	case *wire.Candidates:
		for _, c := range m.List {
			if c.Peer != e.cfg.ID && e.partners[c.Peer] == nil && !e.Banned(c.Peer) && len(e.candidates) < 256 {
				e.candidates[c.Peer] = c
			}
		}
	case *wire.Ping:
		e.send(from, &wire.Pong{Nonce: m.Nonce})
	case *wire.Pong:
		if m.Nonce == p.pingNonce && !p.pingAt.IsZero() {
			p.rtt.Add(now.Sub(p.pingAt))
			p.pingAt = time.Time{}
		}
	case *wire.Goodbye:
		e.env.Disconnect(from)
	case *wire.StreamHeader:
		if p.server {
			e.header = m.Header
			if e.cfg.OnHeader != nil {
				e.cfg.OnHeader(m.Header)
			}
		}
	case *wire.Report:
		p.reported = *m
	case *wire.Accuse:
		e.onAccuse(p, m)
	case *wire.Subscribe:
		e.onSubscribe(p, m)
	case *wire.Subscribed:
		e.onSubscribed(p, m, now)
	case *wire.Hops:
		e.onHops(p, m)
	}
}

// Close says goodbye to every partner.
func (e *Engine) Close() {
	for _, p := range e.list() {
		id := p.id
		e.send(id, &wire.Goodbye{Reason: "leaving"})
	}
}

// Tick does the periodic work; drivers call it every 50-100 ms.
func (e *Engine) Tick() {
	now := e.env.Now()
	if e.IsServer() {
		e.flushDelayed(now)
	} else {
		e.fetch(now)
	}
	e.serve(now)
	if len(e.pendingHaves) > 0 {
		msg := &wire.Have{Entries: e.pendingHaves}
		for _, p := range e.list() {
			id := p.id
			if !p.server {
				e.send(id, msg)
			}
		}
		e.pendingHaves = nil
	}
	// The server's holdings are its edge (extrapolated by every peer):
	// it sends its buffer map at connect only.
	if now.Sub(e.lastBM) >= bufferMapInterval && !e.IsServer() {
		e.lastBM = now
		bm := e.have.Encode()
		for _, p := range e.list() {
			id := p.id
			e.send(id, bm)
		}
	}
	if now.Sub(e.lastPing) >= pingInterval {
		e.lastPing = now
		e.pingRound++
		for _, p := range e.list() {
			if now.Sub(p.lastHeard) > idleTimeout {
				e.env.Disconnect(p.id)
				continue
			}
			switch {
			case e.IsServer() && now.Sub(p.lastPinged) < serverPingInterval:
				continue
			case p.server && e.pingRound%serverPingEvery != 0:
				continue
			}
			e.ping(p, now)
		}
	}
	if !e.IsServer() {
		e.maintain(now)
		e.managePush(now)
	}
}

func (e *Engine) ping(p *partner, now time.Time) {
	e.nonce++
	p.pingNonce, p.pingAt, p.lastPinged = e.nonce, now, now
	e.send(p.id, &wire.Ping{Nonce: e.nonce})
}

// list returns the partners sorted by ID, so every run with the same
// inputs makes the same decisions in the same order.
func (e *Engine) list() []*partner {
	if e.ordered == nil {
		e.ordered = make([]*partner, 0, len(e.partners))
		for _, p := range e.partners {
			e.ordered = append(e.ordered, p)
		}
		slices.SortFunc(e.ordered, func(a, b *partner) int { return cmpID(a.id, b.id) })
	}
	return e.ordered
}

// cmpChunk orders chunks by segment, then layer.
func cmpChunk(a, b chunkKey) int {
	if a.seq != b.seq {
		return cmpSeq(a.seq, b.seq)
	}
	return a.layer - b.layer
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpID(a, b wire.PeerID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (e *Engine) inflightCount() int {
	n := 0
	for _, p := range e.list() {
		n += len(p.inflight)
	}
	return n
}

// Partners returns the IDs of the connected partners.
func (e *Engine) Partners() []wire.PeerID {
	out := make([]wire.PeerID, 0, len(e.partners))
	for _, p := range e.list() {
		id := p.id
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Layers is the number of layers QoS lets the node fetch.
func (e *Engine) Layers() int { return e.qos.Layers() }

// RatioOfMiss is the QoS controller's current ratio of miss.
func (e *Engine) RatioOfMiss() float64 { return e.qos.RatioOfMiss() }

// Header is the stream header, once received.
func (e *Engine) Header() []byte { return e.header }

// LiveEdge is the newest segment known at the server.
func (e *Engine) LiveEdge() (uint64, bool) { return e.liveEdge, e.haveEdge }

// UploadRate is the measured media upload in bytes/s.
func (e *Engine) UploadRate() float64 { return e.up.Rate(e.env.Now()) }
