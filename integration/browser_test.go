package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// saveScreenshot keeps a screenshot as a test artefact and, with
// COOP_DOCS_SCREENSHOTS=1, also as the README's picture in docs/img.
func saveScreenshot(t *testing.T, b *browser, name string) {
	t.Helper()
	b.screenshot(filepath.Join(artifactDir(t), name))
	if os.Getenv("COOP_DOCS_SCREENSHOTS") == "1" {
		b.screenshot(filepath.Join("..", "docs", "img", name))
	}
}

// TestBrowserPlaysTheOriginsPlayerPage opens the origin's player page
// (hls.js embedded in the binary) in a real headless Chromium and reads from
// the page itself that the video plays: video.currentTime advances and
// getVideoPlaybackQuality().totalVideoFrames grows over 5 s.
func TestBrowserPlaysTheOriginsPlayerPage(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	chromiumBinary(t)
	takeBrowserLane(t)
	o := startOrigin(t)
	publishRTMP(t, o.rtmpURL("web"), 60*time.Second, "320x240", "-preset", "ultrafast", "-g", "30")
	o.waitPublishing(t, "live/web")

	b := startBrowser(t)
	// Through the API port's redirect to the HLS port.
	b.navigate("http://" + o.httpAddr + "/live/web")
	b.requireVideoPlays(t, 40*time.Second, 5*time.Second)
	var loc string
	require.NoError(t, b.eval("location.href", &loc))
	require.Equal(t, "http://"+o.hls+"/live/web", loc, "the player lives on the HLS port")
	saveScreenshot(t, b, "player.png")
}

// TestBrowserShowsTheStatusPageWithLivePlots opens the status page of an
// origin with the P2P plugin, three peers, an RTSP reader and an HLS
// reader, and reads from the page that it links the stream to its player
// and draws the live plots from /v1/history.
func TestBrowserShowsTheStatusPageWithLivePlots(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	chromiumBinary(t)
	takeBrowserLane(t)
	o, peerAddr := startP2POrigin(t)
	publishRTMP(t, o.rtmpURL("demo"), 90*time.Second, "320x240", "-preset", "ultrafast", "-b:v", "600k", "-bf", "3", "-g", "60")
	o.waitPublishing(t, "live/demo")
	for range 3 {
		startPeer(t, peerAddr, "live/demo")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go play(ctx, o.rtspURL("demo"), "tcp", 60*time.Second)
	go playWith(ctx, o.hlsURL("demo"), 60*time.Second, nil)
	waitFor(t, 40*time.Second, "3 peers in the swarm", func() bool {
		st := o.p2p(t)
		return len(st.Streams) == 1 && st.Streams[0].Peers >= 3
	})

	b := startBrowser(t)
	b.navigate("http://" + o.httpAddr + "/")
	type pageState struct {
		Charts  int    `json:"charts"`
		Lines   int    `json:"lines"`
		Player  string `json:"player"`
		Readers string `json:"readers"`
	}
	var st pageState
	// The plots need some seconds of history; wait on the page's state.
	waitFor(t, 60*time.Second, "the status page's plots with readers and peers", func() bool {
		err := b.eval(`(function(){var a=document.querySelector('a[href$="/live/demo"]');
var row=a?a.closest("tr"):null;
return {charts:document.querySelectorAll("#plots svg").length,lines:document.querySelectorAll("#plots svg path").length,
player:a?a.href:"",readers:row?row.children[8].textContent:""}})()`, &st)
		return err == nil && st.Charts >= 6 && st.Lines >= 5 && st.Readers == "1"
	})
	t.Logf("status page: %+v", st)
	require.Equal(t, "http://"+o.hls+"/live/demo", st.Player, "the stream links to its player")
	waitFor(t, 60*time.Second, "20 s of history for the picture", func() bool {
		var h struct {
			Streams map[string][]json.RawMessage `json:"streams"`
		}
		getJSON(t, "http://"+o.httpAddr+"/v1/history", &h)
		return len(h.Streams["live/demo"]) >= 20
	})
	time.Sleep(2500 * time.Millisecond) // let the page redraw (every 2 s) before the picture, not synchronisation
	saveScreenshot(t, b, "status.png")
}
