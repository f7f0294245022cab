package integration

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func (o *originProc) hlsURL(key string) string {
	return "http://" + o.hls + "/live/" + key + "/index.m3u8"
}

// probeHLS lists the codec names ffprobe finds in an HLS playlist, sorted
// and once each (ffprobe lists HLS streams again under their program).
func probeHLS(t *testing.T, url string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error",
		"-show_entries", "stream=codec_name", "-of", "csv=p=0", url).CombinedOutput()
	require.NoError(t, err, string(out))
	names := strings.Fields(string(out))
	slices.Sort(names)
	return slices.Compact(names)
}

// httpGet returns the status and body of url (body bounded at 1 MiB).
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// TestHLSPlaysWithZeroDecodeErrors publishes with ffmpeg (H.264 over RTMP;
// H.265 over RTSP, since ffmpeg 5.1 cannot push HEVC over RTMP), reads the
// origin's playlist with ffprobe and decodes 10 s of it with ffmpeg, which
// plays LL-HLS as plain HLS (it ignores the part tags): zero errors.
func TestHLSPlaysWithZeroDecodeErrors(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg", "ffprobe")
	cases := []struct {
		name    string
		env     []string
		rtsp    bool
		video   []string
		want    []string
		partTag bool
	}{
		{"H.264 and AAC over RTMP, LL-HLS", nil, false, []string{"-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "30"}, []string{"aac", "h264"}, true},
		{"H.265 and AAC over RTSP, LL-HLS", nil, true, []string{"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-g", "30"}, []string{"aac", "hevc"}, true},
		{"H.264 and AAC, plain MPEG-TS HLS", []string{"COOP_HLS_VARIANT=mpegts", "COOP_HLS_SEGMENTCOUNT=3"}, false, []string{"-c:v", "libx264", "-preset", "ultrafast", "-g", "30"}, []string{"aac", "h264"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			o := startOrigin(t, c.env...)
			args := []string{"-hide_banner", "-nostats", "-loglevel", "warning", "-re",
				"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
				"-pix_fmt", "yuv420p"}
			args = append(args, c.video...)
			args = append(args, "-c:a", "aac", "-t", "45")
			if c.rtsp {
				args = append(args, "-f", "rtsp", "-rtsp_transport", "tcp", o.rtspURL("hls"))
			} else {
				args = append(args, "-f", "flv", o.rtmpURL("hls"))
			}
			startProcess(t, nil, "ffmpeg", args...)
			o.waitPublishing(t, "live/hls")

			status, body := httpGet(t, o.hlsURL("hls"))
			require.Equal(t, http.StatusOK, status, body)
			require.Contains(t, body, "#EXTM3U")
			if c.partTag {
				media := ""
				for _, line := range strings.Split(body, "\n") {
					if strings.HasSuffix(line, ".m3u8") {
						media = line
						break
					}
				}
				require.NotEmpty(t, media, "multivariant playlist names a media playlist: %s", body)
				status, mbody := httpGet(t, "http://"+o.hls+"/live/hls/"+media)
				require.Equal(t, http.StatusOK, status)
				require.Contains(t, mbody, "#EXT-X-PART:", "LL-HLS parts")
				require.Contains(t, mbody, "#EXT-X-PART-INF:PART-TARGET=0.2", "~200 ms parts")
			}
			require.Equal(t, c.want, probeHLS(t, o.hlsURL("hls")))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			requireCleanPlay(t, playWith(ctx, o.hlsURL("hls"), 10*time.Second, nil), 250)
		})
	}
}

// TestHLSNeedsTheReadCredentials: with read.user set, HLS (playlist and
// player page) answers 401 without credentials and plays with them.
func TestHLSNeedsTheReadCredentials(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg", "ffprobe")
	o := startOrigin(t, "COOP_READ_USER=viewer", "COOP_READ_PASS=secret")
	publishRTMP(t, o.rtmpURL("private"), 30*time.Second, "320x240", "-preset", "ultrafast", "-g", "30")
	o.waitPublishing(t, "live/private")
	for _, u := range []string{o.hlsURL("private"), "http://" + o.hls + "/live/private"} {
		status, _ := httpGet(t, u)
		require.Equal(t, http.StatusUnauthorized, status, u)
	}
	status, _ := httpGet(t, "http://viewer:wrong@"+o.hls+"/live/private/index.m3u8")
	require.Equal(t, http.StatusUnauthorized, status, "wrong password")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", o.hlsURL("private")).CombinedOutput()
	require.Error(t, err, "ffprobe without credentials")
	require.Contains(t, string(out), "401")
	require.Equal(t, []string{"aac", "h264"}, probeHLS(t, "http://viewer:secret@"+o.hls+"/live/private/index.m3u8"))
}

// mediaPlaylistPrefix returns the muxer's file prefix from the LL-HLS video
// playlist (it changes when a new muxer replaces the old one).
func mediaPlaylistPrefix(t *testing.T, o *originProc, key string) string {
	t.Helper()
	status, body := httpGet(t, "http://"+o.hls+"/live/"+key+"/video1_stream.m3u8")
	require.Equal(t, http.StatusOK, status, body)
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, `#EXT-X-MAP:URI="`); ok {
			if i := strings.Index(rest, "_"); i > 0 {
				return rest[:i]
			}
		}
	}
	t.Fatalf("no init section in %s", body)
	return ""
}

