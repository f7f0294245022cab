package integration

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/lab/sim"
	"github.com/coopstreaming/coop/lab/swarm"
	"github.com/coopstreaming/coop/lab/topology"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/partners"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// benchProfile sizes a swarm benchmark run.
type benchProfile struct {
	Name      string
	Ns        []int    // peer counts of the N sweep
	Seeds     []uint64 // every point is the median over these seeds
	TargetN   int      // N of the target scenarios
	Duration  time.Duration
	RealTimeN int // N of the real-time emulation check (0: none)
	RealPeers int // coop-peer processes of the real-process run
}

func currentProfile() benchProfile {
	if os.Getenv("COOP_BENCH_PROFILE") == "full" {
		return benchProfile{Name: "full", Ns: []int{50, 100, 200, 500, 1000, 2000}, Seeds: []uint64{1, 2, 3, 4, 5},
			TargetN: 1000, Duration: 90 * time.Second, RealTimeN: 500, RealPeers: 40}
	}
	return benchProfile{Name: "quick", Ns: []int{50, 100, 200, 500, 1000}, Seeds: []uint64{1, 2, 3},
		TargetN: 500, Duration: 60 * time.Second, RealTimeN: 500, RealPeers: 20}
}

// benchScenario is a named swarm scenario of the benchmark.
type benchScenario struct {
	Name string
	// Build returns the scenario for a seed and peer count.
	Build func(seed uint64, n int, d time.Duration) swarm.Scenario
}

const streamRate = 125000.0 // 1 Mbit/s

// topoDelay places nodes on a transit-stub network (server on a transit
// router, peers on stub routers).
func topoDelay(seed uint64) func(a, b wire.PeerID) time.Duration {
	net := topology.Generate(seed, topology.Params{})
	host := func(id wire.PeerID) topology.Host {
		if id == swarm.ServerID {
			return net.ServerHost()
		}
		return net.PeerHost(uint64(id))
	}
	return func(a, b wire.PeerID) time.Duration { return net.Delay(host(a), host(b)) }
}

func baseScenario(seed uint64, n int, d time.Duration) swarm.Scenario {
	return swarm.Scenario{Seed: seed, Peers: n, Duration: d, StreamRate: streamRate, ServerUpload: 5,
		Delay: topoDelay(seed)}
}

// churn makes peers leave with exponential lifetimes of the given mean
// (memoryless: each second a peer leaves with probability 1−e^(−1/mean));
// half of them crash, and as many new peers join.
func churn(mean time.Duration, from, until time.Duration) []swarm.Event {
	p := 1 - math.Exp(-1/mean.Seconds())
	var evs []swarm.Event
	for at := from; at < until; at += time.Second {
		evs = append(evs, swarm.Event{At: at, Do: func(s *swarm.Swarm) {
			rng := s.Net.Rand()
			alive := s.AlivePeers()
			slices.Sort(alive)
			left := 0
			for _, id := range alive {
				if rng.Float64() < p {
					s.RemovePeer(id, rng.IntN(2) == 0)
					left++
				}
			}
			for range left {
				s.AddPeer(0)
			}
		}})
	}
	return evs
}

// addFlashCrowd makes the peers missing up to n join within 10 s from
// t = 20 s.
func addFlashCrowd(sc *swarm.Scenario, n int) {
	late := n - sc.Peers
	for i := range late {
		sc.Events = append(sc.Events, swarm.Event{At: 20*time.Second + time.Duration(i)*10*time.Second/time.Duration(late),
			Do: func(s *swarm.Swarm) { s.AddPeer(0) }})
	}
}

