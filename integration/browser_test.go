package integration

import (
	"path/filepath"
	"testing"
	"time"
)

// TestBrowserPlaysTheOriginsPlayerPage opens the origin's player page
// (hls.js embedded in the binary) in a real headless Chromium and reads from
// the page itself that the video plays: video.currentTime advances and
// getVideoPlaybackQuality().totalVideoFrames grows over 5 s.
func TestBrowserPlaysTheOriginsPlayerPage(t *testing.T) {
	requireTool(t, "ffmpeg")
	chromiumBinary(t)
	o := startOrigin(t)
	publishRTMP(t, o.rtmpURL("web"), 60*time.Second, "320x240", "-preset", "ultrafast", "-g", "30")
	o.waitPublishing(t, "live/web")

	b := startBrowser(t)
	b.navigate("http://" + o.hls + "/live/web")
	b.requireVideoPlays(t, 40*time.Second, 5*time.Second)
	b.screenshot(filepath.Join(artifactDir(t), "player.png"))
}
