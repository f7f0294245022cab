// Package tree is the simulator's tree-overlay baseline: a single-layer,
// degree-bounded push tree rooted at the server.
//
// Each node takes at most ⌊upload ÷ stream rate⌋ children and pushes every
// segment it receives to all of them. A newcomer (or an orphan whose
// parent left) asks the server to adopt it; a node without a free slot
// redirects the request to the child whose subtree has the nearest free
// slot, so the tree fills breadth first; a full node whose joiner can
// take more children than one of its own children swaps them (the
// displaced child moves under the joiner), so capacity rises toward the
// root. A node never adopts one of its
// ancestors (each node knows its path to the root). An orphan keeps its
// own subtree and rejoins at the root; what is pushed while it is
// detached is lost to its subtree (pure push: a parent with a full
// complement of children has no spare upload for catch-up bursts, and a
// burst would delay its whole subtree for good). The tree is built on the same wire messages as the engine:
//
//	GetCandidates        adopt me
//	Candidates           path to the root ending with the sender: adopted
//	                     (or, from a parent, a path update); one other
//	                     node: ask it instead; empty: full, retry later
//	Report{Partners, MaxLayer}  child to parent every second: free slots
//	                     in the subtree, and the depth of the nearest one
//	Welcome{LiveEdge}    server to newcomer: anchors the playback clock
package tree

import (
	"maps"
	"math"
	"slices"
	"time"

	"github.com/coopstreaming/coop/lab/baseline"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/wire"
)

const (
	reportEvery = time.Second
	retryAfter  = 500 * time.Millisecond
	maxHops     = 32
	noFree      = math.MaxUint8
)

type child struct {
	free  int // free slots in its subtree
	depth int // depth of its nearest free slot below it (noFree: none)
	slots int // its own degree bound
}

// Host is one tree node.
type Host struct {
	*baseline.Node
	slots    int
	parent   wire.PeerID
	attached bool
	path     []wire.PeerID // root ... parent
	children map[wire.PeerID]*child
	conns    map[wire.PeerID]int // connected nodes and their degree bounds
	// joining: an adoption request is under way at target.
	joining    bool
	target     wire.PeerID
	hops       int
	retryAt    time.Time
	lastReport time.Time
	reported   [2]int // free slots and depth last reported
	// Joins counts adoptions; Redirects and Retries the detours on the way;
	// Preemptions the children this node displaced for a stronger joiner.
	Joins, Redirects, Retries, Preemptions int
}

// New returns a tree node (the root when cfg.Server).
func New(cfg baseline.Config, env engine.Env) *Host {
	h := &Host{Node: baseline.NewNode(cfg, env, true), children: map[wire.PeerID]*child{}, conns: map[wire.PeerID]int{}}
	h.slots = slotsFor(cfg.Upload, cfg.StreamRate)
	if cfg.Server {
		h.attached = true
	} else {
		// The swarm dials the server at once: that is the first request.
		h.joining, h.target = true, baseline.ServerID
	}
	return h
}

func slotsFor(upload, rate float64) int { return int(math.Floor(upload/rate + 1e-9)) }

// Admit accepts every connection: adoption is decided per request.
func (h *Host) Admit(hello *wire.Hello, inbound bool) error {
	h.CountHello(hello, true)
	return nil
}

// Connected sends the adoption request on the connection being joined.
func (h *Host) Connected(hello *wire.Hello, outbound bool) {
	h.conns[hello.Peer] = slotsFor(float64(hello.UploadCap), h.Cfg.StreamRate)
	if h.Cfg.Server && !outbound {
		edge := uint64(0)
		if h.HaveAny {
			edge = h.Newest
		}
		h.Send(hello.Peer, &wire.Welcome{Peer: h.Cfg.ID, LiveEdge: edge, SegmentDurationMs: uint32(h.Cfg.SegmentDuration / time.Millisecond)})
	}
	if outbound && h.joining && hello.Peer == h.target {
		h.Send(hello.Peer, &wire.GetCandidates{Max: 1})
	}
}

// DialFailed retries the join from the root.
func (h *Host) DialFailed(id wire.PeerID) {
	if h.joining && id == h.target {
		h.retry()
	}
}

