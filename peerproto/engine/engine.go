package engine

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"time"

	"golang.org/x/time/rate"

	"github.com/coopstreaming/coop/peerproto/buffermap"
	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/monitor"
	"github.com/coopstreaming/coop/peerproto/qos"
	"github.com/coopstreaming/coop/peerproto/scheduler"
	"github.com/coopstreaming/coop/peerproto/wire"
)

func withSlowStart(c qos.Config) qos.Config {
	c.SlowStart = true
	return c
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
	id        wire.PeerID
	hello     wire.Hello
	server    bool
	outbound  bool
	since     time.Time
	lastHeard time.Time
	bm        *buffermap.Map
	rtt       monitor.RTT
	pingNonce uint64
	pingAt    time.Time
	recv      *monitor.Meter // media bytes received from it
	sent      *monitor.Meter // media bytes sent to it
	inflight  map[chunkKey]*request
	inBytes   int
	// tput estimates the partner's delivery capacity to us in bytes/s:
	// chunk size over its service time (from the later of the request
	// and the previous delivery), so it does not shrink when we ask little.
	tput        float64
	lastArrival time.Time
	busyUntil   time.Time
	reported    wire.Report
	// upTo is the newest segment the server announced with HaveUpTo
	// (valid when upToSet).
	upTo    uint64
	upToSet bool
	// probe is the chunk the server asked of an accused partner, at
	// probeAt (zero: none outstanding).
	probe   chunkKey
	probeAt time.Time
}

type request struct {
	at      time.Time
	expires time.Time
	size    int
}

type delayedHave struct {
	at      time.Time
	added   time.Time
	entries []wire.HaveEntry
}

type servReq struct {
	from  wire.PeerID
	seq   uint64
	layer int
	flags uint8
	at    time.Time
}

// seg is a held segment.
type seg struct {
	rawManifest []byte
	man         *manifest.Manifest
	chunks      [][]byte
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
	header   []byte
	segDur   time.Duration

	// playback (peers)
	joinedAt   time.Time
	anchorSeq  uint64
	anchorAt   time.Time
	anchored   bool
	playing    bool
	started    bool // first segment played
	startSeq   uint64
	playhead   uint64
	qos        *qos.Controller
	chunkSizes [wire.MaxLayers]float64

	sched   scheduler.Scheduler
	assigns []scheduler.Assignment
	views   []scheduler.Partner
	viewIDs []wire.PeerID

	pendingHaves []wire.HaveEntry
	queue        []servReq
	limiter      *rate.Limiter
	// ctrlTokens is the server's control budget in bytes, as of ctrlAt.
	ctrlTokens float64
	ctrlAt     time.Time

	candidates map[wire.PeerID]wire.Candidate
	dialing    map[wire.PeerID]time.Time
	lastAsked  time.Time

	tracker      map[wire.PeerID]*partner // server: every peer seen
	departed     wire.Report              // server: byte totals of departed peers
	seeds        map[wire.PeerID]bool     // server: peers told of fresh segments first
	delayed      []delayedHave            // server: announcements to non-seeds
	segRate      float64                  // server: measured stream rate, bytes/s
	lastSeedPick time.Time

	lastBM, lastPing, lastManage, lastReport time.Time
	lastSchedule                             time.Time
	nonce                                    uint64

	stats Stats
	down  *monitor.Meter
	up    *monitor.Meter
	// downCap estimates the download capacity: bytes over inter-arrival
	// time of media that arrived while other requests were outstanding
	// (the link was busy).
	downCap     float64
	capRing     [16]float64
	capSamples  int
	lastArrival time.Time
	busySince   time.Time
	seenLayer   [wire.MaxLayers]bool
}

// New returns a node.
func New(cfg Config, env Env) *Engine {
	cfg = cfg.withDefaults()
	e := &Engine{
		cfg: cfg, env: env,
		partners:   make(map[wire.PeerID]*partner),
		bans:       newBanList(),
		segs:       make(map[uint64]*seg),
		have:       buffermap.New(0, cfg.Window, cfg.Layers),
		candidates: make(map[wire.PeerID]wire.Candidate),
		dialing:    make(map[wire.PeerID]time.Time),
		tracker:    make(map[wire.PeerID]*partner),
		seeds:      make(map[wire.PeerID]bool),
		segDur:     cfg.SegmentDuration,
		qos:        qos.New(withSlowStart(cfg.QoS), cfg.Layers),
		joinedAt:   env.Now(),
		down:       monitor.NewMeter(10*time.Second, 20),
		up:         monitor.NewMeter(10*time.Second, 20),
	}
	if cfg.UploadCap > 0 {
		e.limiter = rate.NewLimiter(rate.Limit(cfg.UploadCap), max(int(cfg.UploadCap/4), 4<<20))
	}
	for l := range e.chunkSizes {
		e.chunkSizes[l] = 40 << 10
	}
	e.stats.Layers = cfg.Layers
	e.epoch, e.keyPinned = cfg.Epoch, cfg.StreamKey != nil
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
		if h.Role != wire.RolePeer {
			return fmt.Errorf("%w: server to server", ErrProtocol)
		}
		if e.cfg.CheckToken != nil && !e.cfg.CheckToken(h.Stream, h.Token) {
			return ErrAuth
		}
		return nil
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
		recv: monitor.NewMeter(10*time.Second, 20), sent: monitor.NewMeter(10*time.Second, 20),
		inflight: make(map[chunkKey]*request),
	}
	e.partners[h.Peer] = p
	e.ordered = nil
	if p.server {
		e.serverID = h.Peer
	}
	if e.IsServer() {
		e.tracker[h.Peer] = p
		e.welcome(p)
	} else if !outbound {
		e.send(h.Peer, &wire.Welcome{Peer: e.cfg.ID, SegmentDurationMs: uint32(e.segDur / time.Millisecond),
			LiveEdge: e.liveEdge, Partners: uint16(len(e.partners))})
	}
	e.send(h.Peer, e.have.Encode())
	e.ping(p, now)
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
	if e.IsServer() {
		e.departed.FromServer += p.reported.FromServer
		e.departed.FromPeers += p.reported.FromPeers
	}
	delete(e.tracker, id)
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
	} else {
		if e.IsServer() && e.shed(m, n) {
			e.stats.ControlShed++
			return
		}
		e.stats.ControlBytesOut += uint64(n)
	}
	e.env.Send(to, m)
}

