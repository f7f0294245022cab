package integration

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/origin/config"
	"github.com/coopstreaming/coop/origin/core"
	"github.com/coopstreaming/coop/segment"
	"github.com/coopstreaming/coop/segment/tsmux"
)

// captureSink keeps every segment the origin produces, re-decoded from its
// encoded chunks (exactly what a peer would receive).
type captureSink struct {
	mu         sync.Mutex
	header     []byte
	segments   []*segment.Segment
	decodeErrs []error
}

func (c *captureSink) StreamStarted(_ string, header []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.header = header
}

func (c *captureSink) SegmentReady(_ string, _ *segment.Segment, chunks [][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var seg segment.Segment
	for _, ch := range chunks {
		info, frames, err := segment.UnmarshalChunk(ch)
		if err != nil {
			c.decodeErrs = append(c.decodeErrs, err)
			return
		}
		seg.Seq, seg.Start, seg.Duration, seg.RandomAccess = info.Seq, info.Start, info.Duration, info.RandomAccess
		seg.Layers = append(seg.Layers, frames)
	}
	c.segments = append(c.segments, &seg)
}

func (c *captureSink) StreamEnded(string) {}

func startInProcessOrigin(t *testing.T, sink *captureSink) *core.Origin {
	t.Helper()
	cfg := config.Default()
	cfg.RTMP.Address, cfg.RTSP.Address, cfg.HTTP.Address = freeAddr(t), freeAddr(t), freeAddr(t)
	cfg.RTSP.UDPRTPAddress, cfg.RTSP.UDPRTCPAddress = "", ""
	cfg.HLS.Address = freeAddr(t) // never the default :8888 (another test run may hold it)
	o := &core.Origin{Config: cfg, Sink: sink, Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	require.NoError(t, o.Initialize())
	t.Cleanup(o.Close)
	return o
}

// writeTS rebuilds an MPEG-TS file from the first maxLayer+1 layers.
func writeTS(t *testing.T, path string, header []byte, segs []*segment.Segment, layers int) {
	t.Helper()
	h, err := segment.UnmarshalHeader(header)
	require.NoError(t, err)
	var buf bytes.Buffer
	mux, err := tsmux.New(&buf, h)
	require.NoError(t, err)
	for _, s := range segs {
		n := min(layers, len(s.Layers))
		require.NoError(t, mux.WriteFrames(segment.Merge(s.Layers[:n]...)))
	}
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o600))
}

// decodeFile decodes a file with ffmpeg and returns the error lines and the
// number of video frames ffprobe counts.
func decodeFile(t *testing.T, path string) ([]string, int) {
	t.Helper()
	out, _ := exec.Command("ffmpeg", "-hide_banner", "-nostats", "-v", "error", "-i", path, "-f", "null", "-").CombinedOutput()
	var errs []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(l) != "" {
			errs = append(errs, l)
		}
	}
	probe, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
		"-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path).CombinedOutput()
	require.NoError(t, err, string(probe))
	// ffprobe may list the stream once per program: take the first count.
	fields := strings.Fields(string(probe))
	require.NotEmpty(t, fields)
	frames, err := strconv.Atoi(fields[0])
	require.NoError(t, err, string(probe))
	return errs, frames
}

// TestLayersDecodeAloneAndTogether proves the layer split is real: MPEG-TS
// rebuilt from the segments decodes with zero errors with every layer and
// with the base layer alone, and fewer layers give fewer frames.
func TestLayersDecodeAloneAndTogether(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg", "ffprobe")
	cases := []struct {
		name       string
		publish    func(o *core.Origin) []string
		wantLayers int
	}{
		{"H.264 over RTMP with B-frames", func(o *core.Origin) []string {
			return append(testPatternArgs("320x240", "-bf", "3", "-g", "60"), "-t", "8", "-f", "flv",
				"rtmp://"+o.Config.RTMP.Address+"/live/layers")
		}, 3},
		{"H.265 over RTSP with temporal layers", func(o *core.Origin) []string {
			return []string{"-hide_banner", "-nostats", "-loglevel", "warning", "-re",
				"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine",
				"-pix_fmt", "yuv420p", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "temporal-layers=1:log-level=error",
				"-g", "30", "-c:a", "aac", "-t", "8", "-f", "rtsp", "-rtsp_transport", "tcp",
				"rtsp://" + o.Config.RTSP.Address + "/live/layers"}
		}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sink := &captureSink{}
			o := startInProcessOrigin(t, sink)
			// The publisher stops by itself after 8 s of media; the deadline
			// only bounds a hung encoder, generously for a loaded machine.
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, "ffmpeg", c.publish(o)...).CombinedOutput()
			require.NoError(t, err, string(out))
			o.Streams.Close() // flush the last segment
			sink.mu.Lock()
			defer sink.mu.Unlock()
			require.Empty(t, sink.decodeErrs)
			require.GreaterOrEqual(t, len(sink.segments), 5)
			maxLayers := 0
			for i, s := range sink.segments {
				require.Equal(t, sink.segments[0].Seq+uint64(i), s.Seq, "segments are numbered without gaps")
				maxLayers = max(maxLayers, len(s.Layers))
			}
			require.Equal(t, c.wantLayers, maxLayers)

			dir := t.TempDir()
			var frames []int
			for layers := maxLayers; layers >= 1; layers-- {
				p := filepath.Join(dir, "layers"+strconv.Itoa(layers)+".ts")
				writeTS(t, p, sink.header, sink.segments, layers)
				errs, n := decodeFile(t, p)
				require.Empty(t, errs, "decoding %d layer(s)", layers)
				frames = append(frames, n)
			}
			t.Logf("video frames decoded with %d..1 layers: %v", maxLayers, frames)
			for i := 1; i < len(frames); i++ {
				require.Less(t, frames[i], frames[i-1], "dropping a layer must lower the frame rate")
			}
		})
	}
}
