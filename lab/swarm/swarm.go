// Package swarm runs a whole CoopStreaming swarm — one server partner fed
// by a synthetic layered source, and N peers — on the discrete-event network
// of package sim, and measures it with the definitions of docs/metrics.md.
// Tests, the emulation benchmark and the simulator build on it.
package swarm

import (
	"crypto/ed25519"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/coopstreaming/coop/lab/sim"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/playback"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// UploadClass is a share of peers with an upload of Factor × stream rate.
type UploadClass struct {
	Share, Factor float64
}

// Scenario describes one run. Zero fields take the defaults in brackets.
type Scenario struct {
	Seed uint64
	// Peers is the number of peers joining at the start [100].
	Peers int
	// Duration is the simulated run time [60s].
	Duration time.Duration
	// StreamRate is the full stream rate in bytes/s [125000 = 1 Mbit/s].
	StreamRate float64
	// LayerShares splits the stream rate into layers [0.5, 0.25, 0.25].
	LayerShares []float64
	// SegmentDuration is δ [playback.DefaultSegmentDuration].
	SegmentDuration time.Duration
	// ServerUpload is the server's upload cap ÷ stream rate [4].
	ServerUpload float64
	// Uploads is the upload distribution [20% 3×, 50% 1.5×, 30% 0.5×].
	Uploads []UploadClass
	// DownloadFactor is every peer's download ÷ stream rate [10].
	DownloadFactor float64
	// JoinSpread spreads the initial joins over this long [5s].
	JoinSpread time.Duration
	// Warmup is excluded from continuity and offload windows [15s].
	Warmup time.Duration
	// Delay is the one-way delay between two nodes [5-45 ms by pair hash].
	Delay func(a, b wire.PeerID) time.Duration
	// Configure adjusts every peer's engine configuration.
	Configure func(*engine.Config)
	// ConfigureServer adjusts the server partner's engine configuration.
	ConfigureServer func(*engine.Config)
	// Events are scenario actions at simulated times.
	Events []Event
	// ServerSeeds overrides how many peers the server seeds first (0:
	// the engine's default).
	ServerSeeds int
	// RealTime paces the run to the wall clock (emulation; see
	// sim.Network.RealTime).
	RealTime bool
	// Protocol, when set, runs a baseline overlay in place of the
	// peerproto engine (Configure and ConfigureServer are then unused).
	Protocol *Protocol
	// StartGrace: a peer alive this long within the measurement window
	// that never started playing counts with continuity 0 [20s; set it
	// above the protocol's startup time].
	StartGrace time.Duration
}

// Node is what the swarm measures on a host.
type Node interface {
	sim.Host
	Stats() engine.Stats
	// Layers is how many layers the node plays now.
	Layers() int
}

// Source is the server host, fed by the synthetic source.
type Source interface {
	Node
	AddSegment(seq uint64, rawManifest []byte, chunks [][]byte) error
}

// Protocol builds the hosts of a baseline overlay (a tree, a gossip mesh)
// so it runs on the same network, source, churn and metrics as the
// engine.
type Protocol struct {
	Name string
	// NewServer builds the server; upload is its cap in bytes/s.
	NewServer func(env engine.Env, upload float64) Source
	// NewPeer builds a peer; upload is its capacity in bytes/s.
	NewPeer func(env engine.Env, id wire.PeerID, upload float64) Node
}

// Event is a scenario action.
type Event struct {
	At time.Duration
	Do func(s *Swarm)
}

func (sc *Scenario) defaults() {
	if sc.Peers == 0 {
		sc.Peers = 100
	}
	if sc.Duration == 0 {
		sc.Duration = 60 * time.Second
	}
	if sc.StreamRate == 0 {
		sc.StreamRate = 125000
	}
	if len(sc.LayerShares) == 0 {
		sc.LayerShares = []float64{0.5, 0.25, 0.25}
	}
	if sc.SegmentDuration == 0 {
		sc.SegmentDuration = playback.DefaultSegmentDuration
	}
	if sc.ServerUpload == 0 {
		sc.ServerUpload = 4
	}
	if len(sc.Uploads) == 0 {
		sc.Uploads = []UploadClass{{0.2, 3}, {0.5, 1.5}, {0.3, 0.5}}
	}
	if sc.DownloadFactor == 0 {
		sc.DownloadFactor = 10
	}
	if sc.JoinSpread == 0 {
		sc.JoinSpread = 5 * time.Second
	}
	if sc.Warmup == 0 {
		sc.Warmup = 15 * time.Second
	}
	if sc.StartGrace == 0 {
		sc.StartGrace = 20 * time.Second
	}
	if sc.Delay == nil {
		sc.Delay = func(a, b wire.PeerID) time.Duration {
			if a > b {
				a, b = b, a
			}
			h := uint64(a)*0x9e3779b97f4a7c15 ^ uint64(b)*0xc2b2ae3d27d4eb4f
			return 5*time.Millisecond + time.Duration(h%40)*time.Millisecond
		}
	}
}

// ServerID is the server partner's ID.
const ServerID wire.PeerID = 1

// Swarm is a running scenario.
type Swarm struct {
	Sc     Scenario
	Net    *sim.Network
	Server *sim.Node
	// source is Server's host (the engine or a baseline's server).
	source         Source
	pub            ed25519.PublicKey
	priv           ed25519.PrivateKey
	manifests      *manifest.Cache // shared by the peers: a signature is checked once
	nextID         wire.PeerID
	ingest         map[uint64]time.Time
	joined         map[wire.PeerID]time.Time
	left           map[wire.PeerID]time.Time
	classes        map[wire.PeerID]float64
	rng            *rand.Rand
	seq            uint64
	serverSegBytes float64
	// OnSegment, when set, sees each segment's manifest as it is produced.
	OnSegment func(seq uint64, m *manifest.Manifest)
}

// New builds the swarm (server and source) without peers.
func New(sc Scenario) *Swarm {
	sc.defaults()
	s := &Swarm{Sc: sc, Net: sim.New(sc.Seed), manifests: &manifest.Cache{}, nextID: ServerID + 1, ingest: map[uint64]time.Time{},
		joined: map[wire.PeerID]time.Time{}, left: map[wire.PeerID]time.Time{}, classes: map[wire.PeerID]float64{},
		rng: rand.New(rand.NewPCG(sc.Seed, 77))}
	s.Net.Delay = sc.Delay
	s.Net.RealTime = sc.RealTime
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(s.rng.UintN(256))
	}
	s.priv = ed25519.NewKeyFromSeed(seed)
	s.pub = s.priv.Public().(ed25519.PublicKey)
	s.Server = s.Net.AddHost(ServerID, sc.ServerUpload*sc.StreamRate, 0, func(env engine.Env) sim.Host {
		if sc.Protocol != nil {
			return sc.Protocol.NewServer(env, sc.ServerUpload*sc.StreamRate)
		}
		cfg := engine.Config{Role: wire.RoleServer, ID: ServerID, Stream: "live/sim", ListenAddr: "server",
			SegmentDuration: sc.SegmentDuration, Layers: len(sc.LayerShares), SignKey: s.priv,
			ServerQueue: 8 * len(sc.LayerShares), UploadCap: sc.ServerUpload * sc.StreamRate, Seeds: sc.ServerSeeds}
		if sc.ConfigureServer != nil {
			sc.ConfigureServer(&cfg)
		}
		return engine.New(cfg, env)
	})
	s.source = s.Server.Host.(Source)
	s.Net.At(s.Net.Now(), s.produce)
	return s
}