// shed tells whether the server drops a control message of n bytes
// because its control budget (ControlShare of the upload cap, one second
// or 512 bytes of burst) is spent. Only messages whose loss a peer
// survives are budgeted: announcements to non-seeds (the next one implies
// the skipped ones), buffer maps and pings. Candidate lists are not (a
// newcomer without them has no partner), nor busy refusals (dropping them
// made peers wait for timeouts: N = 2000 fell from 0.86 to 0.71).
func (e *Engine) shed(m wire.Message, n int) bool {
	if e.cfg.UploadCap <= 0 || e.cfg.ControlShare < 0 {
		return false
	}
	switch m := m.(type) {
	case *wire.Have:
		if m.Flags&wire.HaveSeed != 0 {
			return false
		}
	case *wire.BufferMap, *wire.Ping:
	default:
		return false
	}
	now := e.env.Now()
	rate := e.cfg.ControlShare * e.cfg.UploadCap
	burst := max(rate, 512) // a second of budget, at least one large control message
	e.ctrlTokens = min(burst, e.ctrlTokens+rate*now.Sub(e.ctrlAt).Seconds())
	e.ctrlAt = now
	if e.ctrlTokens < float64(n) {
		return true
	}
	e.ctrlTokens -= float64(n)
	return false
}

// noteServerSegment records that the server holds segment seq.
func (e *Engine) noteServerSegment(seq uint64, now time.Time, seed bool) {
	s := e.segs[seq]
	if s == nil && seq >= e.have.Base() {
		s = &seg{}
		e.segs[seq] = s
	}
	if s != nil {
		if s.firstSeen.IsZero() {
			s.firstSeen = now
		}
		s.seed = s.seed || seed
	}
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
		if p.server && !e.IsServer() {
			if !e.onServerWelcome(m, now) {
				e.env.Disconnect(from)
				return
			}
			if m.SegmentDurationMs > 0 {
				e.segDur = time.Duration(m.SegmentDurationMs) * time.Millisecond
			}
			e.noteLiveEdge(m.LiveEdge, now, true)
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
		if p.bm == nil {
			p.bm = buffermap.New(0, e.cfg.Window, e.cfg.Layers)
		}
		// The server's announcement says how old the newest segment is:
		// place it on the server's clock (minus half the RTT).
		at := now.Add(-time.Duration(m.AgeMs)*time.Millisecond - p.rtt.Smoothed(0)/2)
		for _, h := range m.Entries {
			if h.Seq >= p.bm.Base()+uint64(p.bm.Window()) {
				p.bm.Advance(h.Seq - uint64(p.bm.Window()) + 1)
			}
			p.bm.Set(h.Seq, int(h.Layer))
			if m.Flags&wire.HaveUpTo != 0 {
				for l := 0; l < int(h.Layer) && l < e.cfg.Layers; l++ {
					p.bm.Set(h.Seq, l)
				}
				// The server holds every segment up to its edge: an
				// announcement it skipped (control budget) is implied.
				if p.server && p.upToSet {
					for seq := max(p.upTo+1, p.bm.Base()); seq < h.Seq; seq++ {
						for l := 0; l <= int(h.Layer) && l < e.cfg.Layers; l++ {
							p.bm.Set(seq, l)
						}
						e.noteServerSegment(seq, now, false)
					}
				}
				if p.server && (!p.upToSet || h.Seq > p.upTo) {
					p.upTo, p.upToSet = h.Seq, true
				}
			}
			if p.server {
				e.noteLiveEdge(h.Seq, at, false)
				e.noteServerSegment(h.Seq, now, m.Flags&wire.HaveSeed != 0)
			}
		}
		if !e.IsServer() && now.Sub(e.lastSchedule) >= 20*time.Millisecond {
			e.playback(now)
			e.schedule(now)
		}
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
			delete(p.inflight, k)
			p.inBytes -= r.size
		}
		if m.Reason == wire.RejectBusy {
			p.busyUntil = now.Add(busyBackoff)
		} else if p.bm != nil {
			p.bm.Clear(m.Seq, int(m.Layer))
		}
	case *wire.GetCandidates:
		e.send(from, &wire.Candidates{List: e.candidatesFor(p, int(m.Max))})
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
	}
}

// serverHoldings records when fresh segments appeared at the server.
func (e *Engine) serverHoldings(p *partner, now time.Time) {
	for i := 0; i < p.bm.Window(); i++ {
		s := p.bm.Base() + uint64(i)
		if p.bm.Has(s, 0) {
			e.noteLiveEdge(s, now, false)
			if e.segs[s] == nil && s >= e.have.Base() {
				e.segs[s] = &seg{firstSeen: now}
			}
		}
	}
}

