package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/lab/swarm"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// ingestClock records when the origin finished each segment of a path,
// polling /v1/streams every 20 ms.
type ingestClock struct {
	mu   sync.Mutex
	at   map[uint64]time.Time
	stop chan struct{}
	done chan struct{}
}

func watchIngest(o *originProc, path string) *ingestClock {
	c := &ingestClock{at: map[uint64]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		var seen uint64
		for {
			select {
			case <-c.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			resp, err := http.Get("http://" + o.httpAddr + "/v1/streams")
			if err != nil {
				continue
			}
			var body struct {
				Streams []streamInfo `json:"streams"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			now := time.Now()
			for _, s := range body.Streams {
				if s.Path != path {
					continue
				}
				c.mu.Lock()
				for ; seen < s.Segments; seen++ {
					c.at[seen] = now // segment numbers start at 0 for a new stream
				}
				c.mu.Unlock()
			}
		}
	}()
	return c
}

func (c *ingestClock) close() { close(c.stop); <-c.done }

func (c *ingestClock) get(seq uint64) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.at[seq]
	return at, ok
}

func pct(v []float64, p float64) float64 { return swarm.Percentile(v, p) }

// TestBenchRealProcesses runs the product for real on loopback: ffmpeg
// publishes 1 Mbit/s over RTMP, the origin launches the plugin, N
// coop-peer processes join with heterogeneous upload caps (20% 3x, 50%
// 1.5x, 30% 0.5x the stream rate; the server partner capped at 5x). It
// measures each peer process's CPU and RSS, startup delay, ingest-to-
// playout latency, continuity and offload; then the client/server
// baseline with N RTSP readers; then the emulation of the same scenario.
func TestBenchRealProcesses(t *testing.T) {
	if os.Getenv("COOP_BENCH") == "" {
		t.Skip("benchmark: run with make bench (COOP_BENCH=1)")
	}
	requireTool(t, "ffmpeg")
	prof := currentProfile()
	n := prof.RealPeers
	dir := resultsDir(t)
	o, peerAddr := startP2POrigin(t, "COOP_PLUGIN_UPLOADKBPS=5000", "COOP_PLUGIN_SEEDS=0")
	publishRTMP(t, o.rtmpURL("bench"), 150*time.Second, "640x360", "-b:v", "850k", "-maxrate", "850k",
		"-bufsize", "1700k", "-bf", "3", "-g", "60", "-b:a", "64k")
	clock := watchIngest(o, "live/bench")
	defer clock.close()
	o.waitPublishing(t, "live/bench")

	factors := make([]float64, n)
	var peers []*peerProc
	for i := range n {
		f := 0.5
		switch {
		case i%10 < 2:
			f = 3
		case i%10 < 7:
			f = 1.5
		}
		factors[i] = f
		peers = append(peers, startPeer(t, peerAddr, "live/bench", "-upload-kbps", fmt.Sprint(int(f*1000)), "-quiet"))
	}
	waitFor(t, 60*time.Second, "every peer playing", func() bool {
		for _, p := range peers {
			if !p.playing(4) {
				return false
			}
		}
		return true
	})
	time.Sleep(15 * time.Second) // warm-up, as in the emulation
	pluginPID := o.p2p(t).PID
	window := 20 * time.Second
	p2pA := o.p2p(t)
	originA, pluginA := sampleProc(t, o.cmd.Process.Pid), sampleProc(t, pluginPID)
	peerA := make([]procSample, n)
	playsA := make([]peerStats, n)
	for i, p := range peers {
		peerA[i], playsA[i] = sampleProc(t, p.cmd.Process.Pid), p.stats(t)
	}
	time.Sleep(window)
	p2pB := o.p2p(t)
	originB, pluginB := sampleProc(t, o.cmd.Process.Pid), sampleProc(t, pluginPID)
	var cpus, rss, startups, lats []float64
	var due, onTime, fromPeers, fromServer float64
	perSeq := map[uint64][]float64{}
	for i, p := range peers {
		b := sampleProc(t, p.cmd.Process.Pid)
		cpus = append(cpus, cpuShare(peerA[i], b))
		rss = append(rss, float64(b.rss)/(1<<20))
		st := p.stats(t)
		startups = append(startups, float64(st.StartupDelayMs)/1000)
		due += float64(st.Due - playsA[i].Due)
		onTime += float64(st.BaseOnTime - playsA[i].BaseOnTime)
		fromPeers += float64(st.FromPeers - playsA[i].FromPeers)
		fromServer += float64(st.FromServer - playsA[i].FromServer)
		for _, r := range st.RecentPlays {
			if r.Layers == 0 {
				continue
			}
			if at, ok := clock.get(r.Seq); ok {
				l := time.UnixMilli(r.AtUnixMs).Sub(at).Seconds()
				lats = append(lats, l)
				perSeq[r.Seq] = append(perSeq[r.Seq], l)
			}
		}
	}
	var spreads []float64
	for _, l := range perSeq {
		if len(l) >= 2 {
			spreads = append(spreads, pct(l, 95)-pct(l, 5))
		}
	}
	secs := window.Seconds()
	ingestRate := float64(p2pB.BytesPushed-p2pA.BytesPushed) / secs
	serverRate := float64(p2pB.Streams[0].ServerMediaBytes-p2pA.Streams[0].ServerMediaBytes) / secs
	real := map[string]any{
		"peers": n, "windowSeconds": secs, "ingestBytesPerSec": ingestRate,
		"peerCPUp50": pct(cpus, 50), "peerCPUp95": pct(cpus, 95), "peerRSSMiBp50": pct(rss, 50), "peerRSSMiBmax": pct(rss, 100),
		"startupP50s": pct(startups, 50), "startupP95s": pct(startups, 95),
		"latencyP50s": pct(lats, 50), "latencyP95s": pct(lats, 95), "lagSpreadS": pct(spreads, 50),
		"continuity": onTime / max(due, 1), "offload": fromPeers / max(fromPeers+fromServer, 1),
		"serverEgressBytesPerSec": serverRate, "serverCopies": serverRate / ingestRate,
		"originCPU": cpuShare(originA, originB), "pluginCPU": cpuShare(pluginA, pluginB),
		"originRSSMiB": float64(originB.rss) / (1 << 20), "pluginRSSMiB": float64(pluginB.rss) / (1 << 20),
	}
	streams := o.streams(t)
	var shares []float64
	for _, s := range streams {
		if s.Path == "live/bench" {
			shares = s.LayerShares
		}
	}

	// Client/server baseline: the peers leave, N RTSP readers pull the
	// same stream from the origin.
	for _, p := range peers {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range peers {
		_ = p.wait(t, 10*time.Second)
	}
	var packets atomic.Int64
	for range n {
		c := rtspReader(t, o.rtspURL("bench"), &packets)
		defer c.Close()
	}
	time.Sleep(3 * time.Second)
	bytesOut := func() uint64 {
		for _, s := range o.streams(t) {
			if s.Path == "live/bench" {
				return s.BytesOut
			}
		}
		return 0
	}
	csA, csOutA := sampleProc(t, o.cmd.Process.Pid), bytesOut()
	time.Sleep(15 * time.Second)
	csB, csOutB := sampleProc(t, o.cmd.Process.Pid), bytesOut()
	csRate := float64(csOutB-csOutA) / 15
	real["csEgressBytesPerSec"] = csRate
	real["csOriginCPU"] = cpuShare(csA, csB)

	// The emulation of the same scenario: same N, upload classes, server
	// cap, stream rate and layer shares; loopback delays.
	sc := swarm.Scenario{Seed: 1, Peers: n, Duration: 60 * time.Second, StreamRate: ingestRate, ServerUpload: 5000 * 1000 / 8 / ingestRate,
		Uploads:     []swarm.UploadClass{{Share: 0.2, Factor: 3}, {Share: 0.5, Factor: 1.5}, {Share: 0.3, Factor: 0.5}},
		LayerShares: shares, DownloadFactor: 50, Delay: func(a, b wire.PeerID) time.Duration { return 100 * time.Microsecond }}
	var emus []runSummary
	for _, seed := range prof.Seeds {
		sc.Seed = seed
		emus = append(emus, summarize("emulation of the real run", sc, swarm.Run(sc), 0))
	}
	emu := medianRun(emus)
	real["emulationContinuity"], real["emulationOffload"] = emu.Continuity, emu.Offload

	var md strings.Builder
	fmt.Fprintf(&md, "# Real processes on loopback (%s profile)\n\n", prof.Name)
	fmt.Fprintf(&md, "ffmpeg → RTMP → coop-origin → coop-plugin (go-plugin) → %d coop-peer processes; 640x360 x264 + AAC at %.0f kbit/s "+
		"(layer shares %s), peer upload caps 20%% 3x / 50%% 1.5x / 30%% 0.5x, server partner capped at 5 Mbit/s; %0.f s window after a 15 s warm-up.\n\n",
		n, ingestRate*8/1000, fmtShares(shares), secs)
	fmt.Fprintf(&md, "| metric | CoopStreaming | client/server (%d RTSP readers) |\n|---|---|---|\n", n)
	fmt.Fprintf(&md, "| server egress | %.0f kbit/s (%.2f copies of the stream) | %.0f kbit/s (%.2f copies) |\n",
		serverRate*8/1000, serverRate/ingestRate, csRate*8/1000, csRate/ingestRate)
	fmt.Fprintf(&md, "| origin CPU | %.1f%% (+ plugin %.1f%%) | %.1f%% |\n", 100*real["originCPU"].(float64), 100*real["pluginCPU"].(float64), 100*real["csOriginCPU"].(float64))
	fmt.Fprintf(&md, "| base continuity | %.3f | (TCP: lossless) |\n", real["continuity"])
	fmt.Fprintf(&md, "| offload | %.3f | 0 |\n", real["offload"])
	fmt.Fprintf(&md, "| startup p50 / p95 | %.1f s / %.1f s | |\n", pct(startups, 50), pct(startups, 95))
	fmt.Fprintf(&md, "| ingest → playout latency p50 / p95 | %.1f s / %.1f s | |\n", pct(lats, 50), pct(lats, 95))
	fmt.Fprintf(&md, "| lag spread (p95 − p5 across peers, median over segments) | %.2f s | |\n", pct(spreads, 50))
	fmt.Fprintf(&md, "| per peer process CPU p50 / p95 | %.2f%% / %.2f%% of a core | |\n", 100*pct(cpus, 50), 100*pct(cpus, 95))
	fmt.Fprintf(&md, "| per peer process RSS p50 / max | %.1f / %.1f MiB | |\n", pct(rss, 50), pct(rss, 100))
	fmt.Fprintf(&md, "\nEmulation of the same scenario (same engine, in-memory network; median of seeds %v): base continuity %.3f, offload %.3f "+
		"(real: %.3f, %.3f).\n", prof.Seeds, emu.Continuity, emu.Offload, real["continuity"], real["offload"])
	require.NoError(t, os.WriteFile(filepath.Join(dir, "real.md"), []byte(md.String()), 0o644))
	js, err := json.MarshalIndent(real, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "real.json"), js, 0o644))
	t.Logf("\n%s", md.String())
}

func fmtShares(s []float64) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprintf("%.2f", v)
	}
	return strings.Join(parts, "/")
}
