package engine

import (
	"time"

	"github.com/coopstreaming/coop/peerproto/push"
	"github.com/coopstreaming/coop/peerproto/qos"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// This file is push: the fresh edge of the stream travels along
// sub-stream subscriptions (peerproto/push decides the policy). A peer
// subscribes to each sub-stream at one parent — a partner nearer the
// server, or the server itself for the few roots its upload feeds — and
// the parent forwards every chunk of the sub-stream, in the layers
// subscribed, as soon as it holds it. Pull (peer.go) repairs what push
// did not deliver before the chunk's deadline comes near.

// subscription is a peer's subscription to one sub-stream.
type subscription struct {
	parent wire.PeerID // 0: none
	asked  bool        // Subscribe sent, not answered yet
	at     time.Time   // when asked, or when last (re)accepted
	want   int         // layers asked for
	layers int         // layers the parent pushes (0 while asked)
	newest uint64      // newest segment pushed by the parent
	pushed bool        // the parent pushed anything
	lastAt time.Time   // when it last pushed
	// layerNewest is, per layer, 1 + the newest segment the parent pushed
	// a piece of in that layer (0: none yet; push.Awaited).
	layerNewest [maxPushLayers]uint64
}

// maxPushLayers bounds the layers whose pushes a subscription follows
// (the layers above are never awaited).
const maxPushLayers = 8

// pushState is a node's part in push: its subscriptions and hop counts
// (peer), the cost of the subscriptions it admitted (both) and the roots
// of each sub-stream (server).
type pushState struct {
	k      int // sub-streams (0: push off)
	subs   [wire.MaxSubstreams]subscription
	hops   [wire.MaxSubstreams]uint8
	used   float64 // upload the admitted subscriptions cost, bytes/s
	nsubs  int     // admitted subscriptions
	roots  [wire.MaxSubstreams][]wire.PeerID
	sentAt time.Time // last Hops sent
	dirty  bool      // hops changed since
	tickAt time.Time
	// pullOnlyUntil: a narrow link pulls only until then (pullOnly).
	pullOnlyUntil time.Time
	// excluded holds back a partner (per sub-stream) that refused or
	// failed as a parent, until the time given.
	excluded map[exclusion]time.Time
}

type exclusion struct {
	id  wire.PeerID
	sub int
}

// Push timing.
const (
	pushTick       = 200 * time.Millisecond
	hopsEvery      = 250 * time.Millisecond
	subscribeWait  = 2 * time.Second  // an unanswered Subscribe is a refusal
	firstPushWait  = 4 * time.Second  // an accepted parent that never pushes is replaced
	excludePeer    = 10 * time.Second // a refusing or failing peer parent
	excludeServer  = 20 * time.Second // a refusing server
	pushTTL        = time.Second      // a push queued longer is dropped (the child repairs)
	pushStaleSlack = 500 * time.Millisecond
	rootUpgradeGap = 1.5              // a root is replaced by a peer with this much more upload
	pushHeadroom   = 1.5              // pullOnly: download ÷ rate of the layers played
	pullOnlyFor    = 30 * time.Second // pullOnly: how long a narrow link pulls only
)

func (e *Engine) initPush() {
	if e.cfg.DisablePush {
		return
	}
	e.push.k = min(max(e.cfg.Substreams, 1), wire.MaxSubstreams)
	e.push.excluded = make(map[exclusion]time.Time)
	for i := range e.push.hops {
		e.push.hops[i] = wire.NoHops
		if e.IsServer() {
			e.push.hops[i] = 0
		}
	}
}

// layerRates is the stream's rate per layer in bytes/s: from the chunk
// sizes seen (a layer not seen yet is taken as the mean of those seen).
func (e *Engine) layerRates() []float64 {
	r := make([]float64, e.cfg.Layers)
	seen, sum := 0, 0.0
	for l := range r {
		if e.seenLayer[l] {
			seen++
			sum += e.chunkSizes[l]
		}
	}
	for l := range r {
		size := e.chunkSizes[l]
		if !e.seenLayer[l] && seen > 0 {
			size = sum / float64(seen)
		}
		r[l] = size / e.segDur.Seconds()
	}
	return r
}

// pushCapacity is the upload a node may spend on its children.
func (e *Engine) pushCapacity() float64 {
	if e.cfg.UploadCap <= 0 {
		return 0
	}
	if e.IsServer() {
		return push.ServerShare * e.cfg.UploadCap
	}
	return push.Share * e.cfg.UploadCap
}

// onSubscribe admits, changes or ends a partner's subscription.
func (e *Engine) onSubscribe(p *partner, m *wire.Subscribe) {
	k := int(m.Substream)
	if e.push.k == 0 || int(m.Substreams) != e.push.k || k >= e.push.k {
		e.send(p.id, &wire.Subscribed{Substream: m.Substream})
		return
	}
	e.endChild(p, k)
	if m.Layers == 0 {
		return
	}
	wanted := min(int(m.Layers), e.cfg.Layers)
	rates := e.layerRates()
	costOf := func(n int) float64 { return push.Cost(rates, n, e.push.k) }
	// Room for every layer asked is the rule: admitting roots by their
	// base layer alone (so that a server with a small cap takes some)
	// collapsed N = 2000 in the simulator (0.93 -> 0.00 base
	// continuity); such a server seeds instead (AddSegment).
	if e.IsServer() && !e.rootEligible(p, k, costOf(wanted)) {
		e.send(p.id, &wire.Subscribed{Substream: m.Substream})
		return
	}
	asked := wanted
	if !e.IsServer() && push.Reserves(e.pushCapacity(), e.streamRate()) {
		wanted = e.cfg.Layers // admitted by the whole stream, granted what was asked
	}
	admit := func() (int, int) {
		return push.Admit(push.Load{Capacity: e.pushCapacity(), Used: e.push.used, Subs: e.push.nsubs}, wanted, costOf)
	}
	n, charged := admit()
	if n == 0 && !e.IsServer() && e.preempt(peerUpload(p)) {
		n, charged = admit() // preempt freed room
	}
	n = min(n, asked)
	if n > 0 {
		p.childLayers[k], p.childCost[k], p.childCharged[k] = uint8(n), costOf(charged), uint8(charged)
		e.push.used += p.childCost[k]
		e.push.nsubs++
		if e.IsServer() {
			e.push.roots[k] = append(e.push.roots[k], p.id)
			e.seeds[p.id] = true
		}
	}
	e.send(p.id, &wire.Subscribed{Substream: m.Substream, Layers: uint8(n)})
}

// preempt makes room at a full peer parent for a subscriber with upload
// up: it ends the subscription (in any sub-stream) of the child with the
// least upload, if push.Preempt says so, and tells that child, which
// then subscribes elsewhere (the server's own swaps are rootEligible's).
func (e *Engine) preempt(up float64) bool {
	if e.pushCapacity() <= 0 {
		return false
	}
	type sub struct {
		p *partner
		k int
	}
	var subs []sub
	var uploads []float64
	for _, q := range e.list() {
		for k := 0; k < e.push.k; k++ {
			if q.childLayers[k] > 0 {
				subs = append(subs, sub{q, k})
				uploads = append(uploads, peerUpload(q))
			}
		}
	}
	i := push.Preempt(uploads, up)
	if i < 0 {
		return false
	}
	w := subs[i]
	e.endChild(w.p, w.k)
	e.send(w.p.id, &wire.Subscribed{Substream: uint8(w.k)})
	e.stats.PushPreempted++
	return true
}

// rootEligible is the server's choice of roots: peers whose upload
// (declared or reported) carries at least the stream; when the roots'
// budget is spent, a candidate with clearly more upload replaces the
// weakest root of the sub-stream.
func (e *Engine) rootEligible(p *partner, k int, cost float64) bool {
	up := peerUpload(p)
	if p.hello.UploadCap > 0 && up < e.segRate {
		return false
	}
	// Each sub-stream has its share of the roots' budget, so that every
	// sub-stream has roots.
	used := 0.0
	for _, id := range e.push.roots[k] {
		if q := e.partners[id]; q != nil {
			used += q.childCost[k]
		}
	}
	if cap := e.pushCapacity() / float64(e.push.k); cap <= 0 || used+cost <= cap {
		return true
	}
	weakest, wUp := wire.PeerID(0), 0.0
	for _, id := range e.push.roots[k] {
		if q := e.partners[id]; q != nil && (weakest == 0 || peerUpload(q) < wUp) {
			weakest, wUp = id, peerUpload(q)
		}
	}
	if weakest == 0 || up < rootUpgradeGap*wUp {
		return false
	}
	e.endChild(e.partners[weakest], k)
	e.send(weakest, &wire.Subscribed{Substream: uint8(k)})
	return true
}

func peerUpload(p *partner) float64 {
	return max(float64(p.reported.UploadRate), float64(p.hello.UploadCap))
}

// endChild ends partner p's subscription to sub-stream k, if any: its
// cost leaves the admitted load (and, at the server, p the roots).
func (e *Engine) endChild(p *partner, k int) {
	if p.childLayers[k] == 0 {
		return
	}
	e.push.used -= p.childCost[k]
	e.push.nsubs--
	p.childLayers[k], p.childCost[k], p.childCharged[k] = 0, 0, 0
	e.dropRoot(k, p.id)
}

// dropRoot takes a peer out of the server's roots of sub-stream k (and
// out of its seeds once it is a root of none).
func (e *Engine) dropRoot(k int, id wire.PeerID) {
	if !e.IsServer() {
		return
	}
	r := e.push.roots[k]
	for i, x := range r {
		if x == id {
			e.push.roots[k] = append(r[:i], r[i+1:]...)
			break
		}
	}
	for j := 0; j < e.push.k; j++ {
		for _, x := range e.push.roots[j] {
			if x == id {
				return
			}
		}
	}
	delete(e.seeds, id)
}

// pushPartnerLeft forgets a departed partner's subscriptions and, when it
// was a parent, the sub-streams it pushed.
func (e *Engine) pushPartnerLeft(p *partner) {
	if e.push.k == 0 {
		return
	}
	for k := 0; k < e.push.k; k++ {
		e.endChild(p, k)
		if s := &e.push.subs[k]; s.parent == p.id {
			*s = subscription{}
			e.setHops(k, wire.NoHops)
		}
	}
}

// onSubscribed follows a parent's answer (or its end of pushing).
func (e *Engine) onSubscribed(p *partner, m *wire.Subscribed, now time.Time) {
	k := int(m.Substream)
	if k >= e.push.k {
		return
	}
	s := &e.push.subs[k]
	if s.parent != p.id {
		return
	}
	if m.Layers == 0 {
		e.unsubscribe(k, now, false)
		return
	}
	if s.asked || s.layers == 0 {
		s.at = now
	}
	s.asked, s.layers = false, int(m.Layers)
	e.setHops(k, push.HopsVia(e.partnerHops(p, k)))
}

// onHops records a partner's hop counts.
func (e *Engine) onHops(p *partner, m *wire.Hops) {
	for k := range p.hops {
		p.hops[k] = wire.NoHops
		if k < len(m.Hops) {
			p.hops[k] = m.Hops[k]
		}
	}
	for k := 0; k < e.push.k; k++ {
		if s := &e.push.subs[k]; s.parent == p.id && s.layers > 0 {
			e.setHops(k, push.HopsVia(p.hops[k]))
		}
	}
}

func (e *Engine) partnerHops(p *partner, k int) uint8 {
	if p.server {
		return 0
	}
	return p.hops[k]
}

func (e *Engine) setHops(k int, h uint8) {
	if e.push.hops[k] != h {
		e.push.hops[k] = h
		e.push.dirty = true
	}
}

// unsubscribe ends the subscription to sub-stream k (telling the parent
// unless it ended it) and holds the parent back for a while.
func (e *Engine) unsubscribe(k int, now time.Time, tell bool) {
	s := &e.push.subs[k]
	if s.parent == 0 {
		return
	}
	if tell {
		e.send(s.parent, &wire.Subscribe{Substream: uint8(k), Substreams: uint8(e.push.k)})
	}
	hold := excludePeer
	if s.parent == e.serverID {
		hold = excludeServer
	}
	e.push.excluded[exclusion{s.parent, k}] = now.Add(hold)
	*s = subscription{}
	e.setHops(k, wire.NoHops)
}

// pullOnly tells whether the peer stays out of push for now: for
// pullOnlyFor after its download was measured to carry the layers it plays with less than pushHeadroom to spare. Pushes
// arrive when the parents have them, not when the link is free, and a
// late one is also repaired: in the simulator a peer whose link carries
// 1.3 times the base layer played 0.4-0.7 of the base with push and all
// of it without.
func (e *Engine) pullOnly(now time.Time) bool {
	if now.Before(e.push.pullOnlyUntil) {
		return true
	}
	if !e.downCap.Measured() {
		return false
	}
	need, rates := 0.0, e.layerRates()
	for l := 0; l < e.qos.Layers() && l < len(rates); l++ {
		need += rates[l]
	}
	if e.downCap.Value() >= pushHeadroom*need {
		return false
	}
	e.push.pullOnlyUntil = now.Add(pullOnlyFor)
	e.stats.PushNarrowLink++
	return true
}

// pushRate is what the parents push to this peer, bytes/s.
func (e *Engine) pushRate() float64 {
	if e.push.k == 0 {
		return 0
	}
	rates, r := e.layerRates(), 0.0
	for k := 0; k < e.push.k; k++ {
		if s := e.push.subs[k]; s.parent != 0 && s.layers > 0 {
			r += push.Cost(rates, s.layers, e.push.k)
		}
	}
	return r
}

// pushWant is how many layers a peer asks a parent of sub-stream k for:
// one layer beyond those it fetches (so a layer QoS may re-add is already
// on its way; the player plays whatever arrives), at least what its own
// children there take, and at a root (the server as parent) every layer.
// Layer control happens where capacity runs out — a parent charges the
// layers its upload carries and sheds the pushes of the others first —
// and never beyond what the measured download carries with headroom.
// (Holding the layer ahead back for 30 s after any late push, as before,
// kept the third layer out of the swarm: a parent's queue sheds
// enhancement pushes first, so late pushes say nothing of this peer's
// link; TestSimQuick N = 500 seed 1: quality 0.59 with the hold, 0.65
// without.)
func (e *Engine) pushWant(k int, parent wire.PeerID) int {
	root := parent == e.serverID
	n := e.cfg.Layers // a root: chosen by its upload, it relays every layer
	if !root {
		n = e.qos.Layers() + 1
		for _, p := range e.list() {
			n = max(n, int(p.childLayers[k]))
		}
		n = min(n, e.cfg.Layers)
	}
	if !e.downCap.Measured() {
		// For its first NewcomerBaseOnly, unless its download is measured
		// by then, a newcomer is pushed the base layer only, by peer
		// parents and by the server alike: they push at their pace,
		// whatever the link carries, and the base is the half of the
		// stream that plays (a flash crowd of newcomers then finds peer
		// parents instead of queueing at the server). A newcomer taken
		// as a root was pushed every layer at once: with parents that
		// now push their upper layers, a link carrying only the base
		// lost it (TestCappedPeer: base continuity 0.90/0.58/1.00 over
		// seeds 1-3; 1.00 on each with the rule for roots too).
		if e.env.Now().Sub(e.joinedAt) < e.cfg.NewcomerBaseOnly {
			return 1
		}
		return n
	}
	// Never more than the measured download carries with headroom:
	// pushes the link cannot take delay the base behind them.
	fit, sum := 1, 0.0
	for l, r := range e.layerRates() {
		sum += r
		if sum*qos.ReAddHeadroom <= e.downCap.Value() {
			fit = l + 1
		}
	}
	return min(n, fit)
}

// pushSampleGap: a pushed piece that arrives within this of the previous
// delivery is a download capacity sample (the link was busy).
const pushSampleGap = 100 * time.Millisecond

// managePush is a peer's periodic push work: replace failed or lagging
// parents, choose parents for sub-streams without one, follow the layers
// needed, and tell partners of changed hop counts.
func (e *Engine) managePush(now time.Time) {
	if e.push.k == 0 || now.Sub(e.push.tickAt) < pushTick {
		e.sendHops(now)
		return
	}
	e.push.tickAt = now
	for x, until := range e.push.excluded {
		if now.After(until) {
			delete(e.push.excluded, x)
		}
	}
	if !e.playing {
		return
	}
	if e.pullOnly(now) {
		for k := 0; k < e.push.k; k++ {
			e.unsubscribe(k, now, true)
		}
		e.sendHops(now)
		return
	}
	var cands []pushCandidate
	for k := 0; k < e.push.k; k++ {
		s := &e.push.subs[k]
		if s.parent != 0 {
			switch {
			case s.asked && now.Sub(s.at) > subscribeWait:
				e.unsubscribe(k, now, true)
			case !s.asked && !s.pushed && now.Sub(s.at) > firstPushWait:
				e.stats.PushParentsSilent++
				e.unsubscribe(k, now, true)
			case !s.asked && e.haveEdge && push.Lagging(s.newest, s.pushed, e.liveEdge, push.LagLimit(e.cfg.PlayoutDelay, e.cfg.Urgent, e.segDur, e.push.k)):
				e.stats.PushParentsReplaced++
				e.unsubscribe(k, now, true)
			case !s.asked && e.pushWant(k, s.parent) != s.want:
				s.want = e.pushWant(k, s.parent)
				s.asked, s.at = true, now
				e.send(s.parent, &wire.Subscribe{Substream: uint8(k), Substreams: uint8(e.push.k), Layers: uint8(s.want)})
			}
		}
		if s.parent != 0 {
			continue
		}
		if cands == nil {
			cands = e.pushCandidates()
		}
		id := e.chooseParent(cands, k)
		if id == 0 {
			continue
		}
		s.parent, s.asked, s.at, s.want = id, true, now, e.pushWant(k, id)
		e.stats.Subscribes++
		e.send(id, &wire.Subscribe{Substream: uint8(k), Substreams: uint8(e.push.k), Layers: uint8(s.want)})
	}
	e.sendHops(now)
}

type pushCandidate struct {
	p     *partner
	score float64
}

func (e *Engine) pushCandidates() []pushCandidate {
	now := e.env.Now()
	out := make([]pushCandidate, 0, len(e.partners))
	for _, p := range e.list() {
		out = append(out, pushCandidate{p, p.recv.Rate(now) + peerUpload(p)})
	}
	return out
}

// chooseParent picks a parent for sub-stream k (0: none now).
func (e *Engine) chooseParent(cands []pushCandidate, k int) wire.PeerID {
	pc := make([]push.Candidate, len(cands))
	for i, c := range cands {
		_, ex := e.push.excluded[exclusion{c.p.id, k}]
		pc[i] = push.Candidate{Hops: e.partnerHops(c.p, k), Score: c.score, Excluded: ex}
	}
	i := push.Choose(pc, wire.NoHops, e.env.Rand())
	if i < 0 {
		return 0
	}
	return cands[i].p.id
}

// sendHops tells peer partners of changed hop counts (at most every
// hopsEvery).
func (e *Engine) sendHops(now time.Time) {
	if !e.push.dirty || now.Sub(e.push.sentAt) < hopsEvery {
		return
	}
	e.push.dirty, e.push.sentAt = false, now
	msg := e.hopsMsg()
	for _, p := range e.list() {
		if !p.server {
			e.send(p.id, msg)
		}
	}
}

func (e *Engine) hopsMsg() *wire.Hops {
	return &wire.Hops{Hops: append([]uint8(nil), e.push.hops[:e.push.k]...)}
}

// helloHops gives a new peer partner this node's hop counts.
func (e *Engine) helloHops(p *partner) {
	if e.push.k == 0 || e.IsServer() || p.server {
		return
	}
	for k := 0; k < e.push.k; k++ {
		if e.push.hops[k] != wire.NoHops {
			e.send(p.id, e.hopsMsg())
			return
		}
	}
}

// pushed records a chunk that arrived unrequested from a partner: the
// parent of its sub-stream is alive.
func (e *Engine) pushed(p *partner, seq uint64, layer int) {
	if e.push.k == 0 {
		return
	}
	s := &e.push.subs[push.Substream(seq, e.push.k)]
	if s.parent == p.id {
		s.lastAt = e.env.Now()
		if !s.pushed || seq > s.newest {
			s.newest, s.pushed = seq, true
		}
		if layer < maxPushLayers && seq+1 > s.layerNewest[layer] {
			s.layerNewest[layer] = seq + 1
		}
	}
}

// expectPush tells whether a chunk will come by push: its sub-stream's
// parent pushes its layer (an enhancement layer: and pushed it in the
// sub-stream's previous round, push.Awaited) and its deadline is not
// near (then it is repaired by pull like any other).
func (e *Engine) expectPush(seq uint64, layer int, now time.Time) bool {
	if e.push.k == 0 {
		return false
	}
	s := &e.push.subs[push.Substream(seq, e.push.k)]
	if s.parent == 0 || layer >= s.layers || e.Deadline(seq).Sub(now) <= e.cfg.Urgent {
		return false
	}
	if layer > 0 && (layer >= maxPushLayers || !push.Awaited(s.layerNewest[layer], seq, e.push.k)) {
		return false
	}
	// A parent silent for two rounds of sub-streams (crashed, congested) is
	// not waited for: its chunks are pulled until it pushes again.
	stale := 2*time.Duration(e.push.k)*e.segDur + pushStaleSlack
	if s.pushed {
		return now.Sub(s.lastAt) < stale
	}
	return now.Sub(s.at) < stale
}

// forward queues a piece just stored (piece < 0: the whole chunk, at the
// server) for every child subscribed to its sub-stream in its layer; the
// manifest goes with a child's first piece of the segment (sendPieces).
func (e *Engine) forward(seq uint64, layer, piece int, now time.Time) {
	if e.push.k == 0 {
		return
	}
	k := push.Substream(seq, e.push.k)
	add := func(p *partner) {
		if p == nil || int(p.childLayers[k]) <= layer {
			return
		}
		e.queue = append(e.queue, servReq{from: p.id, seq: seq, layer: layer, piece: piece, at: now, push: true,
			committed: layer < int(p.childCharged[k])})
		e.stats.Pushes++
	}
	if e.IsServer() {
		for _, id := range e.push.roots[k] {
			add(e.partners[id])
		}
		return
	}
	for _, p := range e.list() {
		add(p)
	}
}
