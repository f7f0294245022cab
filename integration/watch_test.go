package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/webassets"
)

// The browser peer (peer/wasm) in a real headless Chromium: the wasm
// engine joins the plugin's swarm, converts what it plays to fMP4 and the
// page plays it through MediaSource.

var (
	wasmOnce sync.Once
	wasmDir  string
	wasmErr  error
)

// builtWasm builds peer/wasm for the browser once per test process (the
// binaries TestMain builds may predate `make wasm`) and returns the
// directory holding peer.wasm and the toolchain's wasm_exec.js (under
// binDir, removed with it).
func builtWasm(t *testing.T) string {
	t.Helper()
	wasmOnce.Do(func() {
		dir := filepath.Join(binDir, "wasm")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			wasmErr = err
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, "peer.wasm"), module+"/peer/wasm")
		cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
		if out, err := cmd.CombinedOutput(); err != nil {
			wasmErr = &buildError{err: err, out: string(out)}
			return
		}
		root, err := exec.Command("go", "env", "GOROOT").Output()
		if err != nil {
			wasmErr = err
			return
		}
		js, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(root)), "lib", "wasm", "wasm_exec.js"))
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "wasm_exec.js"), js, 0o644)
		}
		wasmDir, wasmErr = dir, err
	})
	require.NoError(t, wasmErr, "GOOS=js GOARCH=wasm go build ./peer/wasm")
	return wasmDir
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// watchServer serves the watch page (webassets.Watch, with the wasm built
// by this test) and, as the test hook ?bridge=, a WebSocket carrying the
// byte stream of a TCP connection to the plugin's peer listener: the tab
// speaks /coop/2 with the real server partner, over a WebSocket instead
// of a WebRTC data channel (the same framing, docs/webrtc.md).
//
// signalURL, when set, is the plugin's signalling endpoint, which the
// server proxies at /rtc/signal: the page then finds it on its own origin,
// as when the plugin's web port serves it.
func watchServer(t *testing.T, peerAddr string, signalURL ...string) *httptest.Server {
	t.Helper()
	dir := builtWasm(t)
	mux := http.NewServeMux()
	if len(signalURL) > 0 {
		u, err := url.Parse(strings.Replace(signalURL[0], "ws://", "http://", 1))
		require.NoError(t, err)
		mux.Handle("GET /rtc/signal", httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: u.Host}))
	}
	mux.HandleFunc("GET /watch/_/peer.wasm", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/wasm")
		http.ServeFile(w, r, filepath.Join(dir, "peer.wasm"))
	})
	mux.HandleFunc("GET /watch/_/wasm_exec.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(dir, "wasm_exec.js"))
	})
	mux.Handle("/watch/", webassets.Watch())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	mux.HandleFunc("GET /bridge", func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ws.SetReadLimit(64 << 10)
		tcp, err := net.DialTimeout("tcp", peerAddr, 5*time.Second)
		if err != nil {
			return
		}
		defer tcp.Close()
		wg.Add(1)
		go func() { // plugin → tab, in pieces of at most 16 KiB
			defer wg.Done()
			defer ws.CloseNow()
			buf := make([]byte, 16<<10)
			for {
				n, err := tcp.Read(buf)
				if n > 0 && ws.Write(ctx, websocket.MessageBinary, buf[:n]) != nil {
					return
				}
				if err != nil {
					return
				}
			}
		}()
		for { // tab → plugin
			_, p, err := ws.Read(ctx)
			if err != nil {
				return
			}
			if _, err := tcp.Write(p); err != nil {
				return
			}
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		cancel()
		srv.CloseClientConnections()
		srv.Close()
		wg.Wait()
	})
	return srv
}

// tabStats is what the watch page publishes in window.coopStats.
type tabStats struct {
	ServerConnected bool    `json:"serverConnected"`
	Partners        int     `json:"partners"`
	StartupDelayMs  int64   `json:"startupDelayMs"`
	Layers          int     `json:"layers"`
	LayersPlayed    int     `json:"layersPlayed"`
	Fragments       uint64  `json:"fragments"`
	Missed          uint64  `json:"missed"`
	ConvertErrors   uint64  `json:"convertErrors"`
	Continuity      float64 `json:"continuity"`
	FromServer      uint64  `json:"usefulFromServer"`
	FromPeers       uint64  `json:"usefulFromPeers"`
	CurrentTime     float64 `json:"currentTime"`
	Frames          int     `json:"frames"`
	Stalls          int     `json:"stalls"`
	MaxStallMs      int     `json:"maxStallMs"`
	Jumps           int     `json:"jumps"`
	MIME            string  `json:"mime"`
	// StallLog holds the page's newest stalls as [start, duration] in
	// performance.now() milliseconds, NowMs the page clock at the snapshot.
	StallLog [][2]float64 `json:"stallLog"`
	NowMs    float64      `json:"nowMs"`
}

