package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// mediaPlayResult is what a reader of some of the tracks saw.
type mediaPlayResult struct {
	playResult
	// outTime is the media time ffmpeg reached (audio or video).
	outTime time.Duration
}

// playMedia reads url over RTSP/TCP for d with ffmpeg, setting up only
// the tracks of mediaTypes ("video", "audio" or "" for all), and reports
// decoded video frames, the media time reached and every error line.
func playMedia(ctx context.Context, url, mediaTypes string, d time.Duration) mediaPlayResult {
	args := []string{"-hide_banner", "-nostats", "-v", "error"}
	if mediaTypes != "" {
		args = append(args, "-allowed_media_types", mediaTypes)
	}
	args = append(args, "-rtsp_transport", "tcp", "-i", url, "-t", strconv.Itoa(int(d.Seconds())),
		"-f", "null", "-", "-progress", "pipe:1")
	cmd := exec.CommandContext(ctx, "ffmpeg", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := mediaPlayResult{playResult: playResult{err: err}}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "frame="); ok {
			res.frames, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if v, ok := strings.CutPrefix(line, "out_time_us="); ok {
			if us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				res.outTime = time.Duration(us) * time.Microsecond
			}
		}
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.TrimSpace(line) != "" {
			res.errors = append(res.errors, line)
		}
	}
	return res
}

// readerCount is how many RTSP readers the origin lists.
func (o *originProc) readerCount(t *testing.T) int {
	t.Helper()
	resp, err := http.Get("http://" + o.httpAddr + "/v1/readers")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var body struct {
		Readers []json.RawMessage `json:"readers"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return -1
	}
	return len(body.Readers)
}

// publishRTSP pushes a small H.264 + AAC test pattern over RTSP/TCP for d.
func publishRTSP(t *testing.T, url string, d time.Duration) *proc {
	args := []string{"-hide_banner", "-nostats", "-loglevel", "warning", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "aac",
		"-t", strconv.Itoa(int(d.Seconds())), "-f", "rtsp", "-rtsp_transport", "tcp", url}
	return startProcess(t, nil, "ffmpeg", args...)
}

// Break 1 of issue 12: a reader that sets up only the video or only the
// audio track is a legitimate client. It plays its track; the publisher,
// the stream and a full reader are untouched (before the fix, the RTMP
// publisher was disconnected and an RTSP publisher's origin panicked).
func TestReadersOfSomeTracksPlayThemAndDisturbNobody(t *testing.T) {
	requireTool(t, "ffmpeg")
	cases := []struct {
		name    string
		publish func(t *testing.T, o *originProc) *proc
	}{
		{"RTMP publisher", func(t *testing.T, o *originProc) *proc {
			return publishRTMP(t, o.rtmpURL("part"), 40*time.Second, "320x240", "-preset", "ultrafast", "-g", "30")
		}},
		{"RTSP publisher", func(t *testing.T, o *originProc) *proc {
			return publishRTSP(t, o.rtspURL("part"), 40*time.Second)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := startOrigin(t)
			pub := c.publish(t, o)
			o.waitPublishing(t, "live/part")

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			full := make(chan mediaPlayResult, 1)
			go func() { full <- playMedia(ctx, o.rtspURL("part"), "", 14*time.Second) }()
			waitFor(t, 20*time.Second, "the full reader to play", func() bool { return o.readerCount(t) >= 1 })

			var wg sync.WaitGroup
			var video, audio mediaPlayResult
			wg.Add(2)
			go func() { defer wg.Done(); video = playMedia(ctx, o.rtspURL("part"), "video", 6*time.Second) }()
			go func() { defer wg.Done(); audio = playMedia(ctx, o.rtspURL("part"), "audio", 6*time.Second) }()
			wg.Wait()

			requireCleanPlay(t, video.playResult, 100)
			require.NoError(t, audio.err, "audio-only reader failed: %v", audio.errors)
			require.Empty(t, audio.errors, "audio-only reader decode errors")
			require.GreaterOrEqual(t, audio.outTime, 4*time.Second, "audio-only reader played its track")

			f := <-full
			requireCleanPlay(t, f.playResult, 300)
			select {
			case <-pub.done:
				t.Fatalf("the publisher was disconnected: %v\n%s", pub.err, tail(pub.out.String(), 2000))
			default:
			}
			select {
			case <-o.proc.done:
				t.Fatalf("the origin died: %v", o.proc.err)
			default:
			}
			require.True(t, o.waitPublishing(t, "live/part").Publishing)
			require.NotContains(t, o.out.String(), "panic")
		})
	}
}