// Disconnected handles a parent, child or join target going away.
func (h *Host) Disconnected(id wire.PeerID) {
	delete(h.conns, id)
	delete(h.children, id)
	if h.attached && id == h.parent && !h.Cfg.Server {
		h.detach()
		h.joinAt(baseline.ServerID)
		return
	}
	if h.joining && id == h.target {
		h.retry()
	}
}

// detach leaves the parent (its subtree stays with this node).
func (h *Host) detach() { h.attached, h.parent, h.path = false, 0, nil }

// joinAt starts an adoption request at target.
func (h *Host) joinAt(target wire.PeerID) {
	h.joining, h.target, h.hops, h.retryAt = true, target, 0, time.Time{}
	h.dial(target)
}

func (h *Host) dial(id wire.PeerID) {
	if _, ok := h.conns[id]; ok {
		h.Send(id, &wire.GetCandidates{Max: 1})
		return
	}
	h.Env.Dial(wire.Candidate{Peer: id})
}

// retry asks the root again a little later.
func (h *Host) retry() {
	h.Retries++
	h.joining, h.target, h.retryAt = true, 0, h.Env.Now().Add(retryAfter)
}

// dropIfIdle closes a connection that is neither to the parent nor a
// child.
func (h *Host) dropIfIdle(id wire.PeerID) {
	if _, ok := h.conns[id]; ok && id != h.parent && h.children[id] == nil {
		h.Env.Disconnect(id)
	}
}

// Receive handles one message.
func (h *Host) Receive(from wire.PeerID, m wire.Message) {
	h.CountIn(m)
	switch m := m.(type) {
	case *wire.Welcome:
		if from == baseline.ServerID {
			h.Anchor(m.LiveEdge, h.Env.Now())
		}
	case *wire.GetCandidates:
		h.onAdopt(from)
	case *wire.Candidates:
		h.onCandidates(from, m.List)
	case *wire.Report:
		if c := h.children[from]; c != nil {
			c.free, c.depth = int(m.Partners), int(m.MaxLayer)
		}
	case *wire.Data:
		if from != h.parent || !h.attached {
			return
		}
		if h.Store(m.Seq, m.Payload, from == baseline.ServerID) {
			h.forward(m)
		}
	}
}

func (h *Host) onAdopt(from wire.PeerID) {
	eligible := h.attached && !slices.Contains(h.path, from) && from != h.Cfg.ID
	joinerSlots := h.conns[from]
	if eligible && len(h.children) < h.slots {
		h.children[from] = &child{depth: noFree, slots: joinerSlots}
		h.Send(from, &wire.Candidates{List: h.pathTo()})
		return
	}
	// Full: a joiner that can take more children than one of ours takes
	// its place, and that child moves under the joiner (which has a slot
	// for it). Capacity rises toward the root; without it, a tree whose
	// free slots happen to be filled by peers that cannot forward stops
	// growing although the newcomers could carry it.
	if eligible && joinerSlots >= 1 {
		var low wire.PeerID
		for _, id := range h.sortedChildren() {
			if c := h.children[id]; c.slots < joinerSlots && (low == 0 || c.slots < h.children[low].slots) {
				low = id
			}
		}
		if low != 0 {
			delete(h.children, low)
			h.children[from] = &child{depth: noFree, slots: joinerSlots}
			h.Send(from, &wire.Candidates{List: h.pathTo()})
			h.Send(low, &wire.Candidates{List: []wire.Candidate{{Peer: from}}})
			h.Preemptions++
			return
		}
	}
	// Redirect to the child with the nearest free slot (most free slots
	// on a tie), or back to the root; the root without room says retry.
	var best wire.PeerID
	bestDepth, bestFree := noFree, 0
	for _, id := range h.sortedChildren() {
		c := h.children[id]
		if id == from || c.free == 0 || c.depth == noFree {
			continue
		}
		if c.depth < bestDepth || (c.depth == bestDepth && c.free > bestFree) {
			best, bestDepth, bestFree = id, c.depth, c.free
		}
	}
	switch {
	case best != 0:
		// Count the slot as taken until the child's next report, so a
		// burst of joiners spreads over the free slots.
		c := h.children[best]
		if c.free--; c.free == 0 {
			c.depth = noFree
		}
		h.Send(from, &wire.Candidates{List: []wire.Candidate{{Peer: best}}})
	case h.Cfg.Server:
		h.Send(from, &wire.Candidates{})
	default:
		h.Send(from, &wire.Candidates{List: []wire.Candidate{{Peer: baseline.ServerID}}})
	}
}

