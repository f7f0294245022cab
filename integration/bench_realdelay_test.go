package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/lab/swarm"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/tcpnode"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// The real swarm with real round trips: ffmpeg → origin → real plugin →
// N coop-peer processes on loopback, every node delaying what it writes by
// the one-way delay of a transit-stub topology (tcpnode's test-only delay
// shim, configured by $COOP_NETDELAY_FILE), and then the simulator on the
// same scenario (same N, upload caps, layers, topology and seed).
//
// The publisher's frames carry their own number in pixels (the bars of
// bench_latency_test.go, over noise so the picture costs ~850 kbit/s), so a
// reader at each peer's player endpoint knows exactly which published
// frames it decoded: frames delivered = distinct frame numbers decoded ÷
// the frames of the same media interval.

// Timeline of a run, from the publisher's start (the simulator's t = 0):
// peers join from rdJoinAt over rdJoinSpread (as swarm.Scenario's initial
// joins), the window starts at rdWarmup (swarm's Warmup) and lasts
// rdWindow; readers may deliver a window's frames up to rdGrace later.
const (
	rdJoinAt     = 2 * time.Second
	rdJoinSpread = 5 * time.Second
	rdWarmup     = 15 * time.Second
	rdWindow     = 30 * time.Second
	rdGrace      = 6 * time.Second
	rdServerKbps = 5000
)

// rdPublisher is a publisher variant.
type rdPublisher struct {
	Name  string   `json:"name"`
	Video []string `json:"x264"`
}

var rdPublishers = []rdPublisher{
	{"H.264 -bf 3 (3 layers)", []string{"-preset", "ultrafast", "-bf", "3", "-g", "30"}},
	{"H.264 -tune zerolatency (1 layer)", []string{"-preset", "ultrafast", "-tune", "zerolatency", "-g", "30"}},
}

// rdUpload is peer i's upload cap ÷ 1 Mbit/s: 20% 3x, 50% 1.5x, 30% 0.5x
// (TestBenchRealProcesses' classes).
func rdUpload(i int) float64 {
	switch {
	case i%10 < 2:
		return 3
	case i%10 < 7:
		return 1.5
	}
	return 0.5
}

// rdPeerID is the simulator's ID of real peer i (IDs from 2, in join
// order), which also places it on the topology.
func rdPeerID(i int) wire.PeerID { return swarm.ServerID + 1 + wire.PeerID(i) }

