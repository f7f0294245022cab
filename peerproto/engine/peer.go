package engine

import (
	"maps"
	"math"
	"slices"
	"time"

	"github.com/coopstreaming/coop/peerproto/buffermap"
	"github.com/coopstreaming/coop/peerproto/partners"
	"github.com/coopstreaming/coop/peerproto/playback"
	"github.com/coopstreaming/coop/peerproto/qos"
	"github.com/coopstreaming/coop/peerproto/scheduler"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// This file is the peer: it follows the server's live edge, plays on
// the playback clock, stores and verifies data, schedules requests and
// hedges late ones at the server, and manages its partners.

// fetch is a peer's tick before serving: play what is due, expire
// requests timed out, schedule new ones.
func (e *Engine) fetch(now time.Time) {
	e.extrapolateServer(now)
	e.playback(now)
	e.expireRequests(now)
	e.schedule(now)
}

// maintain is a peer's tick after serving: manage partners (faster while
// under half the target) and report to the server.
func (e *Engine) maintain(now time.Time) {
	manageEvery := manageInterval
	if e.peerPartners() < e.cfg.Partners/2 {
		manageEvery = manageInterval / 4
	}
	if now.Sub(e.lastManage) >= manageEvery {
		e.lastManage = now
		e.managePartners(now)
	}
	reportEvery := reportInterval
	if now.Sub(e.joinedAt) < 10*time.Second {
		reportEvery = time.Second // the tracker learns a newcomer's state fast
	}
	if now.Sub(e.lastReport) >= reportEvery && e.serverID != 0 {
		e.lastReport = now
		st := e.Stats()
		e.send(e.serverID, &wire.Report{UploadRate: uint64(e.up.Rate(now)), DownloadRate: uint64(e.down.Rate(now)),
			Partners: uint16(e.peerPartners()), ContinuityPermille: uint16(1000 * st.Continuity()), MaxLayer: uint8(e.qos.Layers()),
			FromServer: st.UsefulFromServer, FromPeers: st.UsefulFromPeers})
	}
}

// onWelcome follows the server's Welcome: its stream instance (epoch.go),
// segment duration and live edge. It reports whether the Welcome is
// accepted (false: disconnect).
func (e *Engine) onWelcome(m *wire.Welcome, now time.Time) bool {
	if !e.onServerWelcome(m, now) {
		return false
	}
	if m.SegmentDurationMs > 0 {
		e.segDur = time.Duration(m.SegmentDurationMs) * time.Millisecond
		e.clock.SegmentDuration = e.segDur
	}
	e.noteLiveEdge(m.LiveEdge, now, true)
	e.announcedEdge = max(e.announcedEdge, m.LiveEdge)
	return true
}

// onHave records a partner's announcement in its buffer map; the
// server's also move the live edge and the playback clock, and what it
// holds up to its edge is implied (HaveUpTo). A peer then plays and
// schedules at once (at most every 20 ms), so fresh chunks are asked for
// without waiting for the tick.
func (e *Engine) onHave(p *partner, m *wire.Have, now time.Time) {
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
				e.streamLayers = int(h.Layer) + 1 // its newest segment's layers
			}
		}
		if p.server {
			e.noteLiveEdge(h.Seq, at, false)
			e.noteServerSegment(h.Seq, now, m.Flags&wire.HaveSeed != 0)
			e.announcedEdge = max(e.announcedEdge, h.Seq)
			if e.notFoundSet && h.Seq >= e.notFoundAt {
				e.notFoundSet = false
			}
		} else {
			e.impliedAtServer(h.Seq, now)
		}
	}
	if !e.IsServer() && now.Sub(e.lastSchedule) >= 20*time.Millisecond {
		e.playback(now)
		e.schedule(now)
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
	if !e.clock.Anchored() {
		e.clock.Anchor(seq, now)
		e.chooseStart(now)
		return
	}
	e.clock.Follow(seq, now)
}

// Deadline is the playback deadline of a segment.
func (e *Engine) Deadline(seq uint64) time.Time { return e.clock.Deadline(seq) }

func (e *Engine) chooseStart(now time.Time) {
	// Start at the oldest segment still due at least MinStartSlack ahead,
	// at most half a window behind the live edge.
	s := e.clock.Start(now, e.cfg.MinStartSlack, uint64(e.cfg.Window/2))
	e.startSeq, e.playhead, e.playing = s, s, true
	e.have.Advance(e.windowBase())
}