// produce adds one synthetic segment every δ.
func (s *Swarm) produce() {
	var chunks [][]byte
	total := 0
	for _, share := range s.Sc.LayerShares {
		n := int(share * s.Sc.StreamRate * s.Sc.SegmentDuration.Seconds())
		c := make([]byte, n)
		for i := 0; i < len(c); i += 8 {
			v := s.rng.Uint64()
			for j := 0; j < 8 && i+j < len(c); j++ {
				c[i+j] = byte(v >> (8 * j))
			}
		}
		chunks = append(chunks, c)
		total += n
	}
	man := manifest.New("live/sim", s.seq, uint32(s.Sc.SegmentDuration/time.Millisecond), 1, chunks)
	raw, err := manifest.Sign(s.priv, man)
	if err != nil {
		panic(err)
	}
	if s.OnSegment != nil {
		s.OnSegment(s.seq, man)
	}
	if err := s.source.AddSegment(s.seq, raw, chunks); err != nil {
		panic(err)
	}
	s.serverSegBytes += float64(total)
	s.ingest[s.seq] = s.Net.Now()
	s.seq++
	s.Net.At(s.Net.Now().Add(s.Sc.SegmentDuration), s.produce)
}

// AddPeer joins one peer with the scenario's upload distribution (or the
// given factor when positive) and returns it.
func (s *Swarm) AddPeer(uploadFactor float64) *sim.Node {
	if uploadFactor <= 0 {
		r := s.rng.Float64()
		uploadFactor = s.Sc.Uploads[len(s.Sc.Uploads)-1].Factor
		for _, c := range s.Sc.Uploads {
			if r < c.Share {
				uploadFactor = c.Factor
				break
			}
			r -= c.Share
		}
	}
	id := s.nextID
	s.nextID++
	up := uploadFactor * s.Sc.StreamRate
	nd := s.Net.AddHost(id, up, s.Sc.DownloadFactor*s.Sc.StreamRate, func(env engine.Env) sim.Host {
		if s.Sc.Protocol != nil {
			return s.Sc.Protocol.NewPeer(env, id, up)
		}
		cfg := engine.Config{Role: wire.RolePeer, ID: id, Stream: "live/sim", ListenAddr: "peer",
			Layers: len(s.Sc.LayerShares), StreamKey: s.pub, UploadCap: up, Manifests: s.manifests}
		if s.Sc.Configure != nil {
			s.Sc.Configure(&cfg)
		}
		return engine.New(cfg, env)
	})
	s.joined[id] = s.Net.Now()
	s.classes[id] = uploadFactor
	s.Net.Connect(id, ServerID)
	return nd
}