func (h *Host) pathTo() []wire.Candidate {
	out := make([]wire.Candidate, 0, len(h.path)+1)
	for _, id := range h.path {
		out = append(out, wire.Candidate{Peer: id})
	}
	return append(out, wire.Candidate{Peer: h.Cfg.ID})
}

func (h *Host) onCandidates(from wire.PeerID, list []wire.Candidate) {
	adopted := len(list) > 0 && list[len(list)-1].Peer == from
	switch {
	case adopted && h.attached && from == h.parent:
		h.setPath(list)
	case !adopted && len(list) == 1 && h.attached && from == h.parent:
		// Displaced by a newcomer with more slots: join under it (the
		// subtree comes along).
		h.detach()
		h.dropIfIdle(from)
		h.joinAt(list[0].Peer)
	case adopted && h.joining && from == h.target:
		h.joining, h.attached, h.parent = false, true, from
		h.Joins++
		if !h.setPath(list) {
			return
		}
		for _, id := range h.sortedConns() {
			h.dropIfIdle(id)
		}
	case !adopted && h.joining && from == h.target:
		h.dropIfIdle(from)
		h.hops++
		h.Redirects++
		if len(list) == 0 || h.hops > maxHops {
			h.retry()
			return
		}
		h.target = list[0].Peer
		h.dial(h.target)
	}
}

// setPath takes the path from the parent and passes it down; a path that
// contains this node means a cycle formed while subtrees moved: leave it.
func (h *Host) setPath(list []wire.Candidate) bool {
	path := make([]wire.PeerID, 0, len(list))
	for _, c := range list {
		if c.Peer == h.Cfg.ID {
			h.Env.Disconnect(h.parent)
			h.detach()
			h.joinAt(baseline.ServerID)
			return false
		}
		path = append(path, c.Peer)
	}
	h.path = path
	msg := &wire.Candidates{List: h.pathTo()}
	for _, id := range h.sortedChildren() {
		h.Send(id, msg)
	}
	return true
}

// forward pushes a segment to every child.
func (h *Host) forward(d *wire.Data) {
	for _, id := range h.sortedChildren() {
		h.Send(id, &wire.Data{Seq: d.Seq, Payload: d.Payload})
	}
}

// AddSegment is the source feeding the root.
func (h *Host) AddSegment(seq uint64, _ []byte, chunks [][]byte) error {
	if payload, isNew := h.AddSource(seq, chunks); isNew {
		h.forward(&wire.Data{Seq: seq, Payload: payload})
	}
	return nil
}

// Tick plays, reports free slots to the parent (on change, at most
// once per tick, and every second) and retries a join.
func (h *Host) Tick() {
	now := h.Env.Now()
	h.Play(now)
	if h.joining && h.target == 0 && !h.retryAt.IsZero() && !now.Before(h.retryAt) {
		h.joinAt(baseline.ServerID)
	}
	if free, depth := h.free(); h.attached && !h.Cfg.Server &&
		(now.Sub(h.lastReport) >= reportEvery || free != h.reported[0] || depth != h.reported[1]) {
		h.lastReport, h.reported = now, [2]int{free, depth}
		h.Send(h.parent, &wire.Report{Partners: uint16(min(free, math.MaxUint16)), MaxLayer: uint8(min(depth, noFree))})
	}
}

// free counts free slots in the subtree and the depth of the nearest.
func (h *Host) free() (int, int) {
	free := max(h.slots-len(h.children), 0)
	depth := noFree
	if free > 0 {
		depth = 0
	}
	for _, c := range h.children {
		free += c.free
		if c.depth != noFree && c.depth+1 < depth {
			depth = c.depth + 1
		}
	}
	return free, depth
}

func (h *Host) sortedChildren() []wire.PeerID { return slices.Sorted(maps.Keys(h.children)) }

func (h *Host) sortedConns() []wire.PeerID { return slices.Sorted(maps.Keys(h.conns)) }

// Depth is the node's depth in the tree (0: root; -1: detached).
func (h *Host) Depth() int {
	if !h.attached {
		return -1
	}
	if h.Cfg.Server {
		return 0
	}
	return len(h.path)
}

// Children is the number of children.
func (h *Host) Children() int { return len(h.children) }

// Slots is the degree bound: ⌊upload ÷ stream rate⌋.
func (h *Host) Slots() int { return h.slots }