var benchScenarios = []benchScenario{
	{"heterogeneous 1.5x (20% 3x, 50% 1.5x, 30% 0.5x)", baseScenario},
	{"heterogeneous 1.375x (20% 4x, 50% 1x, 30% 0.25x)", func(seed uint64, n int, d time.Duration) swarm.Scenario {
		sc := baseScenario(seed, n, d)
		sc.Uploads = []swarm.UploadClass{{Share: 0.2, Factor: 4}, {Share: 0.5, Factor: 1}, {Share: 0.3, Factor: 0.25}}
		return sc
	}},
	{"homogeneous 1.5x", func(seed uint64, n int, d time.Duration) swarm.Scenario {
		sc := baseScenario(seed, n, d)
		sc.Uploads = []swarm.UploadClass{{Share: 1, Factor: 1.5}}
		return sc
	}},
	{"churn 10%/min (exponential lifetimes, mean 10 min)", func(seed uint64, n int, d time.Duration) swarm.Scenario {
		sc := baseScenario(seed, n, d)
		sc.Events = churn(10*time.Minute, 10*time.Second, d)
		return sc
	}},
	{"flash crowd (10% at start, 90% join within 10 s at t=20 s)", func(seed uint64, n int, d time.Duration) swarm.Scenario {
		sc := baseScenario(seed, max(n/10, 1), d)
		addFlashCrowd(&sc, n)
		return sc
	}},
}

// runSummary is one run's metrics (docs: ../shared/docs/metrics.md).
type runSummary struct {
	Scenario         string  `json:"scenario"`
	N                int     `json:"n"`
	Seed             uint64  `json:"seed"`
	RealTime         bool    `json:"realTime"`
	Continuity       float64 `json:"continuity"`
	ContinuityP5     float64 `json:"continuityP5"`
	Offload          float64 `json:"offload"`
	CopiesPerSegment float64 `json:"copiesPerSegment"`
	Quality          float64 `json:"quality"`
	ControlOverhead  float64 `json:"controlOverhead"`
	StartupP50       float64 `json:"startupP50s"`
	StartupP95       float64 `json:"startupP95s"`
	LatencyP50       float64 `json:"latencyP50s"`
	LatencyP95       float64 `json:"latencyP95s"`
	LatencyP99       float64 `json:"latencyP99s"`
	LagSpread        float64 `json:"lagSpreadS"`
	PeersStarted     int     `json:"peersStarted"`
	NeverStarted     int     `json:"neverStarted"`
	// The server's upload split and refusals over the run.
	ServerMediaMB   float64   `json:"serverMediaMB"`
	ServerControlMB float64   `json:"serverControlMB"`
	ServerBusy      uint64    `json:"serverBusyRefusals"`
	ServerShed      uint64    `json:"serverControlShed"`
	WallSeconds     float64   `json:"wallSeconds"`
	Events          uint64    `json:"events"`
	MaxLagMs        float64   `json:"maxLagMs,omitempty"`
	ServerEgress    []float64 `json:"serverEgressBytesPerSec"`
	// QualityByClass is the mean quality of the peers of each upload
	// class ("0.5x": upload ÷ stream rate).
	QualityByClass map[string]float64 `json:"qualityByClass,omitempty"`
	Startups       []float64          `json:"-"`
	Latencies      []float64          `json:"-"`
}

func summarize(name string, sc swarm.Scenario, res swarm.Result, wall time.Duration) runSummary {
	s := runSummary{Scenario: name, N: sc.Peers, Seed: sc.Seed, RealTime: sc.RealTime,
		Continuity: res.Continuity, ContinuityP5: res.ContinuityP5, Offload: res.Offload,
		CopiesPerSegment: res.CopiesPerSegment, Quality: res.Quality, ControlOverhead: res.ControlOverhead,
		StartupP50: res.StartupP50.Seconds(), StartupP95: res.StartupP95.Seconds(),
		LatencyP50: res.LatencyP50.Seconds(), LatencyP95: res.LatencyP95.Seconds(), LatencyP99: res.LatencyP99.Seconds(),
		LagSpread: res.LagSpread.Seconds(), PeersStarted: res.PeersStarted, NeverStarted: res.NeverStarted,
		ServerMediaMB: float64(res.Server.MediaBytesOut) / 1e6, ServerControlMB: float64(res.Server.ControlBytesOut) / 1e6,
		ServerBusy: res.Server.RejectedBusy, ServerShed: res.Server.ControlShed, WallSeconds: wall.Seconds(),
		Events: res.Events, MaxLagMs: float64(res.MaxLag) / 1e6, ServerEgress: res.ServerEgress}
	sum, count := map[string]float64{}, map[string]int{}
	for _, p := range res.Peers {
		if p.PlayedInWindow > 0 {
			k := fmt.Sprintf("%.1fx", p.UploadFactor)
			sum[k] += p.Quality
			count[k]++
		}
	}
	if len(sum) > 0 {
		s.QualityByClass = map[string]float64{}
		for k, v := range sum {
			s.QualityByClass[k] = v / float64(count[k])
		}
	}
	for _, p := range res.Peers {
		if p.Stats.Started {
			s.Startups = append(s.Startups, p.StartupDelay.Seconds())
		}
		for _, l := range p.Latencies {
			s.Latencies = append(s.Latencies, l.Seconds())
		}
	}
	return s
}