// noteLiveEdge follows the newest segment at the server and anchors the
// playback clock on it: segment c is due PlayoutDelay after it reached
// the server. The anchor only moves later, so playback never outruns
// production.
func (e *Engine) noteLiveEdge(seq uint64, now time.Time, welcome bool) {
	if !e.haveEdge || seq > e.liveEdge {
		e.liveEdge = seq
		e.haveEdge = true
	} else if !welcome {
		return
	}
	if e.IsServer() {
		return
	}
	if !e.anchored {
		e.anchorSeq, e.anchorAt, e.anchored = seq, now, true
		e.chooseStart(now)
		return
	}
	predicted := e.anchorAt.Add(time.Duration(int64(seq)-int64(e.anchorSeq)) * e.segDur)
	if now.After(predicted) {
		e.anchorAt = e.anchorAt.Add(now.Sub(predicted))
	}
}

// availableAt is when segment seq reached (or will reach) the server.
func (e *Engine) availableAt(seq uint64) time.Time {
	return e.anchorAt.Add(time.Duration(int64(seq)-int64(e.anchorSeq)) * e.segDur)
}

// Deadline is the playback deadline of a segment.
func (e *Engine) Deadline(seq uint64) time.Time {
	return e.availableAt(seq).Add(e.cfg.PlayoutDelay)
}

func (e *Engine) chooseStart(now time.Time) {
	s := e.anchorSeq
	// Start at the oldest segment still due at least MinStartSlack ahead.
	for s > 0 && e.Deadline(s-1).Sub(now) >= e.cfg.MinStartSlack && e.anchorSeq-(s-1) < uint64(e.cfg.Window/2) {
		s--
	}
	for e.Deadline(s).Sub(now) < e.cfg.MinStartSlack {
		s++
	}
	e.startSeq, e.playhead, e.playing = s, s, true
	e.have.Advance(e.windowBase())
}

func (e *Engine) windowBase() uint64 {
	if e.playhead > uint64(e.cfg.KeepBehind) {
		return e.playhead - uint64(e.cfg.KeepBehind)
	}
	return 0
}

func (e *Engine) onRequest(p *partner, m *wire.Request, now time.Time) {
	s := e.segs[m.Seq]
	if s == nil || int(m.Layer) >= len(s.chunks) || s.chunks[m.Layer] == nil {
		e.send(p.id, &wire.Reject{Seq: m.Seq, Layer: m.Layer, Reason: wire.RejectNotFound})
		return
	}
	limit := 32
	perPeer, queued := 0, 0
	for _, r := range e.queue {
		if r.from == p.id {
			perPeer++
		}
		if rs := e.segs[r.seq]; rs != nil && r.layer < len(rs.chunks) {
			queued += len(rs.chunks[r.layer])
		}
	}
	full := len(e.queue) >= limit
	if !e.IsServer() && e.cfg.UploadCap > 0 && float64(queued+len(s.chunks[m.Layer])) > e.cfg.UploadCap {
		full = true // more than a second of upload queued: go elsewhere
	}
	if e.IsServer() {
		// The server keeps its queue short (what it sends in half a
		// second) so a fallback request is served in time or refused at
		// once; seeds are never refused: they feed everyone else.
		full = len(e.queue) >= e.cfg.ServerQueue
		if e.cfg.UploadCap > 0 {
			full = float64(queued+len(s.chunks[m.Layer])) > e.cfg.UploadCap/2
		}
		if e.seeds[p.id] {
			full = false
		} else if m.Flags&wire.RequestUrgent != 0 && float64(queued) < e.cfg.UploadCap {
			full = false // a fallback that keeps a peer playing
		} else if now.Sub(p.since) < 5*time.Second && float64(queued) < e.cfg.UploadCap {
			full = false // a newcomer's first segments: its startup delay
		}
	}
	if full || perPeer >= 8 {
		e.stats.RejectedBusy++
		e.send(p.id, &wire.Reject{Seq: m.Seq, Layer: m.Layer, Reason: wire.RejectBusy})
		return
	}
	e.queue = append(e.queue, servReq{from: p.id, seq: m.Seq, layer: int(m.Layer), flags: m.Flags, at: now})
	e.serve(now)
}

