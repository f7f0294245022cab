package integration

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// whole tells whether the last n segments played had every layer.
func (st peerStats) whole(n int) bool {
	if st.MaxLayers == 0 || st.Layers != st.MaxLayers || len(st.RecentPlays) < n {
		return false
	}
	for _, p := range st.RecentPlays[len(st.RecentPlays)-n:] {
		if p.Layers != st.MaxLayers {
			return false
		}
	}
	return true
}

// TestEveryStreamShapePlaysThroughCoopPeers publishes each stream shape a
// publisher sends (issue 11) to the origin, lets two coop-peers join
// through the real plugin, and reads 8 s of media from one peer's
// /stream.ts with ffprobe: every published frame of that span must be
// there (≥ 99% of rate × span, timestamps contiguous), decoded without
// errors, and /stats must tell the truth (playing; a single-layer stream
// as 1/1).
func TestEveryStreamShapePlaysThroughCoopPeers(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg", "ffprobe")
	const audioRate = 44100.0 / 1024 // AAC frames per second
	cases := []struct {
		name string
		// publish starts the publisher on o (key "shape").
		publish func(t *testing.T, o *originProc)
		kind    string  // "v" or "a": the stream whose frames are counted
		rate    float64 // its frames per second
		// layers is the layer count /stats must show (0: not checked).
		layers int
	}{
		{"audio only (AAC over RTMP)", func(t *testing.T, o *originProc) {
			startProcess(t, nil, "ffmpeg", "-hide_banner", "-nostats", "-loglevel", "warning", "-re",
				"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-c:a", "aac", "-t", "60", "-f", "flv", o.rtmpURL("shape"))
		}, "a", audioRate, 1},
		{"H.265 with x265's default GOP (keyint 250) over RTSP", func(t *testing.T, o *originProc) {
			args := []string{"-hide_banner", "-nostats", "-loglevel", "warning", "-re",
				"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine",
				"-pix_fmt", "yuv420p", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
				"-c:a", "aac", "-t", "75", "-f", "rtsp", "-rtsp_transport", "tcp", o.rtspURL("shape")}
			startProcess(t, nil, "ffmpeg", args...)
		}, "v", 30, 0},
		{"H.264 -bf 3 over RTMP", func(t *testing.T, o *originProc) {
			publishRTMP(t, o.rtmpURL("shape"), 60*time.Second, "320x240", "-preset", "ultrafast", "-bf", "3", "-g", "60")
		}, "v", 30, 3},
		{"H.264 -tune zerolatency (one layer) over RTMP", func(t *testing.T, o *originProc) {
			publishRTMP(t, o.rtmpURL("shape"), 60*time.Second, "320x240", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60")
		}, "v", 30, 1},
		{"1080p H.264 at 6 Mbit/s over RTMP", func(t *testing.T, o *originProc) {
			clip := encodedClip(t, "1920x1080", 40, "-preset", "ultrafast", "-bf", "2", "-g", "60",
				"-b:v", "6M", "-maxrate", "6M", "-bufsize", "3M")
			publishClipRTMP(t, clip, o.rtmpURL("shape"))
		}, "v", 30, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, peerAddr := startP2POrigin(t)
			c.publish(t, o)
			o.waitPublishing(t, "live/shape")
			peers := []*peerProc{startPeer(t, peerAddr, "live/shape"), startPeer(t, peerAddr, "live/shape")}
			// x265's default GOP is 250 frames (8.3 s): a peer plays from
			// the next random-access segment, so allow a few GOPs.
			waitFor(t, 60*time.Second, "both peers playing", func() bool {
				for _, p := range peers {
					if !p.playing(4) {
						return false
					}
				}
				return true
			})
			// A newcomer's first seconds can lack enhancement layers while
			// QoS adds them and the swarm settles (a known limit of issue
			// 11); the frames are counted once it has played 4 s whole.
			waitFor(t, 60*time.Second, "the first peer playing 4 s with every layer", func() bool {
				return peers[0].stats(t).whole(8)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			// -analyzeduration 0.5 s, as README advises for /stream.ts.
			ts, errs, err := mediaTimes(ctx, peers[0].url(), c.kind, 8*time.Second, "-analyzeduration", "500000")
			require.NoError(t, err, "ffprobe on the peer's /stream.ts: %v", errs)
			require.Empty(t, errs, "decode errors on the peer's /stream.ts")
			require.GreaterOrEqual(t, len(ts), 2, "frames from the peer")
			span := ts[len(ts)-1] - ts[0]
			require.GreaterOrEqual(t, span, 5.0, "media read from the peer (s)")
			want := span*c.rate + 1
			var gap float64
			for i := 1; i < len(ts); i++ {
				gap = math.Max(gap, ts[i]-ts[i-1])
			}
			t.Logf("%d frames over %.2f s of media (%.4f of the published rate), largest gap %.0f ms",
				len(ts), span, float64(len(ts))/want, 1000*gap)
			require.GreaterOrEqual(t, float64(len(ts)), 0.99*want, "every published frame of the span")
			require.Less(t, gap, 3/c.rate, "no frame missing in the span")

			st := peers[0].stats(t)
			require.Equal(t, "playing", st.State)
			if c.layers > 0 {
				require.Equal(t, c.layers, st.MaxLayers, "the stream's layers as /stats shows them")
			}
			require.LessOrEqual(t, st.Layers, st.MaxLayers)
		})
	}
}