func (e *Engine) windowBase() uint64 {
	if e.playhead > uint64(e.cfg.KeepBehind) {
		return e.playhead - uint64(e.cfg.KeepBehind)
	}
	return 0
}

func (e *Engine) onData(p *partner, m *wire.Data, now time.Time) {
	k := chunkKey{m.Seq, int(m.Layer)}
	p.busyStreak = 0
	req := p.inflight[k]
	if req != nil {
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
	if req == nil {
		e.stats.PushedBytesIn += uint64(len(m.Payload))
	}
	// Capacity sample: this piece's bytes over the time since the link
	// last delivered or became busy, whichever is later. Small pieces say
	// more about latency than capacity and are not counted.
	if req != nil && len(m.Payload) >= 8<<10 {
		start := e.busySince
		if e.lastArrival.After(start) {
			start = e.lastArrival
		}
		if dt := now.Sub(start); dt > 0 {
			// Capacity is the peak of recent samples: a sample is at
			// most what the link carries, often less (a slow partner).
			e.downCap.Add(float64(len(m.Payload)) / dt.Seconds())
		}
	} else if req == nil && len(m.Payload) >= 8<<10 && !e.lastArrival.IsZero() && now.Sub(e.lastArrival) < pushSampleGap {
		// A pushed piece right behind another delivery: the link was
		// busy in between, so the gap is this piece's transfer time.
		if dt := now.Sub(e.lastArrival); dt > 0 {
			e.downCap.Add(float64(len(m.Payload)) / dt.Seconds())
		}
	}
	e.lastArrival = now
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
	known := e.learnManifest(p, s, m)
	// A request ends with the last piece of its chunk (pieces come in
	// order on a connection), or at once when the pieces cannot be used.
	if req != nil && (!known || int(m.Piece) >= req.lastPiece(s.man.Pieces(k.layer))) {
		p.forget(k, req)
	}
	if e.inflightCount() == 0 {
		e.busySince = time.Time{}
	}
	if !known {
		return
	}
	if !e.cfg.SkipVerify {
		if err := s.man.CheckPiece(k.layer, int(m.Piece), m.Payload); err != nil {
			e.ban(p, err)
			return
		}
	} else if int(m.Piece) >= s.man.Pieces(k.layer) || len(m.Payload) != s.man.PieceLen(k.layer, int(m.Piece)) {
		return
	}
	if e.have.Has(m.Seq, k.layer) {
		e.duplicate(m, req)
		return
	}
	if e.playing && (m.Seq < e.playhead || (m.Seq == e.playhead && !now.Before(e.Deadline(m.Seq)))) {
		e.late(p, m, req, now)
		return
	}
	if !e.have.In(m.Seq) {
		e.stats.LateBytes += uint64(len(m.Payload))
		return
	}
	chunk, dup := s.storePiece(k.layer, int(m.Piece), m.Payload)
	if dup {
		e.duplicate(m, req)
		return
	}
	if req != nil {
		e.stats.addMediaIn(k.layer, mediaPulled, len(m.Payload))
	} else {
		e.stats.addMediaIn(k.layer, mediaPushed, len(m.Payload))
	}
	if p.server {
		e.stats.UsefulFromServer += uint64(len(m.Payload))
	} else {
		e.stats.UsefulFromPeers += uint64(len(m.Payload))
	}
	if req == nil {
		e.pushed(p, m.Seq, k.layer)
	}
	// The chunk is held before its last piece is forwarded: the piece is
	// read from the chunk once the partial buffer is gone.
	if chunk != nil {
		e.chunkDone(s, m.Seq, k.layer, chunk)
	}
	// Cut-through: the piece goes on to the push children now.
	e.forward(m.Seq, k.layer, int(m.Piece), now)
}

// chunkDone stores a chunk whose last piece arrived: it is now held,
// announced, served and played.
func (e *Engine) chunkDone(s *seg, seq uint64, layer int, chunk []byte) {
	e.have.Set(seq, layer)
	for len(s.chunks) <= layer {
		s.chunks = append(s.chunks, nil)
	}
	s.chunks[layer] = chunk
	e.pendingHaves = append(e.pendingHaves, wire.HaveEntry{Seq: seq, Layer: uint8(layer)})
	if e.cfg.OnSegment != nil && s.layers > 0 && e.complete(seq, s) {
		e.cfg.OnSegment(seq, s.rawManifest, s.chunks[:s.layers])
	}
}

// duplicate counts a piece that was held already.
func (e *Engine) duplicate(m *wire.Data, req *request) {
	e.stats.DuplicateBytes += uint64(len(m.Payload))
	e.stats.addMediaIn(int(m.Layer), mediaDuplicate, len(m.Payload))
	if req == nil {
		e.stats.DuplicatePushBytes += uint64(len(m.Payload))
	}
}

// late counts a piece that came after its segment was played.
func (e *Engine) late(p *partner, m *wire.Data, req *request, now time.Time) {
	e.stats.LateBytes += uint64(len(m.Payload))
	e.stats.addMediaIn(int(m.Layer), mediaLate, len(m.Payload))
	if m.Piece > 0 {
		return // the chunk's other counters are kept once per chunk
	}
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
}

// complete tells whether every layer of segment seq is held.
func (e *Engine) complete(seq uint64, s *seg) bool {
	if len(s.chunks) < s.layers {
		return false
	}
	for l := 0; l < s.layers; l++ {
		if !e.have.Has(seq, l) {
			return false
		}
	}
	return true
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
		streamLayers, segLayers := subscribed, subscribed
		if s != nil && s.layers > 0 {
			streamLayers, segLayers = s.layers, min(s.layers, subscribed)
		}
		// QoS judges the layers fetched (due); the player plays every
		// layer that arrived, also one above those (a parent pushes one
		// layer ahead, pushWant).
		has := func(l int) bool { return e.have.Has(seq, l) }
		due := segLayers
		_, missed := playback.Present(due, has)
		present, _ := playback.Present(streamLayers, has)
		if present == 0 && e.started {
			e.diagnoseMiss(seq)
		}
		e.stats.RecordDeadline(present, streamLayers, e.cfg.Layers)
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
			// A link measured well below the current layers' rate is
			// congestion even before misses show.
			// A pushed peer's capacity is measured from its few pulls and
			// reads far below its link (simulator and TestPulledH265…:
			// QoS dropped a layer for "overload" with no miss): it is
			// trusted only while nothing is pushed.
			headroom, overloaded := qos.Link(e.downCap.Value(), e.downCap.Measured() && e.pushRate() == 0, need, cur)
			e.qos.SetHeadroom(headroom)
			e.qos.SetOverloaded(overloaded)
			topMissed := due > 0 && !e.have.Has(seq, due-1)
			if _, changed := e.qos.Observe(now, due, missed, topMissed); changed {
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
			p.forget(k, p.inflight[k])
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
	var layerBytes [wire.MaxLayers]int
	for _, p := range e.list() {
		id := p.id
		e.views = append(e.views, scheduler.Partner{
			Map: p.bm, Rate: p.tput, RTT: p.rtt.Smoothed(100 * time.Millisecond),
			InFlight: len(p.inflight), InFlightBytes: p.inBytes, LayerBytes: p.inLayer, Server: p.server,
			Unavailable: now.Before(p.busyUntil),
		})
		e.viewIDs = append(e.viewIDs, id)
		inflight += p.inBytes
		for l, b := range p.inLayer {
			layerBytes[l] += b
		}
	}
	to := max(e.liveEdge, min(e.impliedEdge, e.liveEdge+impliedAhead))
	if limit := e.playhead + uint64(e.cfg.Window-e.cfg.KeepBehind) - 1; to > limit {
		to = limit
	}
	held := e.have.Count(0)
	downRate := e.down.Rate(now)
	// Outstanding requests are bounded by what the download link
	// delivered lately, so far-ahead enhancement chunks do not queue in
	// front of the next base chunks on a narrow link.
	maxInFlight := 0
	if e.push.k > 0 && e.pushRate() > 0 {
		// A pushed peer's pulls are repairs: a newcomer's first seconds
		// of unbounded requests would queue behind the pushes.
		maxInFlight = int(2 * e.streamRate())
	}
	if downRate > 0 && now.Sub(e.joinedAt) > 5*time.Second {
		maxInFlight = int(max(downRate*2, 2*e.streamRate()))
		if e.downCap.Measured() {
			// Never queue more than ~1.5 s of the measured link, less
			// what the parents push meanwhile.
			maxInFlight = min(maxInFlight, int(max(1.5*(e.downCap.Value()-e.pushRate()), 2*e.chunkSizes[0])))
		}
	}
	in := &scheduler.Input{
		Now: now, Have: e.have, From: e.playhead, To: to, Layers: e.qos.Layers(),
		Deadline: e.Deadline,
		Pending: func(c scheduler.Chunk) bool {
			k := chunkKey{c.Seq, c.Layer}
			if e.expectPush(c.Seq, c.Layer, now) {
				return true
			}
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
		MinSlack:         e.queueDelay(inflight),
		InFlightBytes:    inflight,
		LayerBytes:       layerBytes,
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

// queueDelay is how long a chunk asked for now waits behind the bytes
// already on their way on the measured download link (outstanding
// requests and a second of what the parents push): a chunk due sooner
// cannot arrive in time, and asking for it only delays the next ones.
func (e *Engine) queueDelay(inflight int) time.Duration {
	if !e.downCap.Measured() || e.downCap.Value() <= 0 {
		return 0
	}
	return time.Duration((float64(inflight) + e.pushRate()) / e.downCap.Value() * float64(time.Second))
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
		p.inflight[k] = &request{at: now, expires: now.Add(timeout), size: size, last: -1}
		p.inBytes += size
		p.inLayer[layer] += size
	}
	var flags uint8
	if s := e.segs[seq]; s == nil || (s.man == nil && !e.cfg.SkipVerify) || (e.cfg.SkipVerify && s.rawManifest == nil) {
		flags |= wire.RequestManifest
	}
	if e.Deadline(seq).Sub(now) < e.cfg.Urgent {
		flags |= wire.RequestUrgent
	}
	r := &wire.Request{Seq: seq, Layer: uint8(layer), Flags: flags}
	if s := e.segs[seq]; s != nil && s.man != nil && layer < len(s.parts) && s.parts[layer] != nil {
		r.Held = s.parts[layer].got
		p.inflight[k].last = lastMissing(s.man.Pieces(layer), r.Held)
	}
	e.send(p.id, r)
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
		members := make([]partners.Member, len(peers))
		for i, p := range peers {
			members[i] = partners.Member{ID: p.id, Score: e.partnerScore(p, now), Age: now.Sub(p.since)}
		}
		evict := partners.Evict(members, e.cfg.Partners, len(e.candidates))
		for i, m := range members { // the policy's order, worst first
			peers[i] = e.partners[m.ID]
		}
		if worst := peers[0]; evict {
			e.send(worst.id, &wire.Goodbye{Reason: "replaced"})
			e.env.Disconnect(worst.id)
			e.stats.Evictions++
			peers = peers[1:]
		}
	}
	for id, at := range e.dialing {
		if now.Sub(at) > partners.DialTimeout {
			delete(e.dialing, id)
		}
	}
	want := partners.Want(e.cfg.Partners, len(peers), len(e.dialing))
	if want <= 0 {
		return
	}
	if len(e.candidates) < want && now.Sub(e.lastAsked) > time.Second {
		e.lastAsked = now
		// The server's lists cost its upload for every peer: a peer with
		// half its partners asks them (gossip) and the server only every
		// candidateServerEvery (at N = 5000 the server's lists were 3.5 MB
		// of its control in 60 s).
		if e.serverID != 0 && (len(peers) < e.cfg.Partners/2 || now.Sub(e.lastAskedServer) >= candidateServerEvery) {
			e.lastAskedServer = now
			e.send(e.serverID, &wire.GetCandidates{Max: serverCandidates})
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
	for _, i := range partners.Rank(cands, e.env.Rand()) {
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

// partnerScore ranks partners: what they deliver to us, what they take
// from us (a partner we feed is useful to the swarm), and their RTT.
func (e *Engine) partnerScore(p *partner, now time.Time) float64 {
	return partners.Score(p.recv.Rate(now), p.sent.Rate(now), p.rtt.Smoothed(100*time.Millisecond))
}