// RemovePeer makes a peer leave (politely, or by crashing).
func (s *Swarm) RemovePeer(id wire.PeerID, crash bool) {
	if crash {
		s.Net.Crash(id)
	} else {
		s.Net.Leave(id)
	}
	s.left[id] = s.Net.Now()
}

// AlivePeers lists the running peers.
func (s *Swarm) AlivePeers() []wire.PeerID {
	var out []wire.PeerID
	for id, nd := range s.Net.Nodes() {
		if id != ServerID && nd.Alive() {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// Run executes the scenario and returns its result.
func Run(sc Scenario) Result {
	s := New(sc)
	return s.Run()
}

// Run joins the initial peers, plays the events and measures.
func (s *Swarm) Run() Result {
	start := s.Net.Now()
	for i := 0; i < s.Sc.Peers; i++ {
		at := start.Add(2*time.Second + time.Duration(float64(s.Sc.JoinSpread)*float64(i)/float64(max(s.Sc.Peers, 1))))
		s.Net.At(at, func() { s.AddPeer(0) })
	}
	for _, ev := range s.Sc.Events {
		ev := ev
		s.Net.At(start.Add(ev.At), func() { ev.Do(s) })
	}
	var last uint64
	var egress []float64
	var sample func()
	sample = func() {
		out := s.source.Stats().MediaBytesOut
		egress = append(egress, float64(out-last))
		last = out
		s.Net.At(s.Net.Now().Add(time.Second), sample)
	}
	s.Net.At(start.Add(time.Second), sample)
	s.Net.Run(start.Add(s.Sc.Duration))
	res := s.measure(start)
	res.ServerEgress = egress
	res.MaxLag = s.Net.MaxLag
	if s.Net.Events > 0 {
		res.MeanLag = s.Net.LagSum / time.Duration(s.Net.Events)
	}
	return res
}

// PeerResult is one peer's measurements.
type PeerResult struct {
	ID             wire.PeerID
	UploadFactor   float64
	Stats          engine.Stats
	Continuity     float64 // base layer, in the measurement window
	LayerCI        []float64
	Quality        float64
	StartupDelay   time.Duration
	Latencies      []time.Duration
	FinalLayers    int
	Alive          bool
	PlayedInWindow int
}

// Result is a run's measurements.
type Result struct {
	Scenario Scenario
	Peers    []PeerResult
	// Continuity is the mean base-layer continuity over peers measured;
	// ContinuityP5 its 5th percentile.
	Continuity, ContinuityP5 float64
	Quality                  float64
	// Offload is useful media bytes from peers ÷ all useful media bytes.
	Offload float64
	// CopiesPerSegment is server media bytes sent ÷ segment bytes.
	CopiesPerSegment float64
	// Redundancy is duplicate + late bytes ÷ all media bytes received.
	Redundancy float64
	// ControlOverhead is non-media bytes ÷ media bytes over all peers.
	ControlOverhead                    float64
	StartupP50, StartupP95             time.Duration
	LatencyP50, LatencyP95, LatencyP99 time.Duration
	Events                             uint64
	PeersMeasured, PeersStarted        int
	// LagSpread is the median over segments of p95 − p5 of the latency
	// across the peers that played the segment.
	LagSpread time.Duration
	// ServerEgress is the server's media upload, bytes per second of run.
	ServerEgress []float64
	// MaxLag and MeanLag tell how far a real-time run fell behind the
	// wall clock (zero in simulated time).
	MaxLag, MeanLag time.Duration
	// NeverStarted counts peers measured with continuity 0 because they
	// never started playing (see Scenario.StartGrace).
	NeverStarted int
	// Server is the server's counters at the end of the run.
	Server engine.Stats
}

func (s *Swarm) measure(start time.Time) Result {
	res := Result{Scenario: s.Sc, Events: s.Net.Events}
	windowStart := start.Add(s.Sc.Warmup)
	var cis, startups []float64
	var lats []float64
	perSeq := map[uint64][]float64{}
	var fromServer, fromPeers, waste, mediaIn, ctrl, media float64
	// In ID order: float sums come out bit for bit the same for a seed.
	for _, id := range slices.Sorted(maps.Keys(s.Net.Nodes())) {
		nd := s.Net.Node(id)
		if id == ServerID {
			continue
		}
		host := nd.Host.(Node)
		st := host.Stats()
		pr := PeerResult{ID: id, UploadFactor: s.classes[id], Stats: st, StartupDelay: st.StartupDelay,
			FinalLayers: host.Layers(), Alive: nd.Alive()}
		var due, base float64
		layerDue := make([]float64, len(s.Sc.LayerShares))
		layerOn := make([]float64, len(s.Sc.LayerShares))
		var quality float64
		started := false
		for _, r := range st.PlayedAt {
			if r.Layers > 0 {
				started = true
			}
			if !started || r.At.Before(windowStart) {
				continue
			}
			due++
			if r.Layers > 0 {
				base++
			}
			for l := 0; l < r.SegLayers && l < len(layerDue); l++ {
				layerDue[l]++
				if l < r.Layers {
					layerOn[l]++
				}
			}
			quality += float64(r.Layers) / float64(len(s.Sc.LayerShares))
			if at, ok := s.ingest[r.Seq]; ok && r.Layers > 0 {
				pr.Latencies = append(pr.Latencies, r.At.Sub(at))
				lats = append(lats, r.At.Sub(at).Seconds())
				perSeq[r.Seq] = append(perSeq[r.Seq], r.At.Sub(at).Seconds())
			}
		}
		pr.PlayedInWindow = int(due)
		if due > 0 {
			pr.Continuity = base / due
			pr.Quality = quality / due
			cis = append(cis, pr.Continuity)
			res.Quality += pr.Quality
		} else if s.aliveInWindow(id, windowStart) >= s.Sc.StartGrace {
			// Never played although it had time to: a viewer who saw
			// nothing (a protocol that cannot reach a peer must not look
			// better by leaving it out).
			cis = append(cis, 0)
			res.NeverStarted++
		}
		for l := range layerDue {
			if layerDue[l] > 0 {
				pr.LayerCI = append(pr.LayerCI, layerOn[l]/layerDue[l])
			}
		}
		if st.Started {
			res.PeersStarted++
			startups = append(startups, st.StartupDelay.Seconds())
		}
		fromServer += float64(st.UsefulFromServer)
		fromPeers += float64(st.UsefulFromPeers)
		waste += float64(st.DuplicateBytes + st.LateBytes)
		mediaIn += float64(st.MediaBytesIn)
		ctrl += float64(st.ControlBytesIn + st.ControlBytesOut)
		media += float64(st.MediaBytesIn + st.MediaBytesOut)
		res.Peers = append(res.Peers, pr)
	}
	res.PeersMeasured = len(cis)
	if len(cis) > 0 {
		res.Continuity = mean(cis)
		res.ContinuityP5 = Percentile(cis, 5)
		res.Quality /= float64(len(cis))
	}
	if fromServer+fromPeers > 0 {
		res.Offload = fromPeers / (fromServer + fromPeers)
	}
	srv := s.source.Stats()
	srv.PlayedAt = nil
	res.Server = srv
	if s.serverSegBytes > 0 {
		res.CopiesPerSegment = float64(srv.MediaBytesOut) / s.serverSegBytes
	}
	if mediaIn > 0 {
		res.Redundancy = waste / mediaIn
	}
	if media > 0 {
		res.ControlOverhead = ctrl / media
	}
	res.StartupP50 = secs(Percentile(startups, 50))
	res.StartupP95 = secs(Percentile(startups, 95))
	res.LatencyP50 = secs(Percentile(lats, 50))
	res.LatencyP95 = secs(Percentile(lats, 95))
	res.LatencyP99 = secs(Percentile(lats, 99))
	var spreads []float64
	for _, l := range perSeq {
		if len(l) >= 2 {
			spreads = append(spreads, Percentile(l, 95)-Percentile(l, 5))
		}
	}
	res.LagSpread = secs(Percentile(spreads, 50))
	return res
}

// aliveInWindow is how long peer id ran within the measurement window.
func (s *Swarm) aliveInWindow(id wire.PeerID, windowStart time.Time) time.Duration {
	from := s.joined[id]
	if from.Before(windowStart) {
		from = windowStart
	}
	until := s.Net.Now()
	if left, ok := s.left[id]; ok {
		until = left
	}
	return until.Sub(from)
}

func secs(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// Percentile returns the p-th percentile (nearest rank) of v.
func Percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}
