package integration

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/baseline"
	"github.com/coopstreaming/coop/peerproto/baseline/donet"
	"github.com/coopstreaming/coop/peerproto/baseline/tree"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/swarm"
	"github.com/coopstreaming/coop/peerproto/topology"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// simProfile sizes the simulator evaluation (`make sim`).
type simProfile struct {
	Name     string
	Ns       []int
	Seeds    []uint64
	Duration time.Duration
	SpeedN   int
	SpeedDur time.Duration
}

func currentSimProfile() simProfile {
	if os.Getenv("COOP_SIM_PROFILE") == "full" {
		return simProfile{Name: "full", Ns: []int{100, 500, 1000, 2000, 5000, 10000}, Seeds: []uint64{1, 2, 3},
			Duration: 300 * time.Second, SpeedN: 5000, SpeedDur: 300 * time.Second}
	}
	return simProfile{Name: "quick", Ns: []int{100, 500, 1000, 2000}, Seeds: []uint64{1},
		Duration: 60 * time.Second, SpeedN: 5000, SpeedDur: 60 * time.Second}
}

// simScenario is CoopStreaming on the transit-stub network with the
// simulator's settings: manifests are not verified (the cost is measured
// by the benchmark, not the protocol's behaviour).
func simScenario(seed uint64, n int, d time.Duration, tweak func(*engine.Config)) swarm.Scenario {
	sc := baseScenario(seed, n, d)
	sc.Configure = func(c *engine.Config) {
		c.SkipVerify = true
		if tweak != nil {
			tweak(c)
		}
	}
	return sc
}

// baselineScenario is simScenario for a baseline overlay ("tree" or
// "donet"): the same network, source, peers and churn, a single layer.
func baselineScenario(kind string, seed uint64, n int, d time.Duration) swarm.Scenario {
	return baselineScenarioDelay(kind, seed, n, d, 0)
}

// baselineScenarioDelay is baselineScenario with another playout delay
// (0: the engine's 5 s).
func baselineScenarioDelay(kind string, seed uint64, n int, d, playout time.Duration) swarm.Scenario {
	sc := baseScenario(seed, n, d)
	sc.LayerShares = []float64{1}
	cfg := func(id wire.PeerID, up float64, server bool) baseline.Config {
		return baseline.Config{ID: id, Server: server, Upload: up, StreamRate: sc.StreamRate, SegmentDuration: 500 * time.Millisecond,
			PlayoutDelay: playout}
	}
	switch kind {
	case "tree":
		sc.Protocol = &swarm.Protocol{Name: kind,
			NewServer: func(env engine.Env, up float64) swarm.Source { return tree.New(cfg(swarm.ServerID, up, true), env) },
			NewPeer:   func(env engine.Env, id wire.PeerID, up float64) swarm.Node { return tree.New(cfg(id, up, false), env) }}
	case "donet":
		sc.Protocol = &swarm.Protocol{Name: kind,
			NewServer: func(env engine.Env, up float64) swarm.Source {
				return donet.New(donet.Config{Config: cfg(swarm.ServerID, up, true)}, env)
			},
			NewPeer: func(env engine.Env, id wire.PeerID, up float64) swarm.Node {
				return donet.New(donet.Config{Config: cfg(id, up, false)}, env)
			}}
	default:
		panic("unknown baseline " + kind)
	}
	return sc
}

// lifetimeChurn gives every peer present at from, and every replacement,
// a lifetime drawn by draw; a departing peer (half crash) is replaced at
// once, so N stays steady.
func lifetimeChurn(from time.Duration, draw func(u float64) time.Duration) []swarm.Event {
	return []swarm.Event{{At: from, Do: func(s *swarm.Swarm) {
		var schedule func(id wire.PeerID)
		schedule = func(id wire.PeerID) {
			rng := s.Net.Rand()
			s.Net.At(s.Net.Now().Add(draw(rng.Float64())), func() {
				if nd := s.Net.Node(id); nd == nil || !nd.Alive() {
					return
				}
				s.RemovePeer(id, s.Net.Rand().IntN(2) == 0)
				schedule(s.AddPeer(0).ID)
			})
		}
		alive := s.AlivePeers()
		slices.Sort(alive)
		for _, id := range alive {
			schedule(id)
		}
	}}}
}

