// Package donet is the simulator's gossip-mesh baseline, after
// CoolStreaming/DONet (Zhang et al., INFOCOM 2005): single layer, random
// partners, no server partnership.
//
//   - Membership: every node keeps a partial view (mCache) of members with
//     the age of their last announcement; each gossip period it sends
//     itself and a random sample of its view to one random partner, and
//     forgets members not heard of for a while (departed nodes fade out).
//     A newcomer bootstraps at the server, which answers with a sample of
//     its view; the server is an ordinary member and partner otherwise.
//   - Partners: M random partners from the view, inbound up to 2M; every
//     refinement period a node with at least M partners drops the one
//     that exchanged the fewest bytes with it and dials a random member.
//   - Buffer maps every period τ (one segment duration) to every partner.
//   - Scheduling every τ, DONet's heuristic: segments with fewer
//     suppliers first (rarest first); for each, the supplier with the
//     highest estimated bandwidth among those whose queue still lets the
//     segment arrive before its deadline.
//
// Details the paper leaves open, each chosen because the simpler choice
// measured worse in this simulator: a supplier keeps its own request
// queue (requests can be cancelled, stale ones dropped) and feeds its
// link 300 ms at a time; at most 3 requests are in flight per partner;
// a partner's bandwidth is estimated from request-to-arrival times (so a
// supplier shared by many looks slow); views forget at random, not the
// oldest first (else newcomers only meet the peers that joined just
// before them), and the server's view is 16x larger.
//
// The messages are the engine's: Hello (Token "bootstrap" marks a
// bootstrap connection), GetCandidates/Candidates (Candidate.RTTMicros
// carries an announcement's age in milliseconds), Welcome (the server's
// live edge), BufferMap (one layer), Request, Cancel, Reject, Data.
package donet