func (e *Engine) onData(p *partner, m *wire.Data, now time.Time) {
	k := chunkKey{m.Seq, int(m.Layer)}
	req := p.inflight[k]
	if req != nil {
		delete(p.inflight, k)
		p.inBytes -= req.size
		start := req.at
		if p.lastArrival.After(start) {
			start = p.lastArrival
		}
		if svc := now.Sub(start); svc > 0 {
			est := float64(len(m.Payload)) / svc.Seconds()
			if p.tput == 0 {
				p.tput = est
			} else {
				p.tput = 0.7*p.tput + 0.3*est
			}
		}
	}
	p.lastArrival = now
	// Capacity sample: this chunk's bytes over the time since the link
	// last delivered or became busy, whichever is later. Small chunks say
	// more about latency than capacity and are not counted.
	if req != nil && len(m.Payload) >= 8<<10 {
		start := e.busySince
		if e.lastArrival.After(start) {
			start = e.lastArrival
		}
		if dt := now.Sub(start); dt > 0 {
			// Capacity is the peak of recent samples: a sample is at
			// most what the link carries, often less (a slow partner).
			e.capRing[e.capSamples%len(e.capRing)] = float64(len(m.Payload)) / dt.Seconds()
			e.capSamples++
			e.downCap = 0
			for _, v := range e.capRing {
				e.downCap = max(e.downCap, v)
			}
		}
	}
	e.lastArrival = now
	if e.inflightCount() == 0 {
		e.busySince = time.Time{}
	}
	p.recv.Add(now, len(m.Payload))
	e.down.Add(now, len(m.Payload))
	if e.IsServer() {
		e.checkProbe(p, m, now)
		return
	}
	s := e.segs[m.Seq]
	if s == nil {
		s = &seg{}
		e.segs[m.Seq] = s
	}
	if !e.cfg.SkipVerify {
		if s.man == nil {
			if len(m.Manifest) == 0 {
				e.stats.Unverifiable++
				return
			}
			if len(e.cfg.StreamKey) != ed25519.PublicKeySize {
				e.stats.Unverifiable++ // no key yet: store nothing
				return
			}
			man, err := manifest.Verify(e.cfg.StreamKey, m.Manifest)
			if err != nil || man.Seq != m.Seq || man.Stream != e.cfg.Stream {
				e.ban(p, fmt.Errorf("bad manifest for segment %d: %v", m.Seq, err))
				return
			}
			if e.epochKnown && man.Epoch != e.epoch {
				e.stats.StaleEpoch++ // signed, but for another instance of the stream
				return
			}
			s.man, s.rawManifest, s.layers = man, m.Manifest, man.Layers()
		}
		if err := s.man.Check(int(m.Layer), m.Payload); err != nil {
			e.ban(p, err)
			return
		}
	} else if len(m.Manifest) > 0 && s.rawManifest == nil {
		s.rawManifest = m.Manifest
	}
	if e.have.Has(m.Seq, int(m.Layer)) {
		e.stats.DuplicateBytes += uint64(len(m.Payload))
		return
	}
	if e.playing && (m.Seq < e.playhead || (m.Seq == e.playhead && !now.Before(e.Deadline(m.Seq)))) {
		e.stats.LateBytes += uint64(len(m.Payload))
		if p.server {
			e.stats.LateFromServer++
		} else {
			e.stats.LateFromPeers++
		}
		if req != nil {
			e.stats.LateReqAge += now.Sub(req.at)
			e.stats.LateReqSlack += e.Deadline(m.Seq).Sub(req.at)
		} else {
			e.stats.LateUnrequested++
		}
		return
	}
	if !e.have.Set(m.Seq, int(m.Layer)) {
		e.stats.LateBytes += uint64(len(m.Payload))
		return
	}
	for len(s.chunks) <= int(m.Layer) {
		s.chunks = append(s.chunks, nil)
	}
	s.chunks[m.Layer] = m.Payload
	if !e.seenLayer[m.Layer] {
		e.seenLayer[m.Layer] = true
		e.chunkSizes[m.Layer] = float64(len(m.Payload))
	} else {
		e.chunkSizes[m.Layer] = 0.9*e.chunkSizes[m.Layer] + 0.1*float64(len(m.Payload))
	}
	if p.server {
		e.stats.UsefulFromServer += uint64(len(m.Payload))
	} else {
		e.stats.UsefulFromPeers += uint64(len(m.Payload))
	}
	e.pendingHaves = append(e.pendingHaves, wire.HaveEntry{Seq: m.Seq, Layer: m.Layer})
}

// AddSegment stores a segment at the server: the signed manifest and the
// chunk of every layer. Peers learn of it by Have.
func (e *Engine) AddSegment(seq uint64, rawManifest []byte, chunks [][]byte) error {
	if !e.IsServer() {
		return errors.New("engine: AddSegment on a peer")
	}
	if len(chunks) == 0 || len(chunks) > e.cfg.Layers {
		return fmt.Errorf("engine: segment %d has %d layers (max %d)", seq, len(chunks), e.cfg.Layers)
	}
	if e.haveEdge && seq <= e.liveEdge {
		return fmt.Errorf("engine: segment %d is not after %d", seq, e.liveEdge)
	}
	e.segs[seq] = &seg{rawManifest: rawManifest, chunks: chunks, layers: len(chunks)}
	e.liveEdge, e.haveEdge = seq, true
	if seq >= e.have.Base()+uint64(e.have.Window()) {
		base := seq - uint64(e.have.Window()) + 1
		e.have.Advance(base)
		for s := range e.segs {
			if s < base {
				delete(e.segs, s)
			}
		}
	}
	haves := make([]wire.HaveEntry, len(chunks))
	size := 0
	for l := range chunks {
		e.have.Set(seq, l)
		haves[l] = wire.HaveEntry{Seq: seq, Layer: uint8(l)}
		size += len(chunks[l])
	}
	rate := float64(size) / e.segDur.Seconds()
	if e.segRate == 0 {
		e.segRate = rate
	} else {
		e.segRate = 0.9*e.segRate + 0.1*rate
	}
	now := e.env.Now()
	if now.Sub(e.lastSeedPick) > 2*time.Second || len(e.seeds) == 0 {
		e.pickSeeds()
		e.lastSeedPick = now
	}
	seedMsg := &wire.Have{Flags: wire.HaveSeed, Entries: haves}
	for _, p := range e.list() {
		id := p.id
		if e.seeds[id] {
			e.send(id, seedMsg)
		}
	}
	e.segs[seq].added = now
	e.delayed = append(e.delayed, delayedHave{at: now.Add(e.cfg.SeedDelay), added: now, entries: haves})
	return nil
}

