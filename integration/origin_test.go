package integration

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// requireCleanPlay asserts that a reader decoded frames with zero errors.
func requireCleanPlay(t *testing.T, r playResult, minFrames int) {
	t.Helper()
	require.NoError(t, r.err, "ffmpeg reader failed: %v", r.errors)
	require.Empty(t, r.errors, "decode errors")
	require.GreaterOrEqual(t, r.frames, minFrames, "decoded video frames")
}

func TestRTMPPublishPlaysOverRTSPWithZeroDecodeErrors(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg", "ffprobe")
	cases := []struct {
		name       string
		size       string
		video      []string
		transport  string
		wantLayers int
	}{
		{"x264 with three B-frames gives three layers (TCP)", "640x360", []string{"-bf", "3", "-g", "60"}, "tcp", 3},
		{"zerolatency has no droppable frames and one layer (UDP)", "640x360", []string{"-tune", "zerolatency", "-g", "60"}, "udp", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			o := startOrigin(t)
			publishRTMP(t, o.rtmpURL("cam"), 25*time.Second, c.size, c.video...)
			o.waitPublishing(t, "live/cam")
			require.Equal(t, []string{"h264", "aac"}, probeCodecs(t, o.rtspURL("cam")))

			// A safety bound only: the reader stops after its -t of media.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			requireCleanPlay(t, play(ctx, o.rtspURL("cam"), c.transport, 10*time.Second), 250)

			s := o.waitPublishing(t, "live/cam")
			require.Len(t, s.LayerBytes, c.wantLayers, "layer bytes %v", s.LayerBytes)
			m := o.metrics(t)
			require.Contains(t, m, `coop_origin_segments_total{path="live/cam"}`)
			require.Contains(t, m, `coop_origin_segment_layer_bytes_total{layer="0",path="live/cam"}`)
			t.Logf("layer shares %v", s.LayerShares)
		})
	}
}

func TestRTSPPublishH264AndH265PlayBack(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg", "ffprobe")
	cases := []struct {
		name, codec string
		video       []string
		want        []string
	}{
		{"H.264 and AAC", "h264", []string{"-c:v", "libx264", "-bf", "2", "-g", "30"}, []string{"h264", "aac"}},
		{"H.265 with temporal layers", "hevc", []string{"-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "temporal-layers=1:log-level=error", "-g", "30"}, []string{"hevc", "aac"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			o := startOrigin(t)
			args := []string{"-hide_banner", "-nostats", "-loglevel", "warning", "-re",
				"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine",
				"-pix_fmt", "yuv420p"}
			args = append(args, c.video...)
			args = append(args, "-c:a", "aac", "-t", "25", "-f", "rtsp", "-rtsp_transport", "tcp", o.rtspURL("rtsp"))
			startProcess(t, nil, "ffmpeg", args...)
			s := o.waitPublishing(t, "live/rtsp")
			require.Equal(t, c.want, probeCodecs(t, o.rtspURL("rtsp")))
			// A safety bound only: the reader stops after its -t of media.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			requireCleanPlay(t, play(ctx, o.rtspURL("rtsp"), "tcp", 8*time.Second), 200)
			s = o.waitPublishing(t, "live/rtsp")
			if c.codec == "hevc" {
				require.Len(t, s.LayerBytes, 2, "TemporalId 0/1 give two layers")
			}
			t.Logf("layer shares %v", s.LayerShares)
		})
	}
}

// hostileRTMP sends the handshake and then payload on a raw connection and
// reports whether the origin closed it.
func hostileRTMP(t *testing.T, addr string, payload []byte) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	require.NoError(t, err)
	defer c.Close()
	hs := make([]byte, 1+1536+1536)
	hs[0] = 3
	_, _ = c.Write(append(hs, payload...))
	_ = c.SetReadDeadline(time.Now().Add(8 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			return !strings.Contains(err.Error(), "timeout")
		}
	}
}

// amfCommand frames an AMF0 command message on chunk stream 3 (chunk size 128).
func amfCommand(payload []byte) []byte {
	h := []byte{3, 0, 0, 0, byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), 20, 0, 0, 0, 0}
	out := append([]byte{}, h...)
	for i := 0; i < len(payload); i += 128 {
		if i > 0 {
			out = append(out, 0xc3)
		}
		out = append(out, payload[i:min(i+128, len(payload))]...)
	}
	return out
}