import (
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/coopstreaming/coop/lab/baseline"
	"github.com/coopstreaming/coop/peerproto/buffermap"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// Config tunes the mesh. Zero fields take the defaults in brackets.
type Config struct {
	baseline.Config
	// Partners is M [4, as DONet].
	Partners int
	// ViewSize bounds the membership view [64; the server's, which sees
	// every bootstrap, 16x as large].
	ViewSize int
	// GossipEvery is the membership gossip period [1s].
	GossipEvery time.Duration
	// MemberTTL forgets members not heard of for this long [20s; the
	// server 60s].
	MemberTTL time.Duration
	// RefineEvery is the partner refinement period [10s].
	RefineEvery time.Duration
	// MapEvery is the buffer-map and scheduling period τ [one segment].
	MapEvery time.Duration
	// Outstanding bounds the requests in flight to one partner [3]: a
	// requester's estimate of a supplier's free time ignores the other
	// requesters, and unbounded pipelines queue far past every deadline.
	Outstanding int
}

func (c *Config) defaults() {
	c.Config.Defaults()
	if c.Partners <= 0 {
		c.Partners = 4
	}
	if c.ViewSize <= 0 {
		c.ViewSize = 64
		if c.Server {
			c.ViewSize *= 16
		}
	}
	if c.GossipEvery <= 0 {
		c.GossipEvery = time.Second
	}
	if c.MemberTTL <= 0 {
		c.MemberTTL = 20 * time.Second
		if c.Server {
			c.MemberTTL *= 3
		}
	}
	if c.RefineEvery <= 0 {
		c.RefineEvery = 10 * time.Second
	}
	if c.Outstanding <= 0 {
		c.Outstanding = 3
	}
	if c.MapEvery <= 0 {
		c.MapEvery = c.SegmentDuration
	}
}

type partner struct {
	id wire.PeerID
	// bm is the partner's last buffer map.
	bm *buffermap.Map
	// bw estimates the partner's upload to us (bytes/s); busy is when
	// what we asked of it should be through; inFlight counts requests
	// not answered yet.
	bw       float64
	busy     time.Time
	inFlight int
	// exchanged counts media bytes both ways since the last refinement.
	exchanged uint64
}

// queued is a request waiting for upload.
type queued struct {
	to  wire.PeerID
	seq uint64
	at  time.Time
}

// maxQueue bounds a supplier's request queue.
const maxQueue = 256

type pending struct {
	from           wire.PeerID
	asked, expires time.Time
}

// Host is one mesh node.
type Host struct {
	*baseline.Node
	cfg         Config
	partners    map[wire.PeerID]*partner
	bootstrap   map[wire.PeerID]bool // connections that only bootstrap
	dialing     map[wire.PeerID]bool
	view        map[wire.PeerID]time.Time // member → when last announced
	pending     map[uint64]pending
	queue       []queued
	bootstrapOn bool // the next dial to the server is a bootstrap
	lastBM      time.Time
	lastGossip  time.Time
	lastRefine  time.Time
	lastBoot    time.Time
	// Counters (diagnostics): requests sent, answered with data,
	// refused, expired; requests skipped because no supplier was free.
	Asked, Answered, Refused, Expired, Skipped uint64
}

// New returns a mesh node (the source when cfg.Server).
func New(cfg Config, env engine.Env) *Host {
	cfg.defaults()
	now := env.Now()
	h := &Host{Node: baseline.NewNode(cfg.Config, env, false), cfg: cfg, partners: map[wire.PeerID]*partner{},
		bootstrap: map[wire.PeerID]bool{}, dialing: map[wire.PeerID]bool{}, view: map[wire.PeerID]time.Time{},
		pending: map[uint64]pending{}, lastRefine: now, lastBoot: now}
	h.Diagnose = h.diagnose
	// The swarm dials the server at once: that dial bootstraps.
	h.bootstrapOn = !cfg.Server
	return h
}

// Hello marks bootstrap connections.
func (h *Host) Hello() *wire.Hello {
	hello := h.Node.Hello()
	if h.bootstrapOn {
		hello.Token = "bootstrap"
	}
	return hello
}

// Admit takes bootstrap connections (server) and partners up to 2M.
func (h *Host) Admit(hello *wire.Hello, inbound bool) error {
	h.CountHello(hello, true)
	if inbound && hello.Token != "bootstrap" && len(h.partners) >= 2*h.cfg.Partners {
		return errFull
	}
	return nil
}

var errFull = errors.New("donet: partner list full")

// Connected starts a partnership or a bootstrap exchange.
func (h *Host) Connected(hello *wire.Hello, outbound bool) {
	id := hello.Peer
	delete(h.dialing, id)
	now := h.Env.Now()
	if hello.Token == "bootstrap" || (outbound && h.bootstrapOn && id == baseline.ServerID) {
		h.bootstrap[id] = true
		if outbound {
			h.bootstrapOn = false
			h.Send(id, &wire.GetCandidates{Max: 16})
		}
		return
	}
	h.partners[id] = &partner{id: id, bm: buffermap.New(0, int(h.window()), 1), bw: float64(hello.UploadCap) / float64(h.cfg.Partners)}
	h.view[id] = now
	h.Send(id, h.bufferMap())
}

// DialFailed forgets the member.
func (h *Host) DialFailed(id wire.PeerID) {
	delete(h.dialing, id)
	if id != baseline.ServerID {
		delete(h.view, id)
	}
	if id == baseline.ServerID && h.bootstrapOn {
		h.bootstrapOn = false
	}
}

// Disconnected drops a partner and what was asked of it.
func (h *Host) Disconnected(id wire.PeerID) {
	delete(h.partners, id)
	delete(h.bootstrap, id)
	delete(h.dialing, id)
	if id != baseline.ServerID {
		delete(h.view, id)
	}
	for seq, p := range h.pending {
		if p.from == id {
			delete(h.pending, seq)
		}
	}
	h.queue = slices.DeleteFunc(h.queue, func(q queued) bool { return q.to == id })
}

// serve sends queued segments, in request order, while the upload link
// holds less than 300 ms of data (at least two segments, so the link
// stays busy between ticks): the supplier keeps its own queue, as an
// application over TCP does, so requests that outlive their use can be
// cancelled or dropped.
func (h *Host) serve(now time.Time) {
	size := h.Cfg.StreamRate * h.Cfg.SegmentDuration.Seconds()
	limit := max(2*size, 0.3*h.Cfg.Upload)
	for len(h.queue) > 0 && float64(h.Env.UploadBacklog()) < limit {
		q := h.queue[0]
		h.queue = h.queue[1:]
		data, ok := h.Segs[q.seq]
		p := h.partners[q.to]
		if !ok || p == nil || now.Sub(q.at) > h.Cfg.PlayoutDelay {
			continue
		}
		p.exchanged += uint64(len(data))
		h.Send(q.to, &wire.Data{Seq: q.seq, Payload: data})
	}
}

// Receive handles one message.
func (h *Host) Receive(from wire.PeerID, m wire.Message) {
	h.CountIn(m)
	now := h.Env.Now()
	switch m := m.(type) {
	case *wire.GetCandidates:
		h.view[from] = now
		h.Send(from, &wire.Welcome{Peer: h.Cfg.ID, LiveEdge: h.Newest, SegmentDurationMs: uint32(h.Cfg.SegmentDuration / time.Millisecond)})
		h.Send(from, &wire.Candidates{List: h.sample(int(m.Max), from)})
	case *wire.Welcome:
		if from == baseline.ServerID {
			h.Anchor(m.LiveEdge, now)
		}
	case *wire.Candidates:
		h.merge(m.List)
		if h.bootstrap[from] {
			delete(h.bootstrap, from)
			h.Env.Disconnect(from)
			h.fillPartners()
		}
	case *wire.BufferMap:
		if p := h.partners[from]; p != nil {
			p.bm.Load(m)
		}
	case *wire.Request:
		if _, ok := h.Segs[m.Seq]; ok && h.partners[from] != nil && len(h.queue) < maxQueue {
			h.queue = append(h.queue, queued{to: from, seq: m.Seq, at: now})
			h.serve(now)
		} else {
			h.Send(from, &wire.Reject{Seq: m.Seq, Reason: wire.RejectNotFound})
		}
	case *wire.Cancel:
		h.queue = slices.DeleteFunc(h.queue, func(q queued) bool { return q.to == from && q.seq == m.Seq })
	case *wire.Reject:
		if p, ok := h.pending[m.Seq]; ok && p.from == from {
			h.Refused++
			h.settle(m.Seq)
		}
	case *wire.Data:
		req, asked := h.pending[m.Seq]
		if p := h.partners[from]; p != nil {
			p.exchanged += uint64(len(m.Payload))
			// Throughput sample: bytes over the time from request to
			// arrival. Queueing at the supplier counts: a supplier that
			// several partners keep busy looks slow and gets asked less
			// (inter-arrival samples overrate shared suppliers and
			// halved continuity at N = 100).
			if asked && req.from == from {
				if gap := now.Sub(req.asked).Seconds(); gap > 0.005 {
					p.bw = 0.7*p.bw + 0.3*float64(len(m.Payload))/gap
				}
			}
		}
		if asked {
			h.Answered++
		}
		h.settle(m.Seq)
		h.Store(m.Seq, m.Payload, from == baseline.ServerID)
	}
}

// settle forgets a request: answered, refused or expired.
func (h *Host) settle(seq uint64) {
	if p, ok := h.pending[seq]; ok {
		if sup := h.partners[p.from]; sup != nil {
			sup.inFlight--
		}
		delete(h.pending, seq)
	}
}

// merge adds announced members to the view.
func (h *Host) merge(list []wire.Candidate) {
	now := h.Env.Now()
	for _, c := range list {
		if c.Peer == h.Cfg.ID {
			continue
		}
		heard := now.Add(-time.Duration(c.RTTMicros) * time.Millisecond)
		if heard.After(h.view[c.Peer]) {
			h.view[c.Peer] = heard
		}
	}
	h.trimView(now)
}

func (h *Host) trimView(now time.Time) {
	for _, id := range h.sortedView() {
		if now.Sub(h.view[id]) > h.cfg.MemberTTL && h.partners[id] == nil && id != baseline.ServerID {
			delete(h.view, id)
		}
	}
	// Over capacity, forget members at random (not the oldest: a view
	// that keeps only recent joiners links each newcomer to the ones
	// that joined just before it, and the mesh becomes a long chain).
	if over := len(h.view) - h.cfg.ViewSize; over > 0 {
		ids := h.sortedView()
		rng := h.Env.Rand()
		rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		for _, id := range ids[:over] {
			delete(h.view, id)
		}
	}
}

// sample returns up to max members (and this node) as announcements.
func (h *Host) sample(max int, except wire.PeerID) []wire.Candidate {
	now := h.Env.Now()
	ids := h.sortedView()
	rng := h.Env.Rand()
	rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	out := []wire.Candidate{{Peer: h.Cfg.ID}}
	for _, id := range ids {
		if len(out) >= max {
			break
		}
		if id != except {
			out = append(out, wire.Candidate{Peer: id, RTTMicros: uint32(now.Sub(h.view[id]) / time.Millisecond)})
		}
	}
	return out
}

// fillPartners dials random members until M partners are connected or
// being dialled; with no partner and no member left, it bootstraps again.
func (h *Host) fillPartners() {
	if h.Cfg.Server {
		return
	}
	need := h.cfg.Partners - len(h.partners) - len(h.dialing)
	if need <= 0 {
		return
	}
	var cands []wire.PeerID
	for _, id := range h.sortedView() {
		if h.partners[id] == nil && !h.dialing[id] && !h.bootstrap[id] {
			cands = append(cands, id)
		}
	}
	rng := h.Env.Rand()
	rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	for _, id := range cands[:min(need, len(cands))] {
		h.dialing[id] = true
		h.Env.Dial(wire.Candidate{Peer: id})
	}
	now := h.Env.Now()
	if len(cands) < need && len(h.partners) == 0 && !h.bootstrapOn && now.Sub(h.lastBoot) >= time.Second {
		h.lastBoot, h.bootstrapOn = now, true
		h.dialing[baseline.ServerID] = true
		h.Env.Dial(wire.Candidate{Peer: baseline.ServerID})
	}
}

// window is the buffer map's span in segments: the whole buffer, from
// the newest segment held back over three playout delays (a multiple of
// 64, as package buffermap wants).
func (h *Host) window() uint64 {
	w := uint64(3*h.Cfg.PlayoutDelay/h.Cfg.SegmentDuration) + 8
	return (w + 63) / 64 * 64
}

// bufferMap is this node's buffer map, ending at its newest segment.
func (h *Host) bufferMap() *wire.BufferMap {
	w := h.window()
	base := uint64(0)
	if h.HaveAny && h.Newest+1 > w {
		base = h.Newest + 1 - w
	}
	m := buffermap.New(base, int(w), 1)
	for seq := range h.Segs {
		m.Set(seq, 0)
	}
	return m.Encode()
}

// AddSegment is the source's input.
func (h *Host) AddSegment(seq uint64, _ []byte, chunks [][]byte) error {
	h.AddSource(seq, chunks)
	return nil
}

// Tick plays, exchanges buffer maps, schedules, gossips and refines.
func (h *Host) Tick() {
	now := h.Env.Now()
	h.Play(now)
	h.serve(now)
	if now.Sub(h.lastBM) >= h.cfg.MapEvery {
		h.lastBM = now
		bm := h.bufferMap()
		for _, id := range h.sortedPartners() {
			h.Send(id, bm)
		}
		h.schedule(now)
	}
	if now.Sub(h.lastGossip) >= h.cfg.GossipEvery {
		h.lastGossip = now
		if ids := h.sortedPartners(); len(ids) > 0 {
			to := ids[h.Env.Rand().IntN(len(ids))]
			h.Send(to, &wire.Candidates{List: h.sample(8, to)})
		}
		h.trimView(now)
	}
	if !h.Cfg.Server && now.Sub(h.lastRefine) >= h.cfg.RefineEvery {
		h.lastRefine = now
		h.refine()
	}
	h.fillPartners()
}

// refine drops the partner that exchanged the fewest bytes.
func (h *Host) refine() {
	if len(h.partners) < h.cfg.Partners {
		return
	}
	var worst *partner
	for _, id := range h.sortedPartners() {
		p := h.partners[id]
		if worst == nil || p.exchanged < worst.exchanged {
			worst = p
		}
	}
	for _, p := range h.partners {
		p.exchanged = 0
	}
	if worst != nil {
		h.Env.Disconnect(worst.id)
	}
}

// schedule is DONet's scheduling heuristic.
func (h *Host) schedule(now time.Time) {
	if h.Cfg.Server || !h.Anchored() {
		return
	}
	playhead, ok := h.Playhead()
	if !ok {
		return
	}
	for _, seq := range h.sortedPending() {
		if p := h.pending[seq]; now.After(p.expires) {
			h.Expired++
			h.settle(seq)
			h.Send(p.from, &wire.Cancel{Seq: seq})
		}
	}
	type want struct {
		seq       uint64
		suppliers []*partner
	}
	ids := h.sortedPartners()
	var wants []want
	size := h.Cfg.StreamRate * h.Cfg.SegmentDuration.Seconds()
	for seq := playhead; seq < playhead+h.window(); seq++ {
		if _, ok := h.Segs[seq]; ok {
			continue
		}
		if _, ok := h.pending[seq]; ok {
			continue
		}
		var sup []*partner
		for _, id := range ids {
			if p := h.partners[id]; p.bm.Has(seq, 0) {
				sup = append(sup, p)
			}
		}
		if len(sup) > 0 {
			wants = append(wants, want{seq, sup})
		}
	}
	// Rarest first; earlier deadline on a tie.
	slices.SortStableFunc(wants, func(a, b want) int { return len(a.suppliers) - len(b.suppliers) })
	for _, w := range wants {
		deadline := h.Deadline(w.seq)
		var best *partner
		var bestDone time.Time
		for _, p := range w.suppliers {
			if p.inFlight >= h.cfg.Outstanding {
				continue
			}
			start := now
			if p.busy.After(start) {
				start = p.busy
			}
			done := start.Add(time.Duration(size / max(p.bw, 1) * float64(time.Second)))
			if done.After(deadline) {
				continue
			}
			if best == nil || p.bw > best.bw {
				best, bestDone = p, done
			}
		}
		if best == nil {
			h.Skipped++
			continue
		}
		best.busy = bestDone
		best.inFlight++
		h.Asked++
		h.pending[w.seq] = pending{from: best.id, asked: now, expires: bestDone.Add(time.Second)}
		h.Send(best.id, &wire.Request{Seq: w.seq})
	}
}

func (h *Host) sortedPartners() []wire.PeerID { return slices.Sorted(maps.Keys(h.partners)) }

func (h *Host) sortedPending() []uint64 { return slices.Sorted(maps.Keys(h.pending)) }

func (h *Host) sortedView() []wire.PeerID { return slices.Sorted(maps.Keys(h.view)) }

// Partners is the number of partners.
func (h *Host) Partners() int { return len(h.partners) }

// diagnose counts why a segment missed its deadline.
func (h *Host) diagnose(seq uint64, st *engine.Stats) {
	if _, ok := h.pending[seq]; ok {
		st.MissInFlightPeer++
		return
	}
	for _, p := range h.partners {
		if p.bm.Has(seq, 0) {
			st.MissNotRequested++
			return
		}
	}
	st.MissNoHolder++
}

// PartnerIDs lists the partners (for tests).
func (h *Host) PartnerIDs() []wire.PeerID { return h.sortedPartners() }

// Knows tells whether id is in the membership view.
func (h *Host) Knows(id wire.PeerID) bool { _, ok := h.view[id]; return ok }

// InFlight is the number of requests to partner id not answered yet.
func (h *Host) InFlight(id wire.PeerID) int {
	if p := h.partners[id]; p != nil {
		return p.inFlight
	}
	return 0
}