// pickSeeds chooses the peers that hear of fresh segments first: the
// highest measured (or declared) upload, as many as the server's upload
// feeds with one copy kept in reserve for fallbacks.
func (e *Engine) pickSeeds() {
	n := e.cfg.Seeds
	if n <= 0 {
		n = 1
		if e.cfg.UploadCap > 0 && e.segRate > 0 {
			n = max(1, int(e.cfg.UploadCap/e.segRate)-1)
		}
	}
	type cand struct {
		id wire.PeerID
		up float64
	}
	var list []cand
	for _, p := range e.list() {
		id := p.id
		up := float64(p.reported.UploadRate)
		if cap := float64(p.hello.UploadCap); cap > up {
			up = cap
		}
		list = append(list, cand{id, up * (0.9 + 0.2*e.env.Rand().Float64())})
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].up > list[j].up })
	clear(e.seeds)
	for i := 0; i < len(list) && i < n; i++ {
		e.seeds[list[i].id] = true
	}
}

// flushDelayed sends due announcements to the peers that are not seeds:
// every segment due since the last flush in one compact Have (one entry
// per segment, HaveUpTo). The server speaks to every peer, so its
// per-peer control traffic must stay small: at 2 000 peers per-chunk
// announcements took half of a 5x upload cap.
func (e *Engine) flushDelayed(now time.Time) {
	if len(e.delayed) == 0 || now.Before(e.delayed[0].at) {
		return
	}
	i := 0
	var entries []wire.HaveEntry
	var newest time.Time
	for ; i < len(e.delayed) && !now.Before(e.delayed[i].at); i++ {
		d := e.delayed[i]
		top := d.entries[0]
		for _, h := range d.entries {
			top.Layer = max(top.Layer, h.Layer)
		}
		entries = append(entries, top)
		newest = d.added
	}
	e.delayed = e.delayed[i:]
	msg := &wire.Have{Flags: wire.HaveUpTo, AgeMs: uint32(now.Sub(newest) / time.Millisecond), Entries: entries}
	for _, p := range e.list() {
		id := p.id
		if !e.seeds[id] {
			e.send(id, msg)
		}
	}
}