// numberedClip encodes, once per test process, seconds of the numbered
// frames (320x240, 30 fps, bars over noise, ~850 kbit/s CBR) with AAC,
// with the given x264 options, as fast as the machine allows.
func numberedClip(t *testing.T, seconds int, video []string) string {
	t.Helper()
	args := []string{"-hide_banner", "-nostats", "-loglevel", "warning",
		"-f", "lavfi", "-i", latencyVideo + ",noise=alls=24:allf=t+u", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-pix_fmt", "yuv420p"}
	args = append(args, video...)
	args = append(args, "-b:v", "850k", "-maxrate", "850k", "-bufsize", "850k", "-x264-params", "nal-hrd=cbr",
		"-c:a", "aac", "-b:a", "64k", "-t", strconv.Itoa(seconds), "-f", "flv")
	key := "numbered " + strings.Join(args, " ")
	clipsMu.Lock()
	defer clipsMu.Unlock()
	if f, ok := clips[key]; ok {
		return f
	}
	f := filepath.Join(binDir, fmt.Sprintf("clip%d.flv", len(clips)))
	out, err := exec.Command("ffmpeg", append(args, "-y", f)...).CombinedOutput()
	require.NoError(t, err, "encoding %s: %s", f, out)
	clips[key] = f
	return f
}

// rdDelayTable is the one-way delay between every pair of the server
// (the plugin's peer address) and the peers (their -listen addresses), on
// the transit-stub network of seed, with the simulator's placement
// (topoDelay).
func rdDelayTable(seed uint64, server string, peers []string) *tcpnode.NetDelay {
	delay := rdDelay(seed)
	addrs := append([]string{server}, peers...)
	id := func(k int) wire.PeerID {
		if k == 0 {
			return swarm.ServerID
		}
		return rdPeerID(k - 1)
	}
	d := &tcpnode.NetDelay{OneWay: map[string]map[string]time.Duration{}}
	for a, from := range addrs {
		row := map[string]time.Duration{}
		for b, to := range addrs {
			if a != b {
				row[to] = delay(id(a), id(b))
			}
		}
		d.OneWay[from] = row
	}
	return d
}

// rdDelayScale multiplies every delay (COOP_REALDELAY_SCALE, default 1; 0
// is the control without delays), in the real run and its simulation.
func rdDelayScale() float64 {
	if v, err := strconv.ParseFloat(os.Getenv("COOP_REALDELAY_SCALE"), 64); err == nil && v >= 0 {
		return v
	}
	return 1
}

// rdDelay is topoDelay scaled by rdDelayScale.
func rdDelay(seed uint64) func(a, b wire.PeerID) time.Duration {
	d, k := topoDelay(seed), rdDelayScale()
	return func(a, b wire.PeerID) time.Duration { return time.Duration(float64(d(a, b)) * k) }
}

// rdPeer is one peer's figures in one run.
type rdPeer struct {
	Index        int     `json:"index"`
	UploadFactor float64 `json:"uploadFactor"`
	ServerRTTms  float64 `json:"serverRttMs"`
	// Frames delivered at the player endpoint over the window's media
	// interval (Expected frames from the first one decoded in the window).
	Frames     int     `json:"frames"`
	Expected   int     `json:"expected"`
	Delivered  float64 `json:"delivered"`
	Unreadable int     `json:"unreadable"`
	// From the peer's /stats over the window.
	Continuity float64 `json:"continuity"`
	Quality    float64 `json:"quality"`
	Plays      int     `json:"plays"`
	LatencyP50 float64 `json:"latencyP50s"`
	LatencyP95 float64 `json:"latencyP95s"`
	// StartupS is the engine's join → first segment played (/stats);
	// FirstFrameS is process start → first frame decoded by a reader
	// (ffmpeg, -analyzeduration 0.5 s) that was connected as soon as the
	// player endpoint served.
	StartupS    float64 `json:"startupS"`
	FirstFrameS float64 `json:"firstFrameS"`
	// BehindRTSPs is the median of (arrival at this peer's reader −
	// arrival at an RTSP reader on the origin) per frame.
	BehindRTSPs float64 `json:"behindOriginRtspS"`
	// LayersEnd / MaxLayersEnd are /stats layers at the window's end.
	LayersEnd    int     `json:"layersEnd"`
	MaxLayersEnd int     `json:"maxLayersEnd"`
	FromPeers    uint64  `json:"usefulFromPeers"`
	FromServer   uint64  `json:"usefulFromServer"`
	CPU          float64 `json:"cpuShareOfCore"`
	RSSMiB       float64 `json:"rssMiB"`
	latencies    []float64
}

// rdRun is one run's figures.
type rdRun struct {
	Publisher    string    `json:"publisher"`
	Seed         uint64    `json:"seed"`
	Peers        int       `json:"peers"`
	Layers       int       `json:"layers"`
	LayerShares  []float64 `json:"layerShares"`
	IngestBps    float64   `json:"ingestBytesPerSec"`
	DeliveredMin float64   `json:"framesDeliveredMin"`
	DeliveredP50 float64   `json:"framesDeliveredP50"`
	PeersAt99    int       `json:"peersAtLeast99pct"`
	Continuity   float64   `json:"continuity"`
	ContinuityP5 float64   `json:"continuityP5"`
	Quality      float64   `json:"quality"`
	// QualityByClass is the mean quality of the peers of each upload
	// class (key: the cap ÷ 1 Mbit/s).
	QualityByClass map[string]float64 `json:"qualityByClass"`
	LatencyP50     float64            `json:"latencyP50s"`
	LatencyP95     float64            `json:"latencyP95s"`
	StartupP50     float64            `json:"startupP50s"`
	StartupP95     float64            `json:"startupP95s"`
	FirstFrameP95  float64            `json:"firstFrameP95s"`
	BehindRTSPp50  float64            `json:"behindOriginRtspP50s"`
	Offload        float64            `json:"offload"`
	// OffloadOrigin is the offload the origin's /v1/p2p reports over the
	// window (from the peers' reports to the plugin).
	OffloadOrigin  float64  `json:"offloadOrigin"`
	ServerCopies   float64  `json:"serverCopies"`
	CPUp95         float64  `json:"peerCpuP95"`
	RSSMaxMiB      float64  `json:"peerRssMaxMiB"`
	OriginCPU      float64  `json:"originCpu"`
	PluginCPU      float64  `json:"pluginCpu"`
	LoadAvg        string   `json:"loadAvg"`
	PerPeer        []rdPeer `json:"perPeer"`
	Sim            rdSim    `json:"sim"`
	DelayScale     float64  `json:"delayScale"`
	DelayRTTp50ms  float64  `json:"rttP50ms"`
	DelayRTTmaxMs  float64  `json:"rttMaxMs"`
	WallSeconds    float64  `json:"wallSeconds"`
	ReaderFailures int      `json:"readerFailures"`
}

// rdSim is the simulator's run of the same scenario.
type rdSim struct {
	Continuity   float64 `json:"continuity"`
	ContinuityP5 float64 `json:"continuityP5"`
	Quality      float64 `json:"quality"`
	// QualityByClass as rdRun's.
	QualityByClass map[string]float64 `json:"qualityByClass"`
	Offload        float64            `json:"offload"`
	LatencyP50     float64            `json:"latencyP50s"`
	LatencyP95     float64            `json:"latencyP95s"`
	StartupP95     float64            `json:"startupP95s"`
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestBenchRealSwarmDelayed is the real-process part of `make bench` with
// real round trips (COOP_BENCH=1): for each publisher variant, runs of
// ffmpeg (a clip encoded beforehand, -re stream copy) → origin → plugin →
// N coop-peers with upload caps and transit-stub delays, each followed by
// the simulator on the same scenario; medians over the runs (topology
// seeds 1..runs). Writes bench/results/realswarm.{md,json}.
// COOP_REALDELAY_PEERS (the profile's RealPeers: 20, full 40) and
// COOP_REALDELAY_RUNS (3) size it;
// COOP_REALDELAY_PUBLISHERS=0 or 1 runs one variant only;
// COOP_REALDELAY_CPUPROFILE=dir writes each peer's CPU profile there
// (peer-i.pprof).
func TestBenchRealSwarmDelayed(t *testing.T) {
	if os.Getenv("COOP_BENCH") == "" {
		t.Skip("benchmark: run with make bench (COOP_BENCH=1)")
	}
	requireTool(t, "ffmpeg", "ffprobe")
	n := envInt("COOP_REALDELAY_PEERS", currentProfile().RealPeers)
	runs := envInt("COOP_REALDELAY_RUNS", 3)
	pubs := rdPublishers
	if v := os.Getenv("COOP_REALDELAY_PUBLISHERS"); v != "" {
		k, err := strconv.Atoi(v)
		require.NoError(t, err)
		pubs = rdPublishers[k : k+1]
	}
	dir := resultsDir(t)
	clipSecs := int((rdWarmup + rdWindow + rdGrace + 10*time.Second).Seconds())
	var all []rdRun
	for _, pub := range pubs {
		clip := numberedClip(t, clipSecs, pub.Video)
		for r := range runs {
			seed := uint64(r + 1)
			var run rdRun
			t.Run(fmt.Sprintf("%s/seed%d", strings.Fields(pub.Name)[1], seed), func(t *testing.T) {
				run = realDelayedRun(t, pub, clip, n, seed)
				run.Sim = simOfRealRun(run, n)
				t.Logf("%s seed %d: frames delivered min %.4f p50 %.4f (%d/%d peers ≥ 99%%), continuity %.3f (sim %.3f), quality %.3f (sim %.3f), latency p95 %.2f s (sim %.2f s), startup p95 %.2f s, first frame p95 %.2f s, offload %.3f, CPU p95 %.2f%%, RSS max %.1f MiB, load %s",
					pub.Name, seed, run.DeliveredMin, run.DeliveredP50, run.PeersAt99, run.Peers, run.Continuity, run.Sim.Continuity,
					run.Quality, run.Sim.Quality, run.LatencyP95, run.Sim.LatencyP95, run.StartupP95, run.FirstFrameP95,
					run.Offload, 100*run.CPUp95, run.RSSMaxMiB, run.LoadAvg)
			})
			if run.Peers > 0 {
				all = append(all, run)
			}
		}
	}
	require.NotEmpty(t, all)
	md := rdReport(all, n, runs)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "realswarm.md"), []byte(md), 0o644))
	js, err := json.MarshalIndent(map[string]any{"commit": gitCommit(), "peers": n, "runs": all,
		"windowSeconds": rdWindow.Seconds(), "warmupSeconds": rdWarmup.Seconds(), "serverUploadKbps": rdServerKbps}, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "realswarm.json"), js, 0o644))
	t.Logf("\n%s", md)
}