// TestHLSContinuesAcrossAPublisherReconnect: a publisher that drops and
// comes back within the grace period with the same codecs continues the
// same playlist (same muxer, the timeline goes on), and an ffmpeg reader
// that plays across the gap decodes without errors.
func TestHLSContinuesAcrossAPublisherReconnect(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	o := startOrigin(t, "COOP_PUBLISH_GRACEPERIOD=15s")
	first := publishRTMP(t, o.rtmpURL("again"), 8*time.Second, "320x240", "-preset", "ultrafast", "-g", "30")
	o.waitPublishing(t, "live/again")
	prefix := mediaPlaylistPrefix(t, o, "again")

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	res := make(chan playResult, 1)
	go func() { res <- playWith(ctx, o.hlsURL("again"), 14*time.Second, nil) }()

	require.NoError(t, first.wait(t, 30*time.Second))
	publishRTMP(t, o.rtmpURL("again"), 30*time.Second, "320x240", "-preset", "ultrafast", "-g", "30")
	waitFor(t, 15*time.Second, "the publisher back", func() bool {
		for _, s := range o.streams(t) {
			if s.Path == "live/again" && s.Publishing && s.Resumes == 1 {
				return true
			}
		}
		return false
	})
	require.Equal(t, prefix, mediaPlaylistPrefix(t, o, "again"), "the same muxer goes on")
	r := <-res
	requireCleanPlay(t, r, 250)
}

// TestHLSHostileConnectionsAreCappedAndTimedOut: raw sockets that fill the
// HLS connection cap with half-sent requests (slowloris) are refused above
// the cap and closed after the timeout; meanwhile RTSP is untouched and,
// once they are gone, HLS serves again.
func TestHLSHostileConnectionsAreCappedAndTimedOut(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg", "ffprobe")
	o := startOrigin(t, "COOP_HLS_MAXCONNECTIONS=16", "COOP_TIMEOUT=3s")
	publishRTMP(t, o.rtmpURL("busy"), 40*time.Second, "320x240", "-preset", "ultrafast", "-g", "30")
	o.waitPublishing(t, "live/busy")

	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range 40 {
		c, err := net.DialTimeout("tcp", o.hls, 5*time.Second)
		require.NoError(t, err)
		_, _ = c.Write([]byte("GET /live/busy/index.m3u8 HTTP/1.1\r\nHost: x\r\nX-Slow: ")) // never finished
		conns = append(conns, c)
	}
	// Every hostile connection ends: refused at once above the cap, or
	// closed by the header timeout.
	start := time.Now()
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "the origin closed the connection (EOF or reset), not our read deadline: %v", err)
	}
	t.Logf("all 40 hostile connections closed after %v", time.Since(start).Round(time.Millisecond))
	require.Contains(t, o.metrics(t), `coop_origin_rejected_total{protocol="hls",reason="conn_limit"}`)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	requireCleanPlay(t, play(ctx, o.rtspURL("busy"), "tcp", 3*time.Second), 60)
	require.Equal(t, []string{"aac", "h264"}, probeHLS(t, o.hlsURL("busy")))
}
