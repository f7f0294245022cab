package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The hostile-load harness (`make chaos`): a live origin with the real
// plugin, a publisher, canary coop-peers and a canary RTSP reader, and one
// attack after another against them. For each attack it reports the
// canaries' base continuity and decode errors, whether a process died or
// restarted, the peak RSS and fds of origin and plugin, and, for attacks
// that hold connections, how many the server closed and how fast. See
// chaos_attacks_test.go for the attacks. Results go to bench/results/chaos.*.

// chaosTimeout is the origin's `timeout` during the run: idle connections
// must be closed within 2x this.
const chaosTimeout = 3 * time.Second

// chaosEnv is what an attack may touch.
type chaosEnv struct {
	t        *testing.T
	o        *originProc
	peerAddr string
	stream   string // e.g. live/chaos
	canaries []*peerProc
}

// attackReport is one attack's extra figures (beyond the common ones).
type attackReport struct {
	// Conns held open by the attack, and how many the server closed
	// within 2x timeout; CloseP95 is the p95 time to close.
	Conns, ClosedIn2xTimeout int
	CloseMaxS                float64
	// Notes is anything the attack measured itself.
	Notes string
}

type attack struct {
	name string
	// run attacks until ctx ends and reports.
	run func(ctx context.Context, env *chaosEnv) attackReport
}

// chaosResult is one row of the report.
type chaosResult struct {
	Attack            string  `json:"attack"`
	CanaryContinuity  float64 `json:"canaryContinuity"` // min over canary peers
	CanaryPlaying     int     `json:"canaryPlaying"`
	RTSPFrames        int     `json:"rtspFrames"`
	RTSPDecodeErrors  int     `json:"rtspDecodeErrors"`
	OriginAlive       bool    `json:"originAlive"`
	PluginRestarts    uint64  `json:"pluginRestarts"`
	OriginPeakRSSMiB  float64 `json:"originPeakRssMiB"`
	PluginPeakRSSMiB  float64 `json:"pluginPeakRssMiB"`
	OriginPeakFDs     int     `json:"originPeakFds"`
	PluginPeakFDs     int     `json:"pluginPeakFds"`
	PluginPeakHeapMiB float64 `json:"pluginPeakHeapMiB"` // Go heap (RSS misses untouched allocations)
	Conns             int     `json:"conns,omitempty"`
	ClosedIn2xTimeout int     `json:"closedIn2xTimeout,omitempty"`
	CloseMaxS         float64 `json:"closeMaxS,omitempty"`
	Notes             string  `json:"notes,omitempty"`
}

func TestChaos(t *testing.T) {
	if os.Getenv("COOP_CHAOS") == "" {
		t.Skip("hostile-load harness: run with `make chaos` (COOP_CHAOS=1)")
	}
	requireTool(t, "ffmpeg", "ffprobe")
	gitHead() // before any result is written
	attacks := chaosAttacks()
	if only := os.Getenv("COOP_CHAOS_ONLY"); only != "" {
		var keep []attack
		for _, a := range attacks {
			if strings.Contains(a.name, only) {
				keep = append(keep, a)
			}
		}
		attacks = keep
	}
	window := 15 * time.Second
	var results []chaosResult
	for _, a := range attacks {
		// Each attack gets a fresh origin, plugin, publisher and canaries,
		// so one attack's damage does not spill into the next row.
		t.Run(strings.ReplaceAll(a.name, " ", "_"), func(t *testing.T) {
			env := startChaosEnv(t, window)
			t.Logf("chaos: %s", a.name)
			r := runAttack(t, env, a, window)
			results = append(results, r)
			t.Logf("chaos: %-36s continuity %.3f playing %d/3 rtsp frames %d errors %d origin alive %v plugin restarts %d RSS %.0f/%.0f MiB fds %d/%d %s",
				r.Attack, r.CanaryContinuity, r.CanaryPlaying, r.RTSPFrames, r.RTSPDecodeErrors, r.OriginAlive, r.PluginRestarts,
				r.OriginPeakRSSMiB, r.PluginPeakRSSMiB, r.OriginPeakFDs, r.PluginPeakFDs, r.Notes)
		})
	}
	writeChaosReport(t, results)
}