// gitCommit is the commit of the tree under test ("" when unknown), with
// "+dirty" when it has uncommitted changes.
func gitCommit() string {
	if c := os.Getenv("COOP_BENCH_COMMIT"); c != "" {
		return c
	}
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += "+dirty"
	}
	return c
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// rdReader is a reader at a player endpoint.
type rdReader struct {
	log *frameLog
	err error
}

// startFrameReader waits (up to 30 s) for url to serve and then decodes it
// to numbered frames, killed when the test ends. It runs off the test
// goroutine and so reports errors instead of failing.
func startFrameReader(t *testing.T, url string, inputOpts ...string) rdReader {
	if strings.HasPrefix(url, "http://") && !poll(30*time.Second, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		return rdReader{err: fmt.Errorf("%s never served", url)}
	}
	args := append([]string{"-hide_banner", "-nostats", "-loglevel", "error", "-fflags", "nobuffer", "-flags", "low_delay", "-threads", "1"}, inputOpts...)
	args = append(args, "-i", url, "-map", "0:v:0", "-an", "-f", "rawvideo", "-pix_fmt", "gray", "-fps_mode", "passthrough", "-flush_packets", "1", "pipe:1")
	cmd := exec.Command("ffmpeg", args...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return rdReader{err: err}
	}
	if err := cmd.Start(); err != nil {
		return rdReader{err: err}
	}
	l := &frameLog{done: make(chan struct{})}
	go l.read(out, 20*60*latFPS)
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-l.done
		_ = cmd.Wait()
	})
	return rdReader{log: l}
}