func exponential(mean time.Duration) func(u float64) time.Duration {
	return func(u float64) time.Duration { return time.Duration(-math.Log(1-u) * float64(mean)) }
}

// pareto has shape 1.5 and the given mean (heavy-tailed: most peers stay
// briefly, a few for very long).
func pareto(mean time.Duration) func(u float64) time.Duration {
	const alpha = 1.5
	xm := float64(mean) * (alpha - 1) / alpha
	return func(u float64) time.Duration { return time.Duration(xm * math.Pow(1-u, -1/alpha)) }
}

// TestSimEvaluation is `make sim`: the CoopStreaming evaluation on the
// discrete-event simulator (real engine, virtual clock, transit-stub
// network). Writes sim/results/ and docs/evaluation.md.
//
// Not built yet (issue 6): the tree and gossip (DONet) baselines; the
// page says so.
func TestSimEvaluation(t *testing.T) {
	if os.Getenv("COOP_SIM") == "" {
		t.Skip("simulator evaluation: run with make sim (COOP_SIM=1)")
	}
	prof := currentSimProfile()
	dir := os.Getenv("COOP_SIM_DIR")
	if dir == "" {
		dir = filepath.Join("..", "sim", "results")
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	const target = 500
	d := prof.Duration
	var jobs []job
	add := func(name string, n int, sc swarm.Scenario) { jobs = append(jobs, job{name, n, sc}) }
	for _, seed := range prof.Seeds {
		for _, n := range prof.Ns {
			add("coop layered", n, simScenario(seed, n, d, nil))
			add("coop single layer", n, func() swarm.Scenario {
				sc := simScenario(seed, n, d, nil)
				sc.LayerShares = []float64{1}
				return sc
			}())
		}
		for _, m := range []int{2, 4, 8} { // M = 6 is the layered point above
			add(fmt.Sprintf("coop M=%d", m), target, simScenario(seed, target, d, func(c *engine.Config) { c.Partners = m }))
		}
		for _, up := range []float64{0.8, 1.0, 1.2, 2.0} {
			sc := simScenario(seed, target, d, nil)
			sc.Uploads = []swarm.UploadClass{{Share: 1, Factor: up}}
			add(fmt.Sprintf("coop homogeneous %.1fx", up), target, sc)
		}
		heavy := simScenario(seed, target, d, nil)
		heavy.Events = lifetimeChurn(10*time.Second, pareto(5*time.Minute))
		add("churn heavy-tailed (Pareto 1.5, mean 5 min)", target, heavy)
		exp := simScenario(seed, target, d, nil)
		exp.Events = lifetimeChurn(10*time.Second, exponential(5*time.Minute))
		add("churn exponential (mean 5 min)", target, exp)
		add("ablation: no rarest first", target, simScenario(seed, target, d, func(c *engine.Config) { c.DisableRarestFirst = true }))
		add("ablation: no random first", target, simScenario(seed, target, d, func(c *engine.Config) { c.DisableRandomFirst = true }))
		add("ablation: no QoS layer control", target, simScenario(seed, target, d, func(c *engine.Config) { c.DisableQoS = true }))
		add("ablation: no server partnership (server only seeds)", target,
			simScenario(seed, target, d, func(c *engine.Config) { c.DisableServerFallback = true }))
		flash := simScenario(seed, target/10, d, nil)
		addFlashCrowd(&flash, target)
		add("flash crowd (10% at start, 90% within 10 s)", target, flash)
	}
	began := time.Now()
	runs := runJobs(jobs)
	t.Logf("%d runs in %v", len(runs), time.Since(began).Round(time.Second))
	groups := map[string][]runSummary{}
	var order []string
	for _, r := range runs {
		k := fmt.Sprintf("%s|%d", r.Scenario, r.N)
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	point := func(name string, n int) runSummary { return medianRun(groups[fmt.Sprintf("%s|%d", name, n)]) }

	// Speed: one large run alone, for events/s and memory per peer.
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	speedSc := simScenario(1, prof.SpeedN, prof.SpeedDur, nil)
	start := time.Now()
	s := swarm.New(speedSc)
	res := s.Run()
	wall := time.Since(start)
	runtime.ReadMemStats(&m1)
	speed := map[string]any{"peers": prof.SpeedN, "simulatedSeconds": prof.SpeedDur.Seconds(), "wallSeconds": wall.Seconds(),
		"events": res.Events, "eventsPerSecond": float64(res.Events) / wall.Seconds(),
		"heapBytesPerPeer": float64(m1.HeapAlloc) / float64(prof.SpeedN), "continuity": res.Continuity, "offload": res.Offload,
		"cores": runtime.NumCPU()}
	t.Logf("speed: %v", speed)

	// Cross-check against the emulation (same engine paced to the wall clock).
	emuSc := simScenario(1, 100, 60*time.Second, nil)
	simRes := swarm.Run(emuSc)
	emuSc.RealTime = true
	emuRes := swarm.Run(emuSc)
	cross := map[string]any{"simContinuity": simRes.Continuity, "emuContinuity": emuRes.Continuity,
		"simOffload": simRes.Offload, "emuOffload": emuRes.Offload,
		"continuityWithin0.01": math.Abs(simRes.Continuity-emuRes.Continuity) <= 0.01,
		"offloadWithin10pct":   math.Abs(simRes.Offload-emuRes.Offload) <= 0.1*emuRes.Offload}

	// RTT histogram of the topology (peers of the N = 500 scenario).
	topo := topology.Generate(1, topology.Params{})
	var hosts []topology.Host
	for id := range uint64(500) {
		hosts = append(hosts, topo.PeerHost(id+2))
	}
	hist := topo.RTTHistogram(hosts, 20*time.Millisecond, 20)

	// Outputs.
	js, err := json.MarshalIndent(map[string]any{"profile": prof, "runs": runs, "speed": speed, "crossCheck": cross, "rttHistogram20ms": hist}, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sim.json"), js, 0o644))
	var csv strings.Builder
	csv.WriteString("scenario,n,seed,continuity,continuity_p5,offload,copies_per_segment,quality,startup_p50_s,latency_p95_s,control_overhead\n")
	for _, r := range runs {
		fmt.Fprintf(&csv, "%q,%d,%d,%.4f,%.4f,%.4f,%.3f,%.3f,%.2f,%.2f,%.4f\n", r.Scenario, r.N, r.Seed, r.Continuity, r.ContinuityP5,
			r.Offload, r.CopiesPerSegment, r.Quality, r.StartupP50, r.LatencyP95, r.ControlOverhead)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sim.csv"), []byte(csv.String()), 0o644))

	line := func(name string, ns []int, f func(runSummary) float64) series {
		s := series{name: name}
		for _, n := range ns {
			s.xs, s.ys = append(s.xs, float64(n)), append(s.ys, f(point(name, n)))
		}
		return s
	}
	ci := func(r runSummary) float64 { return r.Continuity }
	require.NoError(t, savePlot(filepath.Join(dir, "continuity_vs_n.svg"), "Base-layer continuity vs N", "peers N", "continuity",
		line("coop layered", prof.Ns, ci), line("coop single layer", prof.Ns, ci)))
	load := func(r runSummary) float64 { return r.CopiesPerSegment }
	require.NoError(t, savePlot(filepath.Join(dir, "server_load_vs_n.svg"), "Server load vs N (copies of the stream; client/server: N)", "peers N",
		"copies per segment", line("coop layered", prof.Ns, load)))
	mSeries := series{name: "coop, N=500"}
	for _, m := range []int{2, 4, 6, 8} {
		name := fmt.Sprintf("coop M=%d", m)
		if m == 6 {
			name = "coop layered"
		}
		mSeries.xs, mSeries.ys = append(mSeries.xs, float64(m)), append(mSeries.ys, point(name, target).Continuity)
	}
	require.NoError(t, savePlot(filepath.Join(dir, "continuity_vs_m.svg"), "Base-layer continuity vs partners M", "M", "continuity", mSeries))
	qSeries := series{name: "quality (layers played / 3)"}
	cSeries := series{name: "base continuity"}
	for _, up := range []float64{0.8, 1.0, 1.2, 2.0} {
		p := point(fmt.Sprintf("coop homogeneous %.1fx", up), target)
		qSeries.xs, qSeries.ys = append(qSeries.xs, up), append(qSeries.ys, p.Quality)
		cSeries.xs, cSeries.ys = append(cSeries.xs, up), append(cSeries.ys, p.Continuity)
	}
	require.NoError(t, savePlot(filepath.Join(dir, "quality_vs_upload.svg"), "Quality vs upload ratio (homogeneous, N=500)", "upload ÷ stream rate", "share", qSeries, cSeries))
	var lat []float64
	for _, r := range groups[fmt.Sprintf("coop layered|%d", target)] {
		lat = append(lat, r.Latencies...)
	}
	require.NoError(t, savePlot(filepath.Join(dir, "latency_cdf.svg"), "Ingest-to-playout latency, N=500", "seconds", "CDF", cdf("coop layered", lat)))
	rtt := series{name: "peer pairs"}
	for i, c := range hist {
		rtt.xs, rtt.ys = append(rtt.xs, float64(i*20+10)), append(rtt.ys, float64(c))
	}
	require.NoError(t, savePlot(filepath.Join(dir, "rtt_histogram.svg"), "RTT between peers (transit-stub, 800 routers)", "RTT (ms, 20 ms bins)", "pairs", rtt))

	var md strings.Builder
	fmt.Fprintf(&md, "# Evaluation (simulator, %s profile)\n\n", prof.Name)
	md.WriteString("Generated by `make sim` (`integration/sim_test.go`); raw data in `sim/results/`. The real peerproto engine " +
		"runs on the discrete-event network of `peerproto/sim` (virtual clock, per-peer upload/download serialisation, " +
		"per-pair delays from a GT-ITM transit-stub network of 800 routers, `peerproto/topology`): 1 Mbit/s, 500 ms segments, " +
		"server upload capped at 5x, peer uploads 20% 3x / 50% 1.5x / 30% 0.5x unless stated, M = 6, " +
		fmt.Sprintf("%v runs, first 15 s excluded, medians over seeds %v. Manifests are not verified in the simulator "+
			"(the benchmark measures that cost).\n\n", d, prof.Seeds))
	md.WriteString("**Not built yet:** the tree-overlay and gossip-mesh (CoolStreaming/DONet) baselines. " +
		"Until they exist this page cannot show the expected ordering " +
		"(CoopStreaming ≥ gossip ≥ tree under churn); it shows CoopStreaming alone, its ablations and its scaling.\n\n")
	md.WriteString("| scenario | N | base continuity (mean / p5) | offload | server copies/segment | quality | startup p50 | latency p95 | control overhead |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, k := range order {
		r := medianRun(groups[k])
		fmt.Fprintf(&md, "| %s | %d | %.3f / %.3f | %.3f | %.2f | %.2f | %.1f s | %.1f s | %.1f%% |\n", r.Scenario, r.N,
			r.Continuity, r.ContinuityP5, r.Offload, r.CopiesPerSegment, r.Quality, r.StartupP50, r.LatencyP95, 100*r.ControlOverhead)
	}
	pc := func(name string, n int) float64 { return point(name, n).Continuity }
	fmt.Fprintf(&md, "\n## What it shows (and where CoopStreaming does not win)\n\n"+
		"- Layering carries the design: with the same 1 Mbit/s in one layer, a base chunk is the whole 62.5 KB segment, "+
		"each hop takes 2–4x longer and base continuity collapses (N = 100: %.2f single layer vs %.2f layered; N = 500: %.2f vs %.2f). "+
		"A single-layer stream — e.g. x264 `-tune zerolatency` — needs sub-segment chunks, which the engine does not have yet.\n"+
		"- Below ~1.5x mean upload the base layer is not protected: QoS drops enhancement layers, yet base continuity is "+
		"%.2f at 1.0x and %.2f at 1.2x homogeneous upload (%.2f at 2.0x) — peers cannot spread even the base layer through "+
		"~7 hops within the 5 s playout delay.\n"+
		"- Partners: M = 2 gives %.2f, M = 4 %.2f, M = 6 %.2f, M = 8 %.2f.\n"+
		"- Ablations at N = 500 (layered %.3f): no rarest first %.3f, no random first %.3f, no QoS %.3f, "+
		"no server partnership (the server only seeds) %.3f.\n"+
		"- Churn at N = 500: exponential lifetimes (mean 5 min) %.3f, heavy-tailed %.3f; flash crowd %.3f.\n"+
		"- Server load per segment stays at a few copies from N = 100 to %d (client/server: N copies), but continuity falls "+
		"past N = 1 000 as the server's per-peer control traffic grows (see README, Benchmarks).\n",
		pc("coop single layer", 100), pc("coop layered", 100), pc("coop single layer", target), pc("coop layered", target),
		pc("coop homogeneous 1.0x", target), pc("coop homogeneous 1.2x", target), pc("coop homogeneous 2.0x", target),
		pc("coop M=2", target), pc("coop M=4", target), pc("coop layered", target), pc("coop M=8", target),
		pc("coop layered", target), pc("ablation: no rarest first", target), pc("ablation: no random first", target),
		pc("ablation: no QoS layer control", target), pc("ablation: no server partnership (server only seeds)", target),
		pc("churn exponential (mean 5 min)", target), pc("churn heavy-tailed (Pareto 1.5, mean 5 min)", target),
		pc("flash crowd (10% at start, 90% within 10 s)", target), prof.Ns[len(prof.Ns)-1])
	fmt.Fprintf(&md, "\n## Speed\n\n%d peers x %v simulated on %d cores: %.0f s wall, %d events (%.0f events/s), %.0f KiB of heap per peer.\n",
		prof.SpeedN, prof.SpeedDur, runtime.NumCPU(), wall.Seconds(), res.Events, float64(res.Events)/wall.Seconds(), float64(m1.HeapAlloc)/float64(prof.SpeedN)/1024)
	fmt.Fprintf(&md, "\n## Cross-check: simulator vs real-time emulation (N = 100)\n\nbase continuity %.3f vs %.3f, offload %.3f vs %.3f "+
		"(within ±0.01: %v; within ±10%%: %v). Analytic check (a test): offload ≤ min(1 − 1/N, mean upload ÷ stream rate) — "+
		"`peerproto/swarm` TestOffloadWithinAnalyticBound.\n", simRes.Continuity, emuRes.Continuity, simRes.Offload, emuRes.Offload,
		cross["continuityWithin0.01"], cross["offloadWithin10pct"])
	md.WriteString("\n## RTT between peers\n\n| RTT (ms) | pairs |\n|---|---|\n")
	for i, c := range hist {
		fmt.Fprintf(&md, "| %d–%d | %d |\n", i*20, i*20+20, c)
	}
	md.WriteString("\nPlots: `sim/results/continuity_vs_n.svg`, `continuity_vs_m.svg`, `server_load_vs_n.svg`, `quality_vs_upload.svg`, " +
		"`latency_cdf.svg`, `rtt_histogram.svg`.\n")
	require.NoError(t, os.WriteFile(filepath.Join("..", "docs", "evaluation.md"), []byte(md.String()), 0o644))
	t.Logf("\n%s", md.String())
}
