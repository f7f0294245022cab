// Package sim is a discrete-event network for engine nodes: a virtual
// clock, per-node upload and download serialisation, per-pair propagation
// delay, connection setup after one round trip, churn. No wall-clock sleeps:
// a run is deterministic for a seed, and 60 simulated seconds of a
// 100-peer swarm take a few wall-clock seconds.
package sim

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// Epoch is the simulated time at which every run starts.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Network is the simulated network and clock.
type Network struct {
	now   time.Time
	q     eventQueue
	order uint64
	nodes map[wire.PeerID]*Node
	// Delay returns the one-way propagation delay between two nodes.
	Delay func(a, b wire.PeerID) time.Duration
	// TickInterval is how often each node ticks (default 100ms).
	TickInterval time.Duration
	rng          *rand.Rand
	// Events counts processed events.
	Events uint64
	// MessagesDropped counts messages to closed connections.
	MessagesDropped uint64
	// RealTime paces the run to the wall clock: an event at simulated
	// time t runs no earlier than t after Run began (emulation instead
	// of simulation; same engines, same network model).
	RealTime bool
	// MaxLag and LagSum measure how far a real-time run fell behind the
	// wall clock (event processing slower than real time).
	MaxLag, LagSum time.Duration
}

// New returns an empty network with a seeded random source.
func New(seed uint64) *Network {
	return &Network{
		now: Epoch, nodes: make(map[wire.PeerID]*Node), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		Delay:        func(a, b wire.PeerID) time.Duration { return 10 * time.Millisecond },
		TickInterval: 100 * time.Millisecond,
	}
}

// Now is the simulated time.
func (n *Network) Now() time.Time { return n.now }

// Rand is the network's random source (for scenario decisions).
func (n *Network) Rand() *rand.Rand { return n.rng }

// Host is the protocol a node runs: the peerproto engine, or a baseline
// overlay evaluated on the same network. The network calls it as the TCP
// driver calls the engine.
type Host interface {
	Hello() *wire.Hello
	Admit(h *wire.Hello, inbound bool) error
	Connected(h *wire.Hello, outbound bool)
	DialFailed(id wire.PeerID)
	Disconnected(id wire.PeerID)
	Receive(from wire.PeerID, m wire.Message)
	Tick()
	Close()
}

// Node is one simulated host.
type Node struct {
	ID   wire.PeerID
	Host Host
	// Engine is Host when the node runs the peerproto engine (nil for a
	// baseline host).
	Engine *engine.Engine
	// Up and Down are link capacities in bytes/s (0: unlimited). They may
	// be changed while the simulation runs.
	Up, Down         float64
	net              *Network
	upFree, downFree time.Time
	conns            map[wire.PeerID]bool
	alive            bool
	rng              *rand.Rand
	// Tamper, when set, rewrites every message the node sends (a
	// malicious node: the engine stays honest, the wire lies).
	Tamper func(wire.Message) wire.Message
}

// Alive tells whether the node is running.
func (nd *Node) Alive() bool { return nd.alive }

// AddNode creates a node; build makes its engine from the node's Env.
func (n *Network) AddNode(id wire.PeerID, up, down float64, build func(env engine.Env) *engine.Engine) *Node {
	return n.AddHost(id, up, down, func(env engine.Env) Host { return build(env) })
}

// AddHost creates a node running any Host; build makes it from the
// node's Env.
func (n *Network) AddHost(id wire.PeerID, up, down float64, build func(env engine.Env) Host) *Node {
	nd := &Node{ID: id, Up: up, Down: down, net: n, conns: make(map[wire.PeerID]bool), alive: true,
		rng: rand.New(rand.NewPCG(n.rng.Uint64(), uint64(id)))}
	n.nodes[id] = nd
	nd.Host = build((*nodeEnv)(nd))
	nd.Engine, _ = nd.Host.(*engine.Engine)
	phase := time.Duration(n.rng.Int64N(int64(n.TickInterval)))
	n.At(n.now.Add(phase), nd.tick)
	return nd
}

// Node returns a node by ID.
func (n *Network) Node(id wire.PeerID) *Node { return n.nodes[id] }

// Nodes returns every node ever added, alive or not.
func (n *Network) Nodes() map[wire.PeerID]*Node { return n.nodes }

func (nd *Node) tick() {
	if !nd.alive {
		return
	}
	nd.Host.Tick()
	nd.net.At(nd.net.now.Add(nd.net.TickInterval), nd.tick)
}

// Connect opens a connection from a to b as if a dialled b.
func (n *Network) Connect(a, b wire.PeerID) {
	(*nodeEnv)(n.nodes[a]).Dial(wire.Candidate{Peer: b})
}

// Leave stops a node: goodbyes are sent, then its connections close.
func (n *Network) Leave(id wire.PeerID) {
	nd := n.nodes[id]
	if nd == nil || !nd.alive {
		return
	}
	nd.Host.Close()
	nd.alive = false
	for _, peer := range nd.sortedConns() {
		n.closeConn(id, peer)
	}
}