// realDelayedRun is one run of the real swarm.
func realDelayedRun(t *testing.T, pub rdPublisher, clip string, n int, seed uint64) rdRun {
	began := time.Now()
	run := rdRun{Publisher: pub.Name, Seed: seed, Peers: n, DelayScale: rdDelayScale()}
	table := filepath.Join(t.TempDir(), "netdelay.json")
	// Every process of the run reads it: the origin passes its
	// environment to the plugin, startPeer passes the test's to coop-peer
	// (this test is not parallel).
	t.Setenv(tcpnode.EnvNetDelayFile, table)
	o, serverAddr := startP2POrigin(t, fmt.Sprintf("COOP_PLUGIN_UPLOADKBPS=%d", rdServerKbps), "COOP_PLUGIN_SEEDS=0",
		tcpnode.EnvNetDelayFile+"="+table)
	listen := make([]string, n)
	for i := range listen {
		listen[i] = fixedAddr(t)
	}
	// The plugin reads the table when the stream is announced, the peers
	// when they start: written before either.
	delays := rdDelayTable(seed, serverAddr, listen)
	raw, err := delays.Marshal()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(table, raw, 0o644))
	var rtts []float64
	for _, to := range listen {
		rtts = append(rtts, 2*float64(delays.Between(serverAddr, to))/1e6)
	}
	run.DelayRTTp50ms, run.DelayRTTmaxMs = rdPct(rtts, 50), rdPct(rtts, 100)

	path := "live/rd" + strconv.FormatUint(seed, 10)
	key := strings.TrimPrefix(path, "live/")
	start := time.Now()
	publishClipRTMP(t, clip, o.rtmpURL(key))
	clock := watchIngest(o, path)
	defer clock.close()
	o.waitPublishing(t, path)
	ref := startFrameReader(t, o.rtspURL(key), "-rtsp_transport", "tcp")
	require.NoError(t, ref.err)
	if rdDelayScale() > 0 {
		// The plugin took the table from the origin's environment.
		waitFor(t, 10*time.Second, "the plugin's delay shim", func() bool {
			return strings.Contains(o.out.String(), "test-only network delay shim on")
		})
	}

	peers := make([]*peerProc, n)
	started := make([]time.Time, n)
	readers := make([]rdReader, n)
	var wg sync.WaitGroup
	for i := range n {
		if wait := time.Until(start.Add(rdJoinAt + time.Duration(i)*rdJoinSpread/time.Duration(n))); wait > 0 {
			time.Sleep(wait) // the join schedule of the scenario, not synchronisation
		}
		started[i] = time.Now()
		args := []string{"-listen", listen[i], "-upload-kbps", strconv.Itoa(int(rdUpload(i) * 1000)), "-quiet"}
		if dir := os.Getenv("COOP_REALDELAY_CPUPROFILE"); dir != "" {
			args = append(args, "-cpuprofile", filepath.Join(dir, fmt.Sprintf("peer-%d.pprof", i)))
		}
		peers[i] = startPeer(t, serverAddr, path, args...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// As README advises for /stream.ts: ffmpeg analyses 5 s of a
			// live MPEG-TS before its first frame by default, whoever
			// muxes it; 0.5 s finds both tracks.
			readers[i] = startFrameReader(t, peers[i].url(), "-analyzeduration", "500000")
		}()
	}
	wsAt, weAt := start.Add(rdWarmup), start.Add(rdWarmup+rdWindow)
	time.Sleep(time.Until(wsAt)) // the window of the scenario
	wg.Wait()
	p2pA := o.p2p(t)
	originA, pluginA := sampleProc(t, o.cmd.Process.Pid), sampleProc(t, p2pA.PID)
	procA := make([]procSample, n)
	statsA := make([]peerStats, n)
	for i, p := range peers {
		procA[i] = sampleProc(t, p.cmd.Process.Pid)
		statsA[i], _ = p.tryStats()
	}
	time.Sleep(time.Until(weAt))
	p2pB := o.p2p(t)
	run.OriginCPU, run.PluginCPU = cpuShare(originA, sampleProc(t, o.cmd.Process.Pid)), cpuShare(pluginA, sampleProc(t, p2pA.PID))
	run.LoadAvg = loadAvg()
	statsB := make([]peerStats, n)
	for i, p := range peers {
		b := sampleProc(t, p.cmd.Process.Pid)
		run.PerPeer = append(run.PerPeer, rdPeer{Index: i, UploadFactor: rdUpload(i), CPU: cpuShare(procA[i], b),
			RSSMiB: float64(b.rss) / (1 << 20), ServerRTTms: rtts[i]})
		st, err := p.tryStats()
		require.NoError(t, err, "peer %d /stats", i)
		statsB[i] = st
		var lay struct {
			Layers    int `json:"layers"`
			MaxLayers int `json:"maxLayers"`
		}
		if tryGetJSON("http://"+p.http+"/stats", &lay) == nil {
			run.PerPeer[i].LayersEnd, run.PerPeer[i].MaxLayersEnd = lay.Layers, lay.MaxLayers
		}
	}
	for _, s := range o.streams(t) {
		if s.Path == path {
			run.LayerShares = trimShares(s.LayerShares)
		}
	}
	run.Layers = max(1, len(run.LayerShares))
	secs := rdWindow.Seconds()
	run.IngestBps = float64(p2pB.BytesPushed-p2pA.BytesPushed) / secs
	if len(p2pA.Streams) > 0 && len(p2pB.Streams) > 0 && run.IngestBps > 0 {
		run.ServerCopies = float64(p2pB.Streams[0].ServerMediaBytes-p2pA.Streams[0].ServerMediaBytes) / secs / run.IngestBps
		peersB := float64(p2pB.Streams[0].PeerBytesFromPeers - p2pA.Streams[0].PeerBytesFromPeers)
		serverB := float64(p2pB.Streams[0].PeerBytesFromServer - p2pA.Streams[0].PeerBytesFromServer)
		run.OffloadOrigin = peersB / max(peersB+serverB, 1)
	}

	// The frames of the window, once the late ones had their grace.
	time.Sleep(time.Until(weAt.Add(rdGrace)))
	refFrames, _ := ref.log.snapshot()
	refAt := map[uint64]time.Time{}
	for _, f := range refFrames {
		refAt[f.n] = f.at
	}
	expected := int(rdWindow.Seconds() * latFPS)
	var fromPeers, fromServer float64
	var cis []float64
	for i := range peers {
		pr := &run.PerPeer[i]
		a, b := statsA[i], statsB[i]
		pr.StartupS = float64(b.StartupDelayMs) / 1000
		pr.FromPeers, pr.FromServer = b.FromPeers-a.FromPeers, b.FromServer-a.FromServer
		fromPeers += float64(pr.FromPeers)
		fromServer += float64(pr.FromServer)
		var layers int
		for _, p := range b.RecentPlays {
			at := time.UnixMilli(p.AtUnixMs)
			if at.Before(wsAt) || at.After(weAt) {
				continue
			}
			pr.Plays++
			layers += p.Layers
			if p.Layers == 0 {
				continue
			}
			pr.Continuity++
			if in, ok := clock.get(p.Seq); ok {
				pr.latencies = append(pr.latencies, at.Sub(in).Seconds())
			}
		}
		if pr.Plays > 0 {
			pr.Quality = float64(layers) / float64(run.Layers) / float64(pr.Plays)
			pr.Continuity /= float64(pr.Plays)
		}
		cis = append(cis, pr.Continuity)
		pr.LatencyP50, pr.LatencyP95 = rdPct(pr.latencies, 50), rdPct(pr.latencies, 95)
		rd := readers[i]
		pr.Expected = expected
		if rd.err != nil {
			run.ReaderFailures++
			t.Logf("peer %d reader: %v", i, rd.err)
			continue
		}
		frames, unreadable := rd.log.snapshot()
		pr.Unreadable = unreadable
		if len(frames) > 0 {
			pr.FirstFrameS = frames[0].at.Sub(started[i]).Seconds()
		}
		// The media interval: from the first frame decoded in the window,
		// expected frames on.
		k := sort.Search(len(frames), func(j int) bool { return !frames[j].at.Before(wsAt) })
		if k == len(frames) {
			continue
		}
		first := frames[k].n
		var behind []float64
		for _, f := range frames[k:] {
			if f.n >= first+uint64(expected) {
				break
			}
			pr.Frames++
			if r, ok := refAt[f.n]; ok {
				behind = append(behind, f.at.Sub(r).Seconds())
			}
		}
		pr.Delivered = float64(pr.Frames) / float64(expected)
		pr.BehindRTSPs = rdPct(behind, 50)
	}
	run.Offload = fromPeers / max(fromPeers+fromServer, 1)
	var delivered, cpus, rss, startups, firsts, behinds, qualities, lats []float64
	for _, pr := range run.PerPeer {
		delivered = append(delivered, pr.Delivered)
		if pr.Delivered >= 0.99 {
			run.PeersAt99++
		}
		cpus = append(cpus, pr.CPU)
		rss = append(rss, pr.RSSMiB)
		startups = append(startups, pr.StartupS)
		firsts = append(firsts, pr.FirstFrameS)
		behinds = append(behinds, pr.BehindRTSPs)
		qualities = append(qualities, pr.Quality)
		lats = append(lats, pr.latencies...)
	}
	run.DeliveredMin, run.DeliveredP50 = rdPct(delivered, 0), rdPct(delivered, 50)
	run.Continuity, run.ContinuityP5 = meanOf(cis), rdPct(cis, 5)
	run.Quality = meanOf(qualities)
	run.QualityByClass = byClass(func(yield func(i int, q float64)) {
		for _, pr := range run.PerPeer {
			yield(pr.Index, pr.Quality)
		}
	})
	run.LatencyP50, run.LatencyP95 = rdPct(lats, 50), rdPct(lats, 95)
	run.StartupP50, run.StartupP95 = rdPct(startups, 50), rdPct(startups, 95)
	run.FirstFrameP95 = rdPct(firsts, 95)
	run.BehindRTSPp50 = rdPct(behinds, 50)
	run.CPUp95, run.RSSMaxMiB = rdPct(cpus, 95), rdPct(rss, 100)
	run.WallSeconds = time.Since(began).Seconds()
	if rdDelayScale() > 0 {
		for i, p := range peers {
			require.Contains(t, p.out.String(), "test-only network delay shim on", "peer %d took the table", i)
		}
	}
	// The measurement itself must have worked: readers decoded numbered
	// frames at every peer's endpoint.
	require.Positive(t, len(refFrames), "the RTSP reader on the origin decoded frames")
	for i, pr := range run.PerPeer {
		if pr.Frames == 0 {
			t.Errorf("peer %d: no frame decoded at its player endpoint in the window (continuity %.3f, plays %d)", i, pr.Continuity, pr.Plays)
		}
	}
	return run
}