// maxStallSince is the longest stall of last that was still running
// after first's snapshot: the "no stall over 1 s" figure of an
// observation window, which a stall while the tab settled into the swarm
// before the window does not count in (MaxStallMs is the page's lifetime).
func maxStallSince(first, last tabStats) int {
	longest := 0.0
	for _, s := range last.StallLog {
		if s[0]+s[1] > first.NowMs {
			longest = max(longest, s[1])
		}
	}
	return int(longest)
}

// windowPlays is the check of a tab's observation window: video.currentTime
// advances by at least 0.7 of the window, decoded frames grow, and no
// stall in it lasts over 1 s.
func windowPlays(first, last tabStats, window time.Duration) error {
	if adv := last.CurrentTime - first.CurrentTime; adv <= window.Seconds()*0.7 {
		return fmt.Errorf("video.currentTime advanced %.2f s in %v", adv, window)
	}
	if last.Frames <= first.Frames {
		return fmt.Errorf("no decoded frames in %v", window)
	}
	if ms := maxStallSince(first, last); ms >= 1000 {
		return fmt.Errorf("a stall of %d ms (no stall over 1 s)", ms)
	}
	return nil
}

func (b *browser) tabStats() (tabStats, error) {
	var s tabStats
	err := b.eval(`window.coopStats || {}`, &s)
	return s, err
}

