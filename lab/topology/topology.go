// Package topology generates transit-stub internetworks in the GT-ITM model
// (Zegura, Calvert, Bhattacharjee 1996), the topologies the CoopStreaming
// and CoolStreaming evaluations ran on: transit domains of routers joined
// by Waxman random graphs, stub domains hanging off each transit router,
// tiered link delays, and end hosts on stub routers. Delays between hosts
// are shortest-path sums, computed once per router pair. Seeded: the same
// parameters and seed give the same network.
package topology

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"time"
)

// Params shape a transit-stub network. Zero fields take the defaults in
// brackets.
type Params struct {
	// TransitDomains [4], each of TransitRouters routers [8].
	TransitDomains, TransitRouters int
	// StubsPerTransit stub domains hang off every transit router [3],
	// each of StubRouters routers [8].
	StubsPerTransit, StubRouters int
	// Alpha and Beta are the Waxman parameters of intra-domain edges
	// [0.6, 0.4]: P(edge) = Alpha·exp(−d / (Beta·L)).
	Alpha, Beta float64
	// Link delays in milliseconds, drawn uniformly in [lo, hi]:
	// between transit domains [20, 40], inside one [5, 20], from a
	// transit router to a stub domain [2, 8], inside a stub domain [1, 4],
	// and a host's access link [1, 10].
	InterTransit, IntraTransit, TransitStub, IntraStub, Access [2]float64
}

func (p *Params) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&p.TransitDomains, 4)
	def(&p.TransitRouters, 8)
	def(&p.StubsPerTransit, 3)
	def(&p.StubRouters, 8)
	if p.Alpha <= 0 {
		p.Alpha = 0.6
	}
	if p.Beta <= 0 {
		p.Beta = 0.4
	}
	defr := func(v *[2]float64, lo, hi float64) {
		if v[1] <= 0 {
			*v = [2]float64{lo, hi}
		}
	}
	defr(&p.InterTransit, 20, 40)
	defr(&p.IntraTransit, 5, 20)
	defr(&p.TransitStub, 2, 8)
	defr(&p.IntraStub, 1, 4)
	defr(&p.Access, 1, 10)
}

// Network is a generated topology with all-pairs router delays.
type Network struct {
	params  Params
	seed    uint64
	transit []int // router indexes of transit routers
	stub    []int // router indexes of stub routers
	// dist[a][b] is the shortest-path delay in µs between routers.
	dist [][]uint32
}

type edge struct {
	to int
	us uint32
}

// Generate builds a network.
func Generate(seed uint64, p Params) *Network {
	p.defaults()
	rng := rand.New(rand.NewPCG(seed, 0x7a3b9c1d))
	n := &Network{params: p, seed: seed}
	var adj [][]edge
	addRouter := func() int {
		adj = append(adj, nil)
		return len(adj) - 1
	}
	link := func(a, b int, r [2]float64) {
		us := uint32((r[0] + rng.Float64()*(r[1]-r[0])) * 1000)
		adj[a] = append(adj[a], edge{b, us})
		adj[b] = append(adj[b], edge{a, us})
	}
	// waxman makes a connected random graph over routers placed in the
	// unit square.
	waxman := func(routers []int, r [2]float64) {
		xs := make([][2]float64, len(routers))
		for i := range xs {
			xs[i] = [2]float64{rng.Float64(), rng.Float64()}
		}
		L := math.Sqrt2
		for i := range routers {
			for j := i + 1; j < len(routers); j++ {
				d := math.Hypot(xs[i][0]-xs[j][0], xs[i][1]-xs[j][1])
				if rng.Float64() < p.Alpha*math.Exp(-d/(p.Beta*L)) {
					link(routers[i], routers[j], r)
				}
			}
		}
		// Keep the domain connected: join each router to a random
		// earlier one unless they are already linked (a spanning tree).
		for i := 1; i < len(routers); i++ {
			j := rng.IntN(i)
			linked := false
			for _, e := range adj[routers[i]] {
				if e.to == routers[j] {
					linked = true
				}
			}
			if !linked {
				link(routers[i], routers[j], r)
			}
		}
	}
	var domains [][]int
	for range p.TransitDomains {
		var dom []int
		for range p.TransitRouters {
			r := addRouter()
			dom = append(dom, r)
			n.transit = append(n.transit, r)
		}
		waxman(dom, p.IntraTransit)
		domains = append(domains, dom)
	}
	// Transit domains: a ring plus random chords, between random routers.
	for i := range domains {
		j := (i + 1) % len(domains)
		if j != i {
			link(domains[i][rng.IntN(len(domains[i]))], domains[j][rng.IntN(len(domains[j]))], p.InterTransit)
		}
		for k := i + 2; k < len(domains); k++ {
			if rng.Float64() < 0.5 {
				link(domains[i][rng.IntN(len(domains[i]))], domains[k][rng.IntN(len(domains[k]))], p.InterTransit)
			}
		}
	}
	for _, t := range n.transit {
		for range p.StubsPerTransit {
			var dom []int
			for range p.StubRouters {
				r := addRouter()
				dom = append(dom, r)
				n.stub = append(n.stub, r)
			}
			waxman(dom, p.IntraStub)
			link(t, dom[rng.IntN(len(dom))], p.TransitStub)
		}
	}
	n.dist = make([][]uint32, len(adj))
	for src := range adj {
		n.dist[src] = dijkstra(adj, src)
	}
	return n
}