func (nd *Node) sortedConns() []wire.PeerID {
	out := make([]wire.PeerID, 0, len(nd.conns))
	for id := range nd.conns {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Crash stops a node without goodbyes.
func (n *Network) Crash(id wire.PeerID) {
	nd := n.nodes[id]
	if nd == nil || !nd.alive {
		return
	}
	nd.alive = false
	for _, peer := range nd.sortedConns() {
		n.closeConn(id, peer)
	}
}

func (n *Network) closeConn(a, b wire.PeerID) {
	na, nb := n.nodes[a], n.nodes[b]
	if na.conns[b] {
		delete(na.conns, b)
		if na.alive {
			na.Host.Disconnected(b)
		}
	}
	// The other side notices after the propagation delay.
	n.At(n.now.Add(n.Delay(a, b)), func() {
		if nb.conns[a] {
			delete(nb.conns, a)
			if nb.alive {
				nb.Host.Disconnected(a)
			}
		}
	})
}

// At schedules f at time t.
func (n *Network) At(t time.Time, f func()) {
	if t.Before(n.now) {
		t = n.now
	}
	n.order++
	n.q.push(event{key: t.UnixNano(), order: n.order, at: t, f: f})
}

// Run processes events until the clock reaches until.
func (n *Network) Run(until time.Time) {
	wallStart, simStart := time.Now(), n.now
	for len(n.q) > 0 {
		ev := n.q[0]
		if ev.at.After(until) {
			break
		}
		if n.RealTime {
			due := wallStart.Add(ev.at.Sub(simStart))
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait)
			} else {
				n.MaxLag = max(n.MaxLag, -wait)
				n.LagSum += -wait
			}
		}
		n.q.pop()
		n.now = ev.at
		n.Events++
		ev.f()
	}
	n.now = until
}

// nodeEnv is the engine.Env of a node.
type nodeEnv Node

func (e *nodeEnv) Now() time.Time   { return e.net.now }
func (e *nodeEnv) Rand() *rand.Rand { return e.rng }

func (e *nodeEnv) UploadBacklog() int {
	if e.Up <= 0 || !e.upFree.After(e.net.now) {
		return 0
	}
	return int(e.upFree.Sub(e.net.now).Seconds() * e.Up)
}

func serialise(free *time.Time, now time.Time, size int, rate float64) time.Time {
	start := now
	if free.After(start) {
		start = *free
	}
	if rate > 0 {
		start = start.Add(time.Duration(float64(size) / rate * float64(time.Second)))
	}
	*free = start
	return start
}

func (e *nodeEnv) Send(to wire.PeerID, m wire.Message) {
	n := e.net
	if !e.alive || !e.conns[to] {
		n.MessagesDropped++
		return
	}
	if e.Tamper != nil {
		m = e.Tamper(m)
	}
	size := wire.FrameSize(m)
	sent := serialise(&e.upFree, n.now, size, e.Up)
	from := e.ID
	dst := n.nodes[to] // connected, so it exists (nodes are never removed)
	n.At(sent.Add(n.Delay(from, to)), func() {
		if !dst.alive || !dst.conns[from] {
			n.MessagesDropped++
			return
		}
		done := serialise(&dst.downFree, n.now, size, dst.Down)
		n.At(done, func() {
			if dst.alive && dst.conns[from] {
				dst.Host.Receive(from, m)
			} else {
				n.MessagesDropped++
			}
		})
	})
}

func (e *nodeEnv) Dial(c wire.Candidate) {
	n := e.net
	from := e.ID
	rtt := 2 * n.Delay(from, c.Peer)
	n.At(n.now.Add(rtt), func() {
		a, b := n.nodes[from], n.nodes[c.Peer]
		if a == nil || !a.alive {
			return
		}
		if b == nil || !b.alive || a.conns[c.Peer] {
			a.Host.DialFailed(c.Peer)
			return
		}
		ha, hb := a.Host.Hello(), b.Host.Hello()
		if err := b.Host.Admit(ha, true); err != nil {
			a.Host.DialFailed(c.Peer)
			return
		}
		if err := a.Host.Admit(hb, false); err != nil {
			a.Host.DialFailed(c.Peer)
			return
		}
		a.conns[c.Peer], b.conns[from] = true, true
		b.Host.Connected(ha, false)
		a.Host.Connected(hb, true)
	})
}

func (e *nodeEnv) Disconnect(to wire.PeerID) {
	n := e.net
	from := e.ID
	n.At(n.now, func() {
		if n.nodes[from].conns[to] {
			n.closeConn(from, to)
		}
	})
}

// event is a scheduled callback; (key, order) orders events totally, so
// the run is the same whatever the queue's layout.
type event struct {
	key   int64 // at in Unix nanoseconds: compared faster than time.Time
	order uint64
	at    time.Time
	f     func()
}

func (a *event) before(b *event) bool {
	if a.key != b.key {
		return a.key < b.key
	}
	return a.order < b.order
}

// eventQueue is a 4-ary min-heap of events by value: the simulator's
// hottest structure (container/heap's interface calls and an allocation
// per event took 15% of its CPU).
type eventQueue []event

const heapArity = 4

func (q *eventQueue) push(ev event) {
	h := append(*q, ev)
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / heapArity
		if !h[i].before(&h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	*q = h
}

func (q *eventQueue) pop() {
	h := *q
	last := len(h) - 1
	h[0] = h[last]
	h[last] = event{}
	h = h[:last]
	i := 0
	for {
		first := heapArity*i + 1
		if first >= len(h) {
			break
		}
		m := first
		for c := first + 1; c < first+heapArity && c < len(h); c++ {
			if h[c].before(&h[m]) {
				m = c
			}
		}
		if !h[m].before(&h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
}