// medianRun is the element-wise median of runs of one point (counters
// and series are the first run's).
func medianRun(runs []runSummary) runSummary {
	m := runs[0]
	m.Seed = 0
	if m.QualityByClass != nil {
		m.QualityByClass = map[string]float64{}
		for k := range runs[0].QualityByClass {
			var v []float64
			for _, r := range runs {
				if q, ok := r.QualityByClass[k]; ok {
					v = append(v, q)
				}
			}
			slices.Sort(v)
			m.QualityByClass[k] = v[len(v)/2]
		}
	}
	for _, field := range []func(*runSummary) *float64{
		func(r *runSummary) *float64 { return &r.Continuity },
		func(r *runSummary) *float64 { return &r.ContinuityP5 },
		func(r *runSummary) *float64 { return &r.Offload },
		func(r *runSummary) *float64 { return &r.CopiesPerSegment },
		func(r *runSummary) *float64 { return &r.Quality },
		func(r *runSummary) *float64 { return &r.ControlOverhead },
		func(r *runSummary) *float64 { return &r.StartupP50 },
		func(r *runSummary) *float64 { return &r.StartupP95 },
		func(r *runSummary) *float64 { return &r.LatencyP50 },
		func(r *runSummary) *float64 { return &r.LatencyP95 },
		func(r *runSummary) *float64 { return &r.LatencyP99 },
		func(r *runSummary) *float64 { return &r.LagSpread },
		func(r *runSummary) *float64 { return &r.ServerMediaMB },
		func(r *runSummary) *float64 { return &r.ServerControlMB },
		func(r *runSummary) *float64 { return &r.WallSeconds },
	} {
		v := make([]float64, len(runs))
		for i := range runs {
			v[i] = *field(&runs[i])
		}
		sort.Float64s(v)
		*field(&m) = v[len(v)/2]
	}
	return m
}

type job struct {
	name string
	n    int // peers at the scenario's peak (a flash crowd starts with fewer)
	sc   swarm.Scenario
}

// runJobs runs swarm scenarios on all cores.
func runJobs(jobs []job) []runSummary { return runJobsN(jobs, runtime.NumCPU()) }

// runJobsN runs swarm scenarios, par at a time.
func runJobsN(jobs []job, par int) []runSummary {
	out := make([]runSummary, len(jobs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, par)
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			start := time.Now()
			res := swarm.Run(j.sc)
			if os.Getenv("COOP_SIM_DEBUG") != "" {
				fmt.Println(j.name, j.n, debugTotals(res))
			}
			out[i] = summarize(j.name, j.sc, res, time.Since(start))
			out[i].N = j.n
		}()
	}
	wg.Wait()
	return out
}

