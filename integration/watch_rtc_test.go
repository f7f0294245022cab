package integration

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startBrowserFlags is startBrowser with extra Chromium flags (the
// WebRTC tests need raw host candidates: docs/webrtc.md, "ICE and NAT").
// It launches its own Chromium and attaches to its first page the same way.
func startBrowserFlags(t *testing.T, flags ...string) *browser {
	t.Helper()
	b, _ := startBrowserProc(t, flags...)
	return b
}

// startBrowserProc is startBrowserFlags that also returns the Chromium
// process (to kill a tab).
func startBrowserProc(t *testing.T, flags ...string) (*browser, *proc) {
	t.Helper()
	bin := chromiumBinary(t)
	takeBrowserLane(t)
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--mute-audio",
		"--autoplay-policy=no-user-gesture-required", "--no-first-run", "--no-default-browser-check",
		"--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
		"--user-data-dir=" + t.TempDir(), "--window-size=1280,800"}, flags...)
	p := startProcess(t, nil, bin, append(args, "about:blank")...)
	var wsURL string
	waitFor(t, 30*time.Second, "chromium DevTools endpoint", func() bool {
		if m := devtoolsRe.FindStringSubmatch(p.out.String()); m != nil {
			wsURL = m[1]
			return true
		}
		return false
	})
	u, err := url.Parse(wsURL)
	require.NoError(t, err)
	var pageWS string
	waitFor(t, 15*time.Second, "chromium page target", func() bool {
		var targets []struct {
			Type                 string `json:"type"`
			WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
		}
		if tryGetJSON("http://"+u.Host+"/json/list", &targets) != nil {
			return false
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WebSocketDebuggerURL != "" {
				pageWS = tg.WebSocketDebuggerURL
				return true
			}
		}
		return false
	})
	conn, err := dialWS(pageWS)
	require.NoError(t, err, "CDP websocket")
	t.Cleanup(func() { conn.Close() })
	return &browser{t: t, conn: conn}, p
}

// TestThePluginServesTheWatchPage: the real plugin's web port serves
// /watch/live/KEY, watch.js and the embedded peer.wasm (gzip), and a tab
// opened on it plays through the plugin's own signalling (same origin,
// no proxy). The plugin embeds what `make wasm` built before its go build
// (make test does it first); a missing or stale embed (not the wasm this
// source builds) skips the test outside CI.
func TestThePluginServesTheWatchPage(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	chromiumBinary(t)
	takeBrowserLane(t)
	fresh, err := os.ReadFile(filepath.Join(builtWasm(t), "peer.wasm"))
	require.NoError(t, err)
	clip := encodedClip(t, "320x240", 60, "-preset", "ultrafast", "-b:v", "600k", "-maxrate", "600k",
		"-bufsize", "600k", "-bf", "3", "-g", "30")
	o, _, signalURL := startRTCOrigin(t)
	web := strings.TrimSuffix(strings.TrimPrefix(signalURL, "ws://"), "/rtc/signal")

	req, err := http.NewRequest(http.MethodGet, "http://"+web+"/watch/_/peer.wasm", nil)
	require.NoError(t, err)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := http.DefaultTransport.RoundTrip(req) // no transparent gunzip
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	skip := func(why string) {
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		skip("the plugin was built without the browser peer: run make wasm before the tests (make test does)")
	}
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "gzip", resp.Header.Get("Content-Encoding"))
	require.Equal(t, "application/wasm", resp.Header.Get("Content-Type"))
	zr, err := gzip.NewReader(bytes.NewReader(body))
	require.NoError(t, err)
	served, err := io.ReadAll(zr)
	require.NoError(t, err)
	if !bytes.Equal(served, fresh) {
		skip("the plugin embeds a stale peer.wasm (not what this source builds): run make wasm before the tests")
	}
	t.Logf("the plugin serves peer.wasm: %d bytes gzip, %d raw", len(body), len(served))

	publishClipRTMP(t, clip, o.rtmpURL("web"))
	o.waitPublishing(t, "live/web")
	b := startBrowserFlags(t, "--disable-features=WebRtcHideLocalIpsWithMdns")
	b.navigate("http://" + web + "/watch/live/web")
	waitFor(t, 90*time.Second, "the tab's video playing", func() bool {
		s, err := b.tabStats()
		return err == nil && s.CurrentTime > 0.5 && s.Frames > 0
	})
	const window = 8 * time.Second
	first, last, err := observeWindows(t, "tab on the plugin's page", window, b.tabStats, func(f, l tabStats) error {
		return windowPlays(f, l, window)
	})
	t.Logf("tab on the plugin's page: first %+v, after %v %+v", first, window, last)
	require.NoError(t, err, "the tab plays: currentTime advances, frames grow, no stall over 1 s")
	require.True(t, last.ServerConnected)
}