// startChaosEnv starts an origin with the real plugin, a publisher that
// outlives one attack, three canary coop-peers playing.
func startChaosEnv(t *testing.T, window time.Duration) *chaosEnv {
	o, peerAddr := startP2POrigin(t, "COOP_TIMEOUT="+chaosTimeout.String())
	publishRTMP(t, o.rtmpURL("chaos"), window+90*time.Second, "640x360", "-b:v", "800k", "-bf", "3", "-g", "60", "-preset", "ultrafast")
	o.waitPublishing(t, "live/chaos")
	env := &chaosEnv{t: t, o: o, peerAddr: peerAddr, stream: "live/chaos"}
	for range 3 {
		env.canaries = append(env.canaries, startPeer(t, peerAddr, env.stream))
	}
	for _, c := range env.canaries {
		waitFor(t, 40*time.Second, "canary playing", func() bool { return c.playing(10) })
	}
	return env
}

// runAttack runs one attack for window and measures around it: canary
// continuity over the attack and the playout delay after it (segments due
// then were fetched during the attack), an RTSP reader across the same
// span, process liveness and peaks sampled every 250 ms.
func runAttack(t *testing.T, env *chaosEnv, a attack, window time.Duration) chaosResult {
	o := env.o
	before := env.p2pOrNil()
	type counts struct{ due, onTime uint64 }
	snap := func() []counts {
		var cs []counts
		for _, c := range env.canaries {
			st, err := c.tryStats()
			if err != nil {
				cs = append(cs, counts{})
				continue
			}
			cs = append(cs, counts{st.Due, st.BaseOnTime})
		}
		return cs
	}
	start := snap()
	settle := 7 * time.Second // > playout delay
	span := window + settle

	ctx, cancel := context.WithTimeout(context.Background(), span+20*time.Second)
	defer cancel()
	var rtsp playResult
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rtsp = play(ctx, o.rtspURL("chaos"), "tcp", span)
	}()
	var peaks struct {
		sync.Mutex
		oRSS, pRSS, pHeap float64
		oFD, pFD          int
	}
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		pluginPID := 0
		if before != nil {
			pluginPID = before.PID
		}
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			rss, fds := procUsage(o.cmd.Process.Pid)
			prss, pfds := procUsage(pluginPID)
			text, _ := metricsText(env.o.httpAddr) // a failed read counts as no sample
			heap := metricValue(text, "coop_plugin_heap_bytes") / (1 << 20)
			peaks.Lock()
			peaks.oRSS, peaks.oFD = math.Max(peaks.oRSS, rss), max(peaks.oFD, fds)
			peaks.pRSS, peaks.pFD = math.Max(peaks.pRSS, prss), max(peaks.pFD, pfds)
			peaks.pHeap = math.Max(peaks.pHeap, heap)
			peaks.Unlock()
			select {
			case <-sampleCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	attackCtx, stopAttack := context.WithTimeout(context.Background(), window)
	rep := a.run(attackCtx, env)
	stopAttack()
	time.Sleep(settle) // measurement span, not synchronisation: segments due now were fetched during the attack
	stopSampling()
	wg.Wait()

	end := snap()
	res := chaosResult{Attack: a.name, CanaryContinuity: 1, RTSPFrames: rtsp.frames, RTSPDecodeErrors: len(rtsp.errors),
		OriginAlive: !processGone(o.cmd.Process.Pid), Conns: rep.Conns, ClosedIn2xTimeout: rep.ClosedIn2xTimeout,
		CloseMaxS: rep.CloseMaxS, Notes: rep.Notes}
	for i := range end {
		due := end[i].due - start[i].due
		if end[i].due < start[i].due || due == 0 { // restarted counters or nothing due: not playing
			res.CanaryContinuity = 0
			continue
		}
		res.CanaryPlaying++
		res.CanaryContinuity = math.Min(res.CanaryContinuity, float64(end[i].onTime-start[i].onTime)/float64(due))
	}
	if res.CanaryPlaying == 0 {
		res.CanaryContinuity = 0
	}
	if after := env.p2pOrNil(); after != nil && before != nil {
		res.PluginRestarts = after.Restarts - before.Restarts
	}
	peaks.Lock()
	res.OriginPeakRSSMiB, res.PluginPeakRSSMiB = peaks.oRSS, peaks.pRSS
	res.OriginPeakFDs, res.PluginPeakFDs = peaks.oFD, peaks.pFD
	res.PluginPeakHeapMiB = peaks.pHeap
	peaks.Unlock()
	if !env.publishing() {
		res.Notes = strings.TrimPrefix(res.Notes+"; STREAM ENDED", "; ")
	}
	if len(rtsp.errors) > 0 {
		t.Logf("chaos: %s: rtsp reader errors: %s", a.name, strings.Join(rtsp.errors[:min(5, len(rtsp.errors))], " | "))
	}
	return res
}