func TestHostileInputsDoNotDisturbAPlayingStream(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	o := startOrigin(t)
	publishRTMP(t, o.rtmpURL("live1"), 30*time.Second, "640x360", "-bf", "3", "-g", "60")
	o.waitPublishing(t, "live/live1")

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	played := make(chan playResult, 1)
	go func() { played <- play(ctx, o.rtspURL("live1"), "tcp", 15*time.Second) }()
	// The attacks below hit a stream that has a reader playing.
	waitFor(t, 20*time.Second, "the reader playing", func() bool { return o.readerCount(t) >= 1 })

	connect := []byte{2, 0, 7, 'c', 'o', 'n', 'n', 'e', 'c', 't', 0, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0}
	strictArray := append(append([]byte{}, connect...), 0x0a, 0x7f, 0xff, 0xff, 0xff)
	nested := append([]byte{}, connect...)
	for i := 0; i < 1_000_000; i++ {
		nested = append(nested, 0x0a, 0, 0, 0, 1)
	}
	deepButSmall := append([]byte{}, connect...)
	for i := 0; i < 5000; i++ {
		deepButSmall = append(deepButSmall, 0x0a, 0, 0, 0, 1)
	}
	for name, payload := range map[string][]byte{
		"strict array of 2^31-1 entries":        amfCommand(strictArray),
		"a million nested arrays":               amfCommand(nested),
		"5000 nested arrays in 25 KB":           amfCommand(deepButSmall),
		"garbage chunk stream":                  []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"continuation chunk without any header": {0xc4, 1, 2, 3, 4},
	} {
		require.True(t, hostileRTMP(t, o.rtmp, payload), "%s: connection should be closed", name)
	}
	// Garbage on the RTSP port and a half-open RTSP connection.
	c, err := net.Dial("tcp", o.rtsp)
	require.NoError(t, err)
	_, _ = c.Write([]byte("\x00\x01garbage\r\n\r\nOPTIONS nonsense\r\n\r\n"))
	c.Close()
	idle, err := net.Dial("tcp", o.rtmp)
	require.NoError(t, err)
	defer idle.Close()

	r := <-played
	requireCleanPlay(t, r, 300)
	require.NoError(t, o.cmd.Process.Signal(syscall.Signal(0)), "origin must still be running")
	require.Contains(t, o.metrics(t), `coop_origin_rejected_total{protocol="rtmp",reason="guard"}`)
	// The idle connection is closed by the server's timeout (10s default).
	_ = idle.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err = idle.Read(make([]byte, 1))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "timeout", "idle connection should be closed by the origin")
}

func TestPublisherReconnectWithinGraceKeepsRTSPReaders(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	o := startOrigin(t, "COOP_PUBLISH_GRACEPERIOD=10s")
	first := publishRTMP(t, o.rtmpURL("cam"), 6*time.Second, "640x360", "-bf", "2", "-g", "30")
	o.waitPublishing(t, "live/cam")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	played := make(chan playResult, 1)
	go func() { played <- play(ctx, o.rtspURL("cam"), "tcp", 14*time.Second) }()
	_ = first.wait(t, 20*time.Second) // the first publisher ends after 6 s
	time.Sleep(2 * time.Second)
	publishRTMP(t, o.rtmpURL("cam"), 20*time.Second, "640x360", "-bf", "2", "-g", "30")
	r := <-played
	require.NoError(t, r.err, "reader: %v", r.errors)
	// The reader ran 14 s of media: it must have received frames from
	// both publishers (the first delivered well under 14 s).
	require.Greater(t, r.frames, 6*30+60, "frames decoded across the reconnect")
	s := o.waitPublishing(t, "live/cam")
	require.Equal(t, uint64(1), s.Resumes)
}

func TestPublishAuthAndBusyPathAreRefusedInsideTheProtocol(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	o := startOrigin(t, "COOP_PUBLISH_KEYS=goodkey")
	wrong := publishRTMP(t, o.rtmpURL("badkey"), 20*time.Second, "320x240")
	require.Error(t, wrong.wait(t, 15*time.Second), "a wrong key must make ffmpeg fail")
	require.Contains(t, wrong.out.String(), "Publish", "ffmpeg should report the publish failure: %s", wrong.out.String())
	require.Contains(t, o.out.String(), "RTMP publish refused")

	publishRTMP(t, o.rtmpURL("goodkey"), 25*time.Second, "320x240")
	o.waitPublishing(t, "live/goodkey")
	second := publishRTMP(t, o.rtmpURL("goodkey"), 20*time.Second, "320x240")
	require.Error(t, second.wait(t, 15*time.Second), "a second publisher on a busy path must be refused")

	rtspWrong := startProcess(t, nil, "ffmpeg", append(testPatternArgs("320x240"),
		"-t", "10", "-f", "rtsp", "-rtsp_transport", "tcp", o.rtspURL("badkey"))...)
	require.Error(t, rtspWrong.wait(t, 15*time.Second))
	require.Contains(t, rtspWrong.out.String(), "403")
}

func TestAfterTheGracePeriodReadersGetACleanEnd(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	o := startOrigin(t, "COOP_PUBLISH_GRACEPERIOD=2s")
	pub := publishRTMP(t, o.rtmpURL("short"), 6*time.Second, "320x240", "-g", "30")
	o.waitPublishing(t, "live/short")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	start := time.Now()
	// Asked for 30 s, the reader must end soon after publisher + grace.
	r := play(ctx, o.rtspURL("short"), "tcp", 30*time.Second)
	require.NoError(t, pub.wait(t, 10*time.Second))
	require.Less(t, time.Since(start), 20*time.Second, "the reader was ended")
	require.Empty(t, r.errors, "decode errors")
	require.Positive(t, r.frames, "frames before the end")
	waitFor(t, 5*time.Second, "the stream to disappear", func() bool { return len(o.streams(t)) == 0 })
}

func TestReadCredentialsProtectPlayback(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg", "ffprobe")
	o := startOrigin(t, "COOP_READ_USER=viewer", "COOP_READ_PASS=secret")
	publishRTMP(t, o.rtmpURL("private"), 20*time.Second, "320x240")
	o.waitPublishing(t, "live/private")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", o.rtspURL("private")).CombinedOutput()
	require.Error(t, err, "no credentials")
	require.Contains(t, string(out), "401")
	authURL := "rtsp://viewer:secret@" + o.rtsp + "/live/private"
	require.Equal(t, []string{"h264", "aac"}, probeCodecs(t, authURL))
}