// Routers is the number of routers.
func (n *Network) Routers() int { return len(n.dist) }

// Host is an end host: a router and an access-link delay.
type Host struct {
	Router   int
	AccessUs uint32
}

// PeerHost places host number id on a stub router, deterministically from
// the network's seed and id (the order of calls does not matter).
func (n *Network) PeerHost(id uint64) Host {
	rng := rand.New(rand.NewPCG(n.seed^0x51ab, id))
	a := n.params.Access
	return Host{Router: n.stub[rng.IntN(len(n.stub))], AccessUs: uint32((a[0] + rng.Float64()*(a[1]-a[0])) * 1000)}
}

// ServerHost places the server on a transit router with a 1 ms access link.
func (n *Network) ServerHost() Host {
	return Host{Router: n.transit[0], AccessUs: 1000}
}

// Delay is the one-way delay between two hosts.
func (n *Network) Delay(a, b Host) time.Duration {
	us := a.AccessUs + b.AccessUs
	if a.Router != b.Router {
		us += n.dist[a.Router][b.Router]
	}
	return time.Duration(us) * time.Microsecond
}

// RTTHistogram counts the round-trip times between every pair of hosts
// in buckets of width (the last bucket takes everything above).
func (n *Network) RTTHistogram(hosts []Host, width time.Duration, buckets int) []int {
	h := make([]int, buckets)
	for i := range hosts {
		for j := i + 1; j < len(hosts); j++ {
			b := int(2 * n.Delay(hosts[i], hosts[j]) / width)
			h[min(b, buckets-1)]++
		}
	}
	return h
}

func dijkstra(adj [][]edge, src int) []uint32 {
	const inf = math.MaxUint32
	dist := make([]uint32, len(adj))
	for i := range dist {
		dist[i] = inf
	}
	dist[src] = 0
	pq := &distHeap{{src, 0}}
	for pq.Len() > 0 {
		cur := heap.Pop(pq).(item)
		if cur.d > dist[cur.node] {
			continue
		}
		for _, e := range adj[cur.node] {
			if nd := cur.d + e.us; nd < dist[e.to] {
				dist[e.to] = nd
				heap.Push(pq, item{e.to, nd})
			}
		}
	}
	return dist
}

type item struct {
	node int
	d    uint32
}

type distHeap []item

func (h distHeap) Len() int           { return len(h) }
func (h distHeap) Less(i, j int) bool { return h[i].d < h[j].d }
func (h distHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *distHeap) Push(x any)        { *h = append(*h, x.(item)) }
func (h *distHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