// publishing tells whether the attacked stream is still published.
func (env *chaosEnv) publishing() bool {
	var body struct {
		Streams []streamInfo `json:"streams"`
	}
	if err := tryGetJSON("http://"+env.o.httpAddr+"/v1/streams", &body); err != nil {
		return false
	}
	for _, s := range body.Streams {
		if s.Path == env.stream && s.Publishing {
			return true
		}
	}
	return false
}

func (env *chaosEnv) p2pOrNil() *p2pStatus {
	var st p2pStatus
	if err := tryGetJSON("http://"+env.o.httpAddr+"/v1/p2p", &st); err != nil {
		return nil
	}
	return &st
}

// procUsage returns a process's RSS in MiB and open fds (0, 0 when gone).
func procUsage(pid int) (float64, int) {
	if pid <= 0 {
		return 0, 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	var rss float64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				rss = kb / 1024
			}
		}
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return rss, len(ents)
}

func writeChaosReport(t *testing.T, results []chaosResult) {
	dir := filepath.Join("..", "bench", "results")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	b, err := json.MarshalIndent(map[string]any{
		"parameters": map[string]any{
			"stream": "640x360 x264 -bf 3 800 kbit/s + AAC over RTMP", "canaryPeers": 3, "canaryRTSPReaders": 1,
			"attackWindowS": 15, "settleS": 7, "timeoutS": chaosTimeout.Seconds(), "date": time.Now().UTC().Format(time.RFC3339), "commit": gitHead(),
		},
		"results": results,
	}, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "chaos.json"), b, 0o644))
	var md strings.Builder
	md.WriteString("# Hostile-load harness (`make chaos`)\n\n")
	md.WriteString("Each attack against a fresh origin + real plugin on loopback, RTMP publisher 640x360 x264 `-bf 3` 800 kbit/s + AAC, 3 canary coop-peers, 1 canary RTSP/TCP reader; `timeout` 3 s; each attack runs 15 s, measured over the attack + 7 s (the playout delay).\n\n")
	md.WriteString("RTSP frames are video frames decoded by the canary reader (and, in the notes, by the attacking readers: an audio-only reader decodes none). Plugin heap from `coop_plugin_heap_bytes`. Commit: " + gitHead() + "\n\n")
	md.WriteString("| attack | canary continuity (min) | canaries playing | RTSP frames | decode errors | origin alive | plugin restarts | peak RSS origin / plugin (MiB) | plugin peak Go heap (MiB) | peak fds origin / plugin | conns closed ≤ 2×timeout | slowest close (s) | notes |\n")
	md.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		closed := ""
		if r.Conns > 0 {
			closed = fmt.Sprintf("%d / %d", r.ClosedIn2xTimeout, r.Conns)
		}
		fmt.Fprintf(&md, "| %s | %.3f | %d/3 | %d | %d | %v | %d | %.0f / %.0f | %.0f | %d / %d | %s | %.1f | %s |\n",
			r.Attack, r.CanaryContinuity, r.CanaryPlaying, r.RTSPFrames, r.RTSPDecodeErrors, r.OriginAlive, r.PluginRestarts,
			r.OriginPeakRSSMiB, r.PluginPeakRSSMiB, r.PluginPeakHeapMiB, r.OriginPeakFDs, r.PluginPeakFDs, closed, r.CloseMaxS, r.Notes)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "chaos.md"), []byte(md.String()), 0o644))
	t.Logf("chaos report:\n%s", md.String())
}

// testHTTP is the client of the tests' API reads: a timeout generous for a
// loaded machine, so a hung server fails a read instead of hanging it.
var testHTTP = &http.Client{Timeout: 30 * time.Second}

// tryGetJSON decodes the JSON at url (a 200 answer), reporting failure
// instead of failing the test (getJSON is the failing form).
func tryGetJSON(url string, v any) error {
	resp, err := testHTTP.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// metricsText reads the origin's /metrics (originProc.metrics is the
// failing form).
func metricsText(httpAddr string) (string, error) {
	resp, err := testHTTP.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// measuredCommit is the commit under test, read before the run writes its
// results (which would make the tree dirty).
var measuredCommit = sync.OnceValue(gitDescribe)

func gitHead() string { return measuredCommit() }

// gitDescribe names the checkout's commit ("" outside a git checkout).
func gitDescribe() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