// TestBrowserPeerPlaysFMP4FromTheSwarm: ffmpeg publishes H.264 with
// B-frames (3 layers) and AAC to a real origin with the plugin; two
// headless Chromium tabs run the wasm peer, which joins the plugin's
// server partner (over the WebSocket bridge), verifies and plays the
// segments, converts them to fMP4 and plays them through MediaSource. One
// tab plays every layer, the other the base layer alone. Read from each
// page over DevTools: video.currentTime advances, decoded frames grow,
// no stall over 1 s, and the base-layer tab decodes fewer frames in the
// same time (a lower frame rate, not a stall).
func TestBrowserPeerPlaysFMP4FromTheSwarm(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	chromiumBinary(t)
	takeBrowserLane(t)
	builtWasm(t)
	o, peerAddr := startP2POrigin(t)
	publishRTMP(t, o.rtmpURL("watch"), 120*time.Second, "320x240", "-preset", "ultrafast", "-b:v", "500k",
		"-bf", "3", "-g", "30")
	o.waitPublishing(t, "live/watch")
	srv := watchServer(t, peerAddr)
	bridge := "ws" + strings.TrimPrefix(srv.URL, "http") + "/bridge"

	tabs := map[string]*browser{}
	for name, q := range map[string]string{"all": "", "base": "&layers=1"} {
		b := startBrowser(t)
		b.navigate(srv.URL + "/watch/live/watch?bridge=" + bridge + q)
		tabs[name] = b
	}
	const window = 12 * time.Second
	type result struct{ first, last tabStats }
	results := map[string]result{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, b := range tabs {
		wg.Go(func() {
			var first tabStats
			ok := pollUntil(90*time.Second, func() bool {
				var err error
				first, err = b.tabStats()
				return err == nil && first.CurrentTime > 0.5 && first.Frames > 0
			})
			if !ok {
				t.Errorf("tab %s: video never started: %+v", name, first)
				return
			}
			first, last, err := observeWindows(t, "tab "+name, window, b.tabStats, func(f, l tabStats) error {
				return windowPlays(f, l, window)
			})
			if err != nil {
				t.Errorf("tab %s: %v (first %+v, last %+v)", name, err, first, last)
				return
			}
			mu.Lock()
			results[name] = result{first, last}
			mu.Unlock()
		})
	}
	wg.Wait()
	require.Len(t, results, 2)
	for name, r := range results {
		t.Logf("tab %s: first %+v", name, r.first)
		t.Logf("tab %s: after %v %+v", name, window, r.last)
		require.True(t, r.last.ServerConnected, name)
		require.Greater(t, r.last.FromServer, uint64(0), "%s: media from the server partner", name)
		require.Zero(t, r.last.ConvertErrors, name)
		require.Contains(t, r.last.MIME, "avc1.", name)
		require.Contains(t, r.last.MIME, "mp4a.40.", name)
		require.Greater(t, r.last.Fragments, r.first.Fragments, name)
	}
	all, base := results["all"], results["base"]
	require.Equal(t, 1, base.last.LayersPlayed, "the base tab plays the base layer alone")
	require.Greater(t, all.last.LayersPlayed, 1, "the full tab plays enhancement layers")
	rate := func(r result) float64 {
		return float64(r.last.Frames-r.first.Frames) / (r.last.CurrentTime - r.first.CurrentTime)
	}
	t.Logf("decoded frames per second of media: every layer %.1f, base layer %.1f", rate(all), rate(base))
	require.Greater(t, rate(all), 20.0, "every layer: ~30 fps")
	require.Greater(t, rate(base), 5.0, "the base layer alone still plays")
	require.Less(t, rate(base), rate(all)*0.8, "the base layer alone plays at a lower frame rate")
	saveScreenshot(t, tabs["all"], "watch.png")
}

// pollUntil polls cond every 500 ms until it holds or d passes.
func pollUntil(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// TestBrowserPeerFollowsAStreamRestart: the publisher stops and, past the
// grace period, publishes again — a new stream instance (epoch) whose
// timestamps start over. The tab's peer follows the server into the new
// epoch, the page gets a new init segment, places the new media after
// what it buffered, and plays on.
func TestBrowserPeerFollowsAStreamRestart(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	chromiumBinary(t)
	takeBrowserLane(t)
	builtWasm(t)
	o, peerAddr := startP2POrigin(t, "COOP_PUBLISH_GRACEPERIOD=1s")
	first := publishRTMP(t, o.rtmpURL("again"), 16*time.Second, "320x240", "-preset", "ultrafast", "-b:v", "400k", "-g", "30")
	o.waitPublishing(t, "live/again")
	srv := watchServer(t, peerAddr)
	b := startBrowser(t)
	b.navigate(srv.URL + "/watch/live/again?bridge=ws" + strings.TrimPrefix(srv.URL, "http") + "/bridge")
	var before tabStats
	waitFor(t, 60*time.Second, "the tab playing the first instance", func() bool {
		var err error
		before, err = b.tabStats()
		return err == nil && before.CurrentTime > 2 && before.Frames > 0
	})
	require.NoError(t, first.wait(t, 60*time.Second))
	// The first instance is over once the tab has been handed its last
	// segment: its buffered media ends there.
	var oldEnd float64
	last := -1
	waitFor(t, 30*time.Second, "the first instance's last segment in the tab", func() bool {
		s, err := b.tabStats()
		if err != nil || len(o.p2p(t).Streams) != 0 {
			return false
		}
		done := int(s.Fragments) == last
		last = int(s.Fragments)
		return done && b.eval(`(function(){var b=document.getElementById("video").buffered;return b.length?b.end(b.length-1):0})()`, &oldEnd) == nil
	})
	publishRTMP(t, o.rtmpURL("again"), 60*time.Second, "320x240", "-preset", "ultrafast", "-b:v", "400k", "-g", "30")
	var inits struct {
		Inits int `json:"inits"`
	}
	waitFor(t, 60*time.Second, "a new init segment", func() bool {
		return b.eval(`window.coopStats || {}`, &inits) == nil && inits.Inits >= 2
	})
	// The new instance's media follows the old in the page: the playhead
	// passes the old end soon (without the offset it would wait until the
	// new instance's own timestamps, from zero, caught up with it).
	waitFor(t, 15*time.Second, "the playhead 3 s into the new instance", func() bool {
		s, err := b.tabStats()
		return err == nil && s.CurrentTime > oldEnd+3
	})
	after, err := b.tabStats()
	require.NoError(t, err)
	t.Logf("tab: before the restart %+v", before)
	t.Logf("tab: the first instance ended at media time %.2f s; after the restart %+v (inits %d)", oldEnd, after, inits.Inits)
	require.Zero(t, after.ConvertErrors)
}