// SetHeader sets the stream header the server hands to every peer.
func (e *Engine) SetHeader(h []byte) {
	e.header = h
	for _, p := range e.list() {
		id := p.id
		e.send(id, &wire.StreamHeader{Header: h})
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
	if !e.IsServer() {
		e.playback(now)
		e.expireRequests(now)
		e.schedule(now)
	}
	if e.IsServer() {
		e.flushDelayed(now)
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
	if now.Sub(e.lastBM) >= bufferMapInterval {
		e.lastBM = now
		bm := e.have.Encode()
		for _, p := range e.list() {
			id := p.id
			e.send(id, bm)
		}
	}
	if now.Sub(e.lastPing) >= pingInterval {
		e.lastPing = now
		for _, p := range e.list() {
			if now.Sub(p.lastHeard) > idleTimeout {
				e.env.Disconnect(p.id)
				continue
			}
			e.ping(p, now)
		}
	}
	manageEvery := manageInterval
	if e.peerPartners() < e.cfg.Partners/2 {
		manageEvery = manageInterval / 4
	}
	if !e.IsServer() && now.Sub(e.lastManage) >= manageEvery {
		e.lastManage = now
		e.managePartners(now)
	}
	reportEvery := reportInterval
	if now.Sub(e.joinedAt) < 10*time.Second {
		reportEvery = time.Second // the tracker learns a newcomer's state fast
	}
	if !e.IsServer() && now.Sub(e.lastReport) >= reportEvery && e.serverID != 0 {
		e.lastReport = now
		st := e.Stats()
		e.send(e.serverID, &wire.Report{UploadRate: uint64(e.up.Rate(now)), DownloadRate: uint64(e.down.Rate(now)),
			Partners: uint16(e.peerPartners()), ContinuityPermille: uint16(1000 * st.Continuity()), MaxLayer: uint8(e.qos.Layers()),
			FromServer: st.UsefulFromServer, FromPeers: st.UsefulFromPeers})
	}
}

func (e *Engine) ping(p *partner, now time.Time) {
	e.nonce++
	p.pingNonce, p.pingAt = e.nonce, now
	e.send(p.id, &wire.Ping{Nonce: e.nonce})
}

// playback plays every segment whose deadline has come.
func (e *Engine) playback(now time.Time) {
	if !e.playing {
		return
	}
	for !now.Before(e.Deadline(e.playhead)) {
		seq := e.playhead
		s := e.segs[seq]
		subscribed := e.qos.Layers()
		segLayers := subscribed
		if s != nil && s.layers > 0 {
			segLayers = min(s.layers, subscribed)
		}
		present := 0
		for l := 0; l < segLayers && e.have.Has(seq, l); l++ {
			present++
		}
		due, missed := segLayers, 0
		for l := 0; l < segLayers; l++ {
			if !e.have.Has(seq, l) {
				missed++
			}
		}
		if present == 0 && e.started {
			e.diagnoseMiss(seq)
		}
		e.stats.record(seq, present, segLayers, subscribed, e.cfg.Layers)
		if present > 0 && !e.started {
			e.started = true
			e.stats.StartupDelay = now.Sub(e.joinedAt)
			e.stats.Started = true
		}
		if e.started && !e.cfg.DisableQoS {
			// A layer comes back only if the measured download capacity
			// carries it with 15% to spare: no probing that hurts the base.
			need, cur := 0.0, 0.0
			for l := 0; l <= subscribed && l < e.cfg.Layers; l++ {
				if e.seenLayer[l] {
					need += e.chunkSizes[l] / e.segDur.Seconds()
				}
				if l < subscribed {
					cur = need
				}
			}
			measured := e.capSamples >= 10
			e.qos.SetHeadroom(!measured || e.downCap >= 1.15*need)
			// A link measured well below the current layers' rate is
			// congestion even before misses show.
			e.qos.SetOverloaded(measured && e.downCap < 0.9*cur)
			if _, changed := e.qos.Observe(now, due, missed); changed {
				e.stats.LayerSwitches++
			}
		}
		if e.cfg.OnPlay != nil {
			var layers [][]byte
			if s != nil {
				for l := 0; l < present && l < len(s.chunks); l++ {
					layers = append(layers, s.chunks[l])
				}
			}
			e.cfg.OnPlay(seq, layers)
		}
		e.stats.PlayedAt = append(e.stats.PlayedAt, PlayRecord{Seq: seq, At: now, Layers: present, Subscribed: subscribed, SegLayers: segLayers})
		if len(e.stats.PlayedAt) > 4096 {
			e.stats.PlayedAt = e.stats.PlayedAt[2048:]
		}
		e.playhead++
		base := e.windowBase()
		e.have.Advance(base)
		for s := range e.segs {
			if s < base {
				delete(e.segs, s)
			}
		}
	}
}

func (e *Engine) expireRequests(now time.Time) {
	for _, p := range e.list() {
		var expired []chunkKey
		for k, r := range p.inflight {
			if now.After(r.expires) {
				expired = append(expired, k)
			}
		}
		slices.SortFunc(expired, cmpChunk)
		for _, k := range expired {
			p.inBytes -= p.inflight[k].size
			delete(p.inflight, k)
			e.stats.Timeouts++
			e.send(p.id, &wire.Cancel{Seq: k.seq, Layer: uint8(k.layer)})
		}
	}
}

func (e *Engine) streamRate() float64 {
	var sum float64
	for l := 0; l < e.cfg.Layers; l++ {
		sum += e.chunkSizes[l]
	}
	return sum / e.segDur.Seconds()
}

func (e *Engine) schedule(now time.Time) {
	e.lastSchedule = now
	if !e.playing || e.serverID == 0 && e.peerPartners() == 0 {
		return
	}
	e.views, e.viewIDs = e.views[:0], e.viewIDs[:0]
	inflight := 0
	for _, p := range e.list() {
		id := p.id
		e.views = append(e.views, scheduler.Partner{
			Map: p.bm, Rate: p.tput, RTT: p.rtt.Smoothed(100 * time.Millisecond),
			InFlight: len(p.inflight), InFlightBytes: p.inBytes, Server: p.server,
			Unavailable: now.Before(p.busyUntil),
		})
		e.viewIDs = append(e.viewIDs, id)
		inflight += p.inBytes
	}
	to := e.liveEdge
	if limit := e.playhead + uint64(e.cfg.Window-e.cfg.KeepBehind) - 1; to > limit {
		to = limit
	}
	held := e.have.Count(0)
	downRate := e.down.Rate(now)
	// Outstanding requests are bounded by what the download link
	// delivered lately, so far-ahead enhancement chunks do not queue in
	// front of the next base chunks on a narrow link.
	maxInFlight := 0
	if downRate > 0 && now.Sub(e.joinedAt) > 5*time.Second {
		maxInFlight = int(max(downRate*2, 2*e.streamRate()))
		if e.capSamples >= 10 {
			// Never queue more than ~1.5 s of the measured link.
			maxInFlight = min(maxInFlight, int(max(1.5*e.downCap, 2*e.chunkSizes[0])))
		}
	}
	in := &scheduler.Input{
		Now: now, Have: e.have, From: e.playhead, To: to, Layers: e.qos.Layers(),
		Deadline: e.Deadline,
		Pending: func(c scheduler.Chunk) bool {
			k := chunkKey{c.Seq, c.Layer}
			for _, p := range e.list() {
				if p.inflight[k] != nil {
					return true
				}
			}
			return false
		},
		ChunkSize: func(l int) int { return int(e.chunkSizes[l]) },
		// A chunk only the server holds is fetched from it at once only by
		// the seeds it announced the segment to first; the others wait
		// for partners unless the chunk becomes urgent.
		ServerAllowed: func(c scheduler.Chunk) bool {
			s := e.segs[c.Seq]
			return s != nil && s.seed
		},
		Urgent:           e.cfg.Urgent,
		Partners:         e.views,
		RandomFirst:      !e.cfg.DisableRandomFirst && held < 4,
		StrictServer:     e.cfg.DisableServerFallback,
		MaxInFlightBytes: maxInFlight,
		InFlightBytes:    inflight,
		Rand:             e.env.Rand(),
	}
	if e.cfg.DisableRarestFirst {
		in.Urgent = time.Duration(math.MaxInt64 / 4)
	}
	e.assigns = e.sched.Schedule(in, e.assigns[:0])
	for _, a := range e.assigns {
		e.request(e.partners[e.viewIDs[a.Partner]], a.Seq, a.Layer, now)
	}
	e.hedge(now)
}

// request sends one request and records it in flight.
func (e *Engine) request(p *partner, seq uint64, layer int, now time.Time) {
	k := chunkKey{seq, layer}
	if e.busySince.IsZero() || e.inflightCount() == 0 {
		e.busySince = now
	}
	if p.inflight[k] == nil {
		size := int(e.chunkSizes[layer])
		rateEst := max(p.tput, 32<<10)
		timeout := p.rtt.Smoothed(100*time.Millisecond)*2 + time.Duration(float64(p.inBytes+size)/rateEst*2*float64(time.Second)) + time.Second
		timeout = min(max(timeout, 1500*time.Millisecond), 6*time.Second)
		p.inflight[k] = &request{at: now, expires: now.Add(timeout), size: size}
		p.inBytes += size
	}
	var flags uint8
	if s := e.segs[seq]; s == nil || (s.man == nil && !e.cfg.SkipVerify) || (e.cfg.SkipVerify && s.rawManifest == nil) {
		flags |= wire.RequestManifest
	}
	if e.Deadline(seq).Sub(now) < e.cfg.Urgent {
		flags |= wire.RequestUrgent
	}
	e.send(p.id, &wire.Request{Seq: seq, Layer: uint8(layer), Flags: flags})
}

// hedge asks the server for a base-layer chunk that a peer partner is
// late to deliver and whose deadline is near: the server partner is the
// fallback that keeps continuity.
func (e *Engine) hedge(now time.Time) {
	srv := e.partners[e.serverID]
	if srv == nil || now.Before(srv.busyUntil) || len(srv.inflight) >= 6 || e.cfg.DisableServerFallback {
		return
	}
	for _, p := range e.list() {
		if p.server {
			continue
		}
		// In chunk order: the loop stops at six hedges, and map order
		// would make the choice differ from run to run.
		for _, k := range slices.SortedFunc(maps.Keys(p.inflight), cmpChunk) {
			r := p.inflight[k]
			if k.layer != 0 || srv.inflight[k] != nil || srv.bm == nil || !srv.bm.Has(k.seq, 0) {
				continue
			}
			slack := e.Deadline(k.seq).Sub(now)
			expected := p.rtt.Smoothed(100*time.Millisecond) + time.Duration(float64(r.size)/max(p.tput, 32<<10)*float64(time.Second))
			if slack < e.cfg.Urgent/2 && now.Sub(r.at) > expected+200*time.Millisecond {
				e.stats.Hedges++
				e.request(srv, k.seq, 0, now)
				if len(srv.inflight) >= 6 {
					return
				}
			}
		}
	}
}

// serve answers queued requests within the upload cap and the transport's
// backlog: base layer first, then partners that contribute most, with
// newcomers treated as contributors (optimistic slots); the base layer is
// never starved by enhancement layers.
func (e *Engine) serve(now time.Time) {
	// Expire stale requests: the requester has timed out by now.
	e.queue = slices.DeleteFunc(e.queue, func(r servReq) bool {
		if now.Sub(r.at) > requestTTL {
			e.send(r.from, &wire.Reject{Seq: r.seq, Layer: uint8(r.layer), Reason: wire.RejectBusy})
			return true
		}
		return false
	})
	if len(e.queue) == 0 {
		return
	}
	score := func(id wire.PeerID) float64 {
		p := e.partners[id]
		if p == nil {
			return 0
		}
		s := p.recv.Rate(now)
		if now.Sub(p.since) < 10*time.Second {
			s += 1 << 20 // optimistic slot for newcomers
		}
		if e.IsServer() {
			s = float64(p.hello.UploadCap) // the server seeds high-upload peers first
		}
		return s
	}
	sort.SliceStable(e.queue, func(i, j int) bool {
		a, b := e.queue[i], e.queue[j]
		if sa, sb := e.seeds[a.from], e.seeds[b.from]; sa != sb {
			return sa // the server feeds its seeds first
		}
		if e.IsServer() {
			if ua, ub := a.flags&wire.RequestUrgent != 0, b.flags&wire.RequestUrgent != 0; ua != ub {
				return ua // then urgent fallbacks
			}
			if na, nb := e.isNew(a.from, now), e.isNew(b.from, now); na != nb {
				return na // then newcomers, so they start fast
			}
		}
		if a.layer != b.layer {
			return a.layer < b.layer
		}
		return score(a.from) > score(b.from)
	})
	// With per-connection backlogs a partner whose queue is full is
	// skipped (its requests wait or expire) and the others are served.
	perConn, _ := e.env.(ConnBacklog)
	kept, stop := e.queue[:0], false
	for _, r := range e.queue {
		if stop || perConn == nil && e.env.UploadBacklog() >= e.cfg.MaxBacklog {
			stop = true
			kept = append(kept, r)
			continue
		}
		if perConn != nil && perConn.Backlog(r.from) >= e.cfg.MaxBacklog {
			e.stats.SkippedBacklog++
			kept = append(kept, r)
			continue
		}
		s := e.segs[r.seq]
		if s == nil || r.layer >= len(s.chunks) || s.chunks[r.layer] == nil {
			e.send(r.from, &wire.Reject{Seq: r.seq, Layer: uint8(r.layer), Reason: wire.RejectNotFound})
			continue
		}
		chunk := s.chunks[r.layer]
		if e.limiter != nil && !e.limiter.AllowN(now, len(chunk)) {
			stop = true
			kept = append(kept, r)
			continue
		}
		d := &wire.Data{Seq: r.seq, Layer: uint8(r.layer), Payload: chunk}
		if r.flags&wire.RequestManifest != 0 {
			d.Manifest = s.rawManifest
		}
		e.send(r.from, d)
		if p := e.partners[r.from]; p != nil {
			p.sent.Add(now, len(chunk))
		}
		e.up.Add(now, len(chunk))
		e.stats.ServedChunks++
	}
	e.queue = kept
}

// diagnoseMiss classifies a base-layer miss for the statistics.
func (e *Engine) diagnoseMiss(seq uint64) {
	k := chunkKey{seq, 0}
	holders, serverOnly := 0, true
	for _, p := range e.list() {
		if r := p.inflight[k]; r != nil {
			if p.server {
				e.stats.MissInFlightServer++
			} else {
				e.stats.MissInFlightPeer++
			}
			return
		}
		if p.bm != nil && p.bm.Has(seq, 0) {
			holders++
			if !p.server {
				serverOnly = false
			}
		}
	}
	switch {
	case holders == 0:
		e.stats.MissNoHolder++
	case serverOnly:
		e.stats.MissServerOnly++
	default:
		e.stats.MissNotRequested++
	}
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

func (e *Engine) isNew(id wire.PeerID, now time.Time) bool {
	p := e.partners[id]
	return p != nil && now.Sub(p.since) < 5*time.Second
}

// managePartners replaces departed and under-delivering partners and
// refills the list from candidates (server and partners' gossip).
func (e *Engine) managePartners(now time.Time) {
	peers := make([]*partner, 0, len(e.partners))
	for _, p := range e.list() {
		if !p.server {
			peers = append(peers, p)
		}
	}
	// Evict the worst partner when full and it under-delivers: it has
	// been a partner for a while, gives far less than the median and
	// takes nothing either.
	if len(peers) >= e.cfg.Partners {
		sort.Slice(peers, func(i, j int) bool { return e.partnerScore(peers[i], now) < e.partnerScore(peers[j], now) })
		worst := peers[0]
		median := e.partnerScore(peers[len(peers)/2], now)
		if now.Sub(worst.since) > 20*time.Second && e.partnerScore(worst, now) < 0.2*median && len(e.candidates) > 0 {
			e.send(worst.id, &wire.Goodbye{Reason: "replaced"})
			e.env.Disconnect(worst.id)
			e.stats.Evictions++
			peers = peers[1:]
		}
	}
	for id, at := range e.dialing {
		if now.Sub(at) > 5*time.Second {
			delete(e.dialing, id)
		}
	}
	want := e.cfg.Partners - len(peers) - len(e.dialing)
	if want <= 0 {
		return
	}
	if len(e.candidates) < want && now.Sub(e.lastAsked) > time.Second {
		e.lastAsked = now
		if e.serverID != 0 {
			e.send(e.serverID, &wire.GetCandidates{Max: 16})
		}
		if len(peers) > 0 {
			e.send(peers[e.env.Rand().IntN(len(peers))].id, &wire.GetCandidates{Max: 8})
		}
	}
	cands := make([]wire.Candidate, 0, len(e.candidates))
	for _, c := range e.candidates {
		if _, busy := e.dialing[c.Peer]; !busy && e.partners[c.Peer] == nil {
			cands = append(cands, c)
		}
	}
	slices.SortFunc(cands, func(a, b wire.Candidate) int { return cmpID(a.Peer, b.Peer) })
	// Prefer high upload and small RTT, with some randomness so the mesh
	// does not collapse onto the same few peers.
	rnd := e.env.Rand()
	keys := make([]float64, len(cands))
	for i, c := range cands {
		keys[i] = candidateScore(c) * (0.5 + rnd.Float64())
	}
	idx := make([]int, len(cands))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return keys[idx[a]] > keys[idx[b]] })
	for _, i := range idx {
		if want == 0 {
			break
		}
		c := cands[i]
		e.dialing[c.Peer] = now
		delete(e.candidates, c.Peer)
		e.env.Dial(c)
		want--
	}
}

func candidateScore(c wire.Candidate) float64 {
	up := float64(c.UploadRate) + 1
	rtt := float64(c.RTTMicros)/1000 + 10 // ms
	return up / rtt
}

// partnerScore ranks partners: what they deliver to us, what they take
// from us (a partner we feed is useful to the swarm), and their RTT.
func (e *Engine) partnerScore(p *partner, now time.Time) float64 {
	s := p.recv.Rate(now) + 0.5*p.sent.Rate(now)
	return s / (1 + p.rtt.Smoothed(100*time.Millisecond).Seconds())
}

// candidatesFor answers GetCandidates: the server ranks every peer it knows
// by reported upload and closeness (similar RTT to the server); a peer
// shares its own partners.
func (e *Engine) candidatesFor(asker *partner, n int) []wire.Candidate {
	n = min(n, wire.MaxCandidates)
	pool := e.partners
	if e.IsServer() {
		pool = e.tracker
	}
	type scored struct {
		c wire.Candidate
		s float64
	}
	now := e.env.Now()
	askerRTT := asker.rtt.Smoothed(50 * time.Millisecond)
	var list []scored
	ids := make([]wire.PeerID, 0, len(pool))
	for id := range pool {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, cmpID)
	for _, id := range ids {
		p := pool[id]
		if id == asker.id || p.server || p.hello.ListenAddr == "" {
			continue
		}
		up := float64(p.reported.UploadRate)
		if up == 0 {
			up = float64(p.hello.UploadCap)
		}
		if up == 0 {
			up = p.sent.Rate(now)
		}
		rtt := p.rtt.Smoothed(50 * time.Millisecond)
		d := (rtt - askerRTT).Seconds()
		if d < 0 {
			d = -d
		}
		c := wire.Candidate{Peer: id, Addr: p.hello.ListenAddr, UploadRate: uint64(up), RTTMicros: uint32(rtt / time.Microsecond)}
		score := (up + 1) / (1 + d*20) * (0.5 + e.env.Rand().Float64())
		// A peer whose partner list is full will refuse: rank it last.
		if int(p.reported.Partners) >= e.cfg.MaxPartners {
			score /= 100
		}
		list = append(list, scored{c, score})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].s > list[j].s })
	out := make([]wire.Candidate, 0, n)
	for i := 0; i < len(list) && i < n; i++ {
		out = append(out, list[i].c)
	}
	return out
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