// TestBenchSwarm is the swarm benchmark of `make bench`: the real engine
// for the server partner and N peers on the in-memory network (per-peer
// upload/download serialisation, transit-stub delays), on the virtual
// clock for the sweeps and paced to the wall clock for one real-time
// emulation of the target scenario. Medians over seeds; writes
// bench/results/swarm.{json,md} and plots.
func TestBenchSwarm(t *testing.T) {
	if os.Getenv("COOP_BENCH") == "" {
		t.Skip("benchmark: run with make bench (COOP_BENCH=1)")
	}
	prof := currentProfile()
	dir := resultsDir(t)
	var all []runSummary
	points := map[string]runSummary{}
	key := func(name string, n int, rt bool) string { return fmt.Sprintf("%s|%d|%v", name, n, rt) }

	// The N sweep of the main scenario, then every scenario at the target N.
	var jobs []job
	for _, n := range prof.Ns {
		for _, seed := range prof.Seeds {
			jobs = append(jobs, job{benchScenarios[0].Name, n, benchScenarios[0].Build(seed, n, prof.Duration)})
		}
	}
	for _, bs := range benchScenarios[1:] {
		for _, seed := range prof.Seeds {
			jobs = append(jobs, job{bs.Name, prof.TargetN, bs.Build(seed, prof.TargetN, prof.Duration)})
		}
	}
	if !slices.Contains(prof.Ns, prof.TargetN) {
		for _, seed := range prof.Seeds {
			jobs = append(jobs, job{benchScenarios[0].Name, prof.TargetN, benchScenarios[0].Build(seed, prof.TargetN, prof.Duration)})
		}
	}
	began := time.Now()
	runs := runJobs(jobs)
	t.Logf("%d simulated runs in %v", len(runs), time.Since(began).Round(time.Second))
	all = append(all, runs...)
	if prof.RealTimeN > 0 {
		sc := benchScenarios[0].Build(prof.Seeds[0], prof.RealTimeN, prof.Duration)
		sc.RealTime = true
		start := time.Now()
		res := swarm.Run(sc)
		rt := summarize(benchScenarios[0].Name, sc, res, time.Since(start))
		t.Logf("real-time emulation N=%d: max lag behind the wall clock %.0f ms", sc.Peers, rt.MaxLagMs)
		all = append(all, rt)
		points[key(rt.Scenario, rt.N, true)] = rt
	}
	groups := map[string][]runSummary{}
	for _, r := range all {
		if !r.RealTime {
			groups[key(r.Scenario, r.N, false)] = append(groups[key(r.Scenario, r.N, false)], r)
		}
	}
	for k, g := range groups {
		points[k] = medianRun(g)
	}

	// Report.
	var md strings.Builder
	fmt.Fprintf(&md, "# Swarm benchmark (%s profile)\n\n", prof.Name)
	fmt.Fprintf(&md, "Real engine, in-memory network with per-peer upload/download serialisation and transit-stub delays "+
		"(GT-ITM model, %d routers), 1 Mbit/s in 3 layers (50/25/25%%), 500 ms segments, server upload capped at 5x, "+
		"M = %d, %v runs, peers join over 5 s, first 15 s excluded. Medians over seeds %v. Definitions: ../shared/docs/metrics.md.\n\n",
		topology.Generate(1, topology.Params{}).Routers(), partners.DefaultTarget, prof.Duration, prof.Seeds)
	header := "| scenario | N | clock | base continuity (mean / p5) | offload | origin copies/segment | quality | startup p50 / p95 | latency p50 / p95 | lag spread | control overhead |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
	md.WriteString(header)
	row := func(r runSummary) {
		clock := "simulated"
		if r.RealTime {
			clock = fmt.Sprintf("real time (max lag %.0f ms)", r.MaxLagMs)
		}
		fmt.Fprintf(&md, "| %s | %d | %s | %.3f / %.3f | %.3f | %.2f | %.2f | %.1f s / %.1f s | %.1f s / %.1f s | %.2f s | %.1f%% |\n",
			r.Scenario, r.N, clock, r.Continuity, r.ContinuityP5, r.Offload, r.CopiesPerSegment, r.Quality,
			r.StartupP50, r.StartupP95, r.LatencyP50, r.LatencyP95, r.LagSpread, 100*r.ControlOverhead)
	}
	for _, n := range prof.Ns {
		row(points[key(benchScenarios[0].Name, n, false)])
	}
	if !slices.Contains(prof.Ns, prof.TargetN) {
		row(points[key(benchScenarios[0].Name, prof.TargetN, false)])
	}
	if p, ok := points[key(benchScenarios[0].Name, prof.RealTimeN, true)]; ok {
		row(p)
	}
	for _, bs := range benchScenarios[1:] {
		row(points[key(bs.Name, prof.TargetN, false)])
	}
	target := points[key(benchScenarios[0].Name, prof.TargetN, false)]
	churned := points[key(benchScenarios[3].Name, prof.TargetN, false)]
	fmt.Fprintf(&md, "\n## Targets at N = %d (issue 5)\n\n| metric | target | reached |\n|---|---|---|\n", prof.TargetN)
	check := func(name, target string, ok bool, got string) {
		mark := "yes"
		if !ok {
			mark = "**no**"
		}
		fmt.Fprintf(&md, "| %s | %s | %s (%s) |\n", name, target, got, mark)
	}
	check("base continuity", "≥ 0.99", target.Continuity >= 0.99, fmt.Sprintf("%.3f", target.Continuity))
	check("continuity p5", "≥ 0.97", target.ContinuityP5 >= 0.97, fmt.Sprintf("%.3f", target.ContinuityP5))
	check("offload", "≥ 0.90", target.Offload >= 0.9, fmt.Sprintf("%.3f", target.Offload))
	check("origin copies per segment", "≤ 5", target.CopiesPerSegment <= 5, fmt.Sprintf("%.2f", target.CopiesPerSegment))
	check("startup p95", "≤ 2 s", target.StartupP95 <= 2, fmt.Sprintf("%.1f s", target.StartupP95))
	check("latency p95", "≤ 4 s", target.LatencyP95 <= 4, fmt.Sprintf("%.1f s", target.LatencyP95))
	check("lag spread", "≤ 1 s", target.LagSpread <= 1, fmt.Sprintf("%.2f s", target.LagSpread))
	check("control overhead", "≤ 2%", target.ControlOverhead <= 0.02, fmt.Sprintf("%.1f%%", 100*target.ControlOverhead))
	check("continuity under 10%/min churn", "≥ 0.98", churned.Continuity >= 0.98, fmt.Sprintf("%.3f", churned.Continuity))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "swarm.md"), []byte(md.String()), 0o644))
	js, err := json.MarshalIndent(map[string]any{"profile": prof, "runs": all}, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "swarm.json"), js, 0o644))

	// Plots.
	var offN, ciN, ciP5N series
	offN.name, ciN.name, ciP5N.name = "offload", "base continuity (mean)", "base continuity (p5)"
	for _, n := range prof.Ns {
		p := points[key(benchScenarios[0].Name, n, false)]
		offN.xs, offN.ys = append(offN.xs, float64(n)), append(offN.ys, p.Offload)
		ciN.xs, ciN.ys = append(ciN.xs, float64(n)), append(ciN.ys, p.Continuity)
		ciP5N.xs, ciP5N.ys = append(ciP5N.xs, float64(n)), append(ciP5N.ys, p.ContinuityP5)
	}
	require.NoError(t, savePlot(filepath.Join(dir, "offload_vs_n.svg"), "Offload vs N (median of seeds)", "peers N", "offload", offN))
	require.NoError(t, savePlot(filepath.Join(dir, "continuity_vs_n.svg"), "Base-layer continuity vs N", "peers N", "continuity", ciN, ciP5N))
	var one runSummary
	for _, r := range all {
		if r.Scenario == benchScenarios[0].Name && r.N == prof.TargetN && r.Seed == prof.Seeds[0] && !r.RealTime {
			one = r
		}
	}
	require.NoError(t, savePlot(filepath.Join(dir, "latency_cdf.svg"), fmt.Sprintf("Ingest-to-playout latency, N=%d", prof.TargetN),
		"seconds", "CDF", cdf("latency", one.Latencies)))
	require.NoError(t, savePlot(filepath.Join(dir, "startup_cdf.svg"), fmt.Sprintf("Startup delay, N=%d", prof.TargetN),
		"seconds", "CDF", cdf("startup", one.Startups)))
	eg := series{name: "CoopStreaming server"}
	cs := series{name: "client/server (N x stream rate)"}
	for i, b := range one.ServerEgress {
		eg.xs, eg.ys = append(eg.xs, float64(i+1)), append(eg.ys, b*8/1e6)
		cs.xs, cs.ys = append(cs.xs, float64(i+1)), append(cs.ys, float64(prof.TargetN)*streamRate*8/1e6)
	}
	require.NoError(t, savePlot(filepath.Join(dir, "server_egress.svg"), fmt.Sprintf("Server egress, N=%d", prof.TargetN),
		"time (s)", "Mbit/s", eg, cs))
	t.Logf("\n%s", md.String())
}

func resultsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("COOP_BENCH_DIR")
	if dir == "" {
		dir = filepath.Join("..", "bench", "results")
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// debugTotals sums the peers' engine counters of a run (COOP_SIM_DEBUG:
// what push, pull and QoS did, for diagnosis).
func debugTotals(res swarm.Result) string {
	var t engine.Stats
	var layers [8]int
	for _, p := range res.Peers {
		st := p.Stats
		t.Subscribes += st.Subscribes
		t.Pushes += st.Pushes
		t.PushesDropped += st.PushesDropped
		t.PushParentsReplaced += st.PushParentsReplaced
		t.PushParentsSilent += st.PushParentsSilent
		t.DuplicatePushBytes += st.DuplicatePushBytes
		t.DuplicateBytes += st.DuplicateBytes
		t.LateBytes += st.LateBytes
		t.UsefulFromPeers += st.UsefulFromPeers
		t.UsefulFromServer += st.UsefulFromServer
		t.Timeouts += st.Timeouts
		t.RejectedBusy += st.RejectedBusy
		t.Hedges += st.Hedges
		t.LayerSwitches += st.LayerSwitches
		t.LateUnrequested += st.LateUnrequested
		t.LateFromPeers += st.LateFromPeers
		t.LateFromServer += st.LateFromServer
		t.LateReqAge += st.LateReqAge
		t.LateReqSlack += st.LateReqSlack
		t.MissNoHolder += st.MissNoHolder
		t.MissNotRequested += st.MissNotRequested
		t.MissInFlightPeer += st.MissInFlightPeer
		t.MissInFlightServer += st.MissInFlightServer
		t.MissServerOnly += st.MissServerOnly
		if p.FinalLayers < len(layers) {
			layers[p.FinalLayers]++
		}
	}
	// Late chunks that were requested (LateReqAge and LateReqSlack sum over them).
	latePulled := time.Duration(max(t.LateFromPeers+t.LateFromServer-t.LateUnrequested, 1))
	hist := map[[2]int]int{}
	played := map[[2]int]int{}
	var ups []float64
	missedFirst := 0
	for _, p := range res.Peers {
		ups = append(ups, p.StartupDelay.Seconds())
		for _, r := range p.Stats.PlayedAt {
			if r.Layers > 0 {
				break
			}
			missedFirst++
		}
	}
	slices.Sort(ups)
	if len(ups) > 0 {
		fmt.Printf("startup p10/p50/p95 %.2f/%.2f/%.2f s, deadlines missed before the first played %d\n", ups[len(ups)/10], ups[len(ups)/2], ups[len(ups)*95/100], missedFirst)
	}
	var byLayer [4][4]float64
	for _, p := range res.Peers {
		for l := range byLayer {
			for f := range byLayer[l] {
				byLayer[l][f] += float64(p.Stats.MediaInByLayer[l][f]) / 1e6
			}
		}
		for _, r := range p.Stats.PlayedAt {
			played[[2]int{r.Subscribed, r.Layers}]++
		}
	}
	for _, p := range res.Peers {
		for _, wl := range p.Stats.PushLayers {
			hist[wl]++
		}
	}
	return fmt.Sprintf("inByLayerMB(push,pull,late,dup)=%.0f ", byLayer[:3]) + fmt.Sprintf("played(subscribed,present)=%v pushLayers(want,granted)=%v ", played, hist) + fmt.Sprintf("silent=%d dupPushMB=%.1f subs=%d pushes=%d dropped=%d replaced=%d dupMB=%.1f lateMB=%.1f peersMB=%.1f serverMB=%.1f timeouts=%d busy=%d hedges=%d switches=%d lateUnreq=%d miss(noHolder=%d notReq=%d inflPeer=%d inflSrv=%d srvOnly=%d) finalLayers=%v srvPushes=%d srvDropped=%d",
		t.PushParentsSilent, float64(t.DuplicatePushBytes)/1e6, t.Subscribes, t.Pushes, t.PushesDropped, t.PushParentsReplaced, float64(t.DuplicateBytes)/1e6, float64(t.LateBytes)/1e6,
		float64(t.UsefulFromPeers)/1e6, float64(t.UsefulFromServer)/1e6, t.Timeouts, t.RejectedBusy, t.Hedges, t.LayerSwitches, t.LateUnrequested,
		t.MissNoHolder, t.MissNotRequested, t.MissInFlightPeer, t.MissInFlightServer, t.MissServerOnly, layers[:4], res.Server.Pushes, res.Server.PushesDropped) +
		fmt.Sprintf(" late(peers=%d server=%d pulledAge=%v pulledSlack=%v)", t.LateFromPeers, t.LateFromServer,
			t.LateReqAge/latePulled, t.LateReqSlack/latePulled) +
		" " + perClass(res) + " " + controlByType(res.Server) + " " + timeline(res)
}

// timeline is the share of deadlines that found the base layer, per 5 s
// of simulated time over all peers (from each peer's first played
// segment on).
func timeline(res swarm.Result) string {
	const bin = 5 * time.Second
	var due, ok [64]int
	for _, p := range res.Peers {
		for _, r := range p.Stats.PlayedAt {
			i := int(r.At.Sub(sim.Epoch) / bin)
			if i >= 0 && i < len(due) {
				due[i]++
				if r.Layers > 0 {
					ok[i]++
				}
			}
		}
	}
	var b strings.Builder
	b.WriteString("timeline5s(")
	for i := range due {
		if due[i] > 0 {
			fmt.Fprintf(&b, "%d:%.2f ", i*5, float64(ok[i])/float64(due[i]))
		}
	}
	b.WriteString(")")
	return b.String()
}

// controlByType is the server's control upload by message type, in MB.
func controlByType(st engine.Stats) string {
	var b strings.Builder
	b.WriteString("serverControlMB(")
	for t, n := range st.ControlOutByType {
		if n > 0 {
			fmt.Fprintf(&b, "%v=%.2f ", wire.Type(t), float64(n)/1e6)
		}
	}
	b.WriteString(")")
	return b.String()
}

// perClass is quality and per-layer continuity by upload class.
func perClass(res swarm.Result) string {
	type acc struct {
		n       int
		q       float64
		layerCI [8]float64
		outMB   float64
	}
	by := map[float64]*acc{}
	for _, p := range res.Peers {
		a := by[p.UploadFactor]
		if a == nil {
			a = &acc{}
			by[p.UploadFactor] = a
		}
		a.n++
		a.q += p.Quality
		a.outMB += float64(p.Stats.MediaBytesOut) / 1e6
		for l, c := range p.LayerCI {
			if l < len(a.layerCI) {
				a.layerCI[l] += c
			}
		}
	}
	keys := make([]float64, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := ""
	for _, k := range keys {
		a := by[k]
		out += fmt.Sprintf("[%.1fx n=%d q=%.2f ci=%.2f/%.2f/%.2f upMB/peer=%.1f]", k, a.n, a.q/float64(a.n), a.layerCI[0]/float64(a.n), a.layerCI[1]/float64(a.n), a.layerCI[2]/float64(a.n), a.outMB/float64(a.n))
	}
	return out
}