// trimShares drops the trailing empty layers of a stream's layer shares
// (a stream without B-frames has one layer).
func trimShares(s []float64) []float64 {
	for len(s) > 0 && s[len(s)-1] <= 0 {
		s = s[:len(s)-1]
	}
	return slices.Clone(s)
}

// rdPct is pct, 0 for no values (JSON has no NaN).
func rdPct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return pct(v, p)
}

func meanOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// simOfRealRun runs the simulator on the run's scenario: the same seed
// (topology and placement), N, join schedule, window, stream rate and
// layer shares as measured at the origin, server cap, and each peer's
// upload cap (the engine's cap, as -upload-kbps sets it; links as fast as
// loopback's are not the limit).
func simOfRealRun(run rdRun, n int) rdSim {
	shares := run.LayerShares
	if len(shares) == 0 {
		shares = []float64{1}
	}
	rate := run.IngestBps
	if rate <= 0 {
		rate = streamRate
	}
	sc := swarm.Scenario{Seed: run.Seed, Peers: n, Duration: rdWarmup + rdWindow, StreamRate: rate, LayerShares: shares,
		ServerUpload: rdServerKbps * 1000 / 8 / rate, Uploads: []swarm.UploadClass{{Share: 1, Factor: 50}}, DownloadFactor: 50,
		JoinSpread: rdJoinSpread, Warmup: rdWarmup, Delay: rdDelay(run.Seed),
		Configure: func(cfg *engine.Config) { cfg.UploadCap = rdUpload(int(cfg.ID-rdPeerID(0))) * 1e6 / 8 },
		// The plugin leaves the server's request queue at the engine's
		// default; the simulator's own choice (8 per layer) is not this
		// scenario's.
		ConfigureServer: func(cfg *engine.Config) { cfg.ServerQueue = 0 }}
	res := swarm.Run(sc)
	return rdSim{Continuity: res.Continuity, ContinuityP5: res.ContinuityP5, Quality: res.Quality, Offload: res.Offload,
		LatencyP50: res.LatencyP50.Seconds(), LatencyP95: res.LatencyP95.Seconds(), StartupP95: res.StartupP95.Seconds(),
		QualityByClass: byClass(func(yield func(i int, q float64)) {
			for _, pr := range res.Peers {
				if pr.PlayedInWindow > 0 {
					yield(int(pr.ID-rdPeerID(0)), pr.Quality)
				}
			}
		})}
}

// byClass is the mean of the values of each upload class, the peers
// given by index.
func byClass(peers func(yield func(i int, v float64))) map[string]float64 {
	sum, cnt := map[string]float64{}, map[string]int{}
	peers(func(i int, v float64) {
		k := strconv.FormatFloat(rdUpload(i), 'f', 1, 64) + "x"
		sum[k] += v
		cnt[k]++
	})
	for k := range sum {
		sum[k] /= float64(cnt[k])
	}
	return sum
}

// rdMedian is the median over runs of one field.
func rdMedian(runs []rdRun, f func(r rdRun) float64) float64 {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

func rdReport(all []rdRun, n, runs int) string {
	var md strings.Builder
	fmt.Fprintf(&md, "# Real swarm with transit-stub round trips (real processes on loopback)\n\n")
	fmt.Fprintf(&md, "Commit %s. ffmpeg publishes a clip encoded beforehand (-re, stream copy over RTMP; 320x240 30 fps numbered frames "+
		"over noise, x264 -preset ultrafast at 850 kbit/s CBR + AAC 64 kbit/s) → coop-origin → coop-plugin (go-plugin; server partner "+
		"capped at %d kbit/s, no seeds) → %d coop-peer processes (-upload-kbps: 20%% 3000, 50%% 1500, 30%% 500). Every node delays what it "+
		"writes to another by their one-way delay on the transit-stub network of the run's seed (lab/topology, the simulator's placement: "+
		"server on a transit router, peer i as simulator peer ID i+2), with tcpnode's test-only delay shim ($%s). Peers join %v–%v "+
		"after the publisher starts; window %v–%v. Readers decode every peer's /stream.ts (and the origin's RTSP, the reference) "+
		"and read the frame numbers. %d runs per publisher (topology seeds 1..%d); medians over runs. Definitions: ../shared/docs/metrics.md.\n\n",
		all[0].commitOr()+rdScaleNote(all[0].DelayScale), rdServerKbps, n, tcpnode.EnvNetDelayFile, rdJoinAt, rdJoinAt+rdJoinSpread, rdWarmup, rdWarmup+rdWindow, runs, runs)
	byPub := map[string][]rdRun{}
	var order []string
	for _, r := range all {
		if _, ok := byPub[r.Publisher]; !ok {
			order = append(order, r.Publisher)
		}
		byPub[r.Publisher] = append(byPub[r.Publisher], r)
	}
	mark := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	md.WriteString("## Targets (issue 11), medians over runs\n\n| publisher | layers | frames delivered, worst peer (peers ≥ 99%) | latency p95 (≤ 3 s) | startup p95 (≤ 1.5 s) | offload (≥ 0.85) | peer CPU p95 (≤ 2% of a core) | peer RSS max (≤ 40 MiB) |\n|---|---|---|---|---|---|---|---|\n")
	for _, p := range order {
		rs := byPub[p]
		dmin := rdMedian(rs, func(r rdRun) float64 { return r.DeliveredMin })
		at99 := rdMedian(rs, func(r rdRun) float64 { return float64(r.PeersAt99) })
		lat := rdMedian(rs, func(r rdRun) float64 { return r.LatencyP95 })
		st := rdMedian(rs, func(r rdRun) float64 { return r.StartupP95 })
		off := rdMedian(rs, func(r rdRun) float64 { return r.Offload })
		cpu := rdMedian(rs, func(r rdRun) float64 { return r.CPUp95 })
		rss := rdMedian(rs, func(r rdRun) float64 { return r.RSSMaxMiB })
		fmt.Fprintf(&md, "| %s | %d | %.4f (%.0f/%d) %s | %.2f s %s | %.2f s %s | %.3f %s | %.2f%% %s | %.1f MiB %s |\n",
			p, rs[0].Layers, dmin, at99, rs[0].Peers, mark(dmin >= 0.99), lat, mark(lat <= 3), st, mark(st <= 1.5),
			off, mark(off >= 0.85), 100*cpu, mark(cpu <= 0.02), rss, mark(rss <= 40))
	}
	md.WriteString("\n## Real vs simulated (same scenario), medians over runs\n\n| publisher | continuity real / sim (±0.01) | quality real / sim (±0.05) | latency p95 real / sim (±10%) | latency p50 real / sim | offload real / sim | startup p95 real / sim |\n|---|---|---|---|---|---|---|\n")
	for _, p := range order {
		rs := byPub[p]
		med := func(f func(r rdRun) float64) float64 { return rdMedian(rs, f) }
		c, cs := med(func(r rdRun) float64 { return r.Continuity }), med(func(r rdRun) float64 { return r.Sim.Continuity })
		q, qs := med(func(r rdRun) float64 { return r.Quality }), med(func(r rdRun) float64 { return r.Sim.Quality })
		l, ls := med(func(r rdRun) float64 { return r.LatencyP95 }), med(func(r rdRun) float64 { return r.Sim.LatencyP95 })
		l5, l5s := med(func(r rdRun) float64 { return r.LatencyP50 }), med(func(r rdRun) float64 { return r.Sim.LatencyP50 })
		off, offs := med(func(r rdRun) float64 { return r.Offload }), med(func(r rdRun) float64 { return r.Sim.Offload })
		s, ss := med(func(r rdRun) float64 { return r.StartupP95 }), med(func(r rdRun) float64 { return r.Sim.StartupP95 })
		fmt.Fprintf(&md, "| %s | %.3f / %.3f %s | %.3f / %.3f %s | %.2f s / %.2f s %s | %.2f s / %.2f s | %.3f / %.3f | %.2f s / %.2f s |\n",
			p, c, cs, mark(abs(c-cs) <= 0.01), q, qs, mark(abs(q-qs) <= 0.05), l, ls, mark(abs(l-ls) <= 0.1*ls), l5, l5s, off, offs, s, ss)
	}
	md.WriteString("\n## Quality per upload class (metrics.md 9), medians over runs: real / sim\n\n| publisher | 3.0x | 1.5x | 0.5x |\n|---|---|---|---|\n")
	for _, p := range order {
		rs := byPub[p]
		fmt.Fprintf(&md, "| %s |", p)
		for _, k := range []string{"3.0x", "1.5x", "0.5x"} {
			if _, ok := rs[0].QualityByClass[k]; !ok {
				md.WriteString(" – |") // no peer of the class (N < 8)
				continue
			}
			fmt.Fprintf(&md, " %.3f / %.3f |", rdMedian(rs, func(r rdRun) float64 { return r.QualityByClass[k] }),
				rdMedian(rs, func(r rdRun) float64 { return r.Sim.QualityByClass[k] }))
		}
		md.WriteString("\n")
	}
	md.WriteString("\n## Runs\n\n| publisher | seed | RTT to server p50 / max | ingest | frames delivered min / p50 | continuity (p5) | quality | latency p50 / p95 | startup p50 / p95 | first frame at reader (ffmpeg -analyzeduration 0.5 s) p95 | behind origin RTSP p50 | offload (origin's /v1/p2p) | server copies | peer CPU p95 | peer RSS max | origin / plugin CPU | load avg | wall |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range all {
		fmt.Fprintf(&md, "| %s | %d | %.0f / %.0f ms | %.0f kbit/s | %.4f / %.4f | %.3f (%.3f) | %.3f | %.2f / %.2f s | %.2f / %.2f s | %.2f s | %.2f s | %.3f (%.3f) | %.2f | %.2f%% | %.1f MiB | %.1f%% / %.1f%% | %s | %.0f s |\n",
			r.Publisher, r.Seed, r.DelayRTTp50ms, r.DelayRTTmaxMs, r.IngestBps*8/1000, r.DeliveredMin, r.DeliveredP50, r.Continuity, r.ContinuityP5,
			r.Quality, r.LatencyP50, r.LatencyP95, r.StartupP50, r.StartupP95, r.FirstFrameP95, r.BehindRTSPp50, r.Offload, r.OffloadOrigin, r.ServerCopies,
			100*r.CPUp95, r.RSSMaxMiB, 100*r.OriginCPU, 100*r.PluginCPU, r.LoadAvg, r.WallSeconds)
	}
	md.WriteString("\n## Frames delivered per peer (decoded at its /stream.ts ÷ published frames of the same 30 s of media; layers played at the window's end)\n\n| peer | upload | RTT to server (seed 1) |")
	for _, r := range all {
		fmt.Fprintf(&md, " %s s%d |", strings.Fields(r.Publisher)[1], r.Seed)
	}
	md.WriteString("\n|---|---|---|" + strings.Repeat("---|", len(all)) + "\n")
	for i := range n {
		fmt.Fprintf(&md, "| %d | %.1fx | %.0f ms |", i, rdUpload(i), all[0].PerPeer[i].ServerRTTms)
		for _, r := range all {
			if i < len(r.PerPeer) {
				pr := r.PerPeer[i]
				fmt.Fprintf(&md, " %.4f (%d/%d) |", pr.Delivered, pr.LayersEnd, pr.MaxLayersEnd)
			}
		}
		md.WriteString("\n")
	}
	return md.String()
}

func rdScaleNote(k float64) string {
	if k == 1 {
		return ""
	}
	return fmt.Sprintf(" (**delays scaled by %g**: COOP_REALDELAY_SCALE)", k)
}

func (r rdRun) commitOr() string {
	if c := gitCommit(); c != "" {
		return c
	}
	return "(unknown)"
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

// fixedAddr is a free loopback address for a listener that must be named
// before its process starts (the delay table lists every peer's), chosen
// below Linux's ephemeral range (32768-60999): a port from freeAddr could
// be taken, before the peer bound it, by one of the swarm's own outbound
// connections ("bind: address already in use" in one run of 6).
func fixedAddr(t *testing.T) string {
	t.Helper()
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		if claimPort("tcp", port) {
			return fmt.Sprintf("127.0.0.1:%d", port)
		}
	}
	t.Fatal("no free TCP port below the ephemeral range")
	return ""
}
