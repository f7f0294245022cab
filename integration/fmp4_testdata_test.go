package integration

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWriteFMP4Testdata records a real layered segment stream (the
// origin's segmenter cutting ffmpeg's H.264 with B-frames and AAC) into
// peer/fmp4/testdata/h264_aac.segs, which peer/fmp4's unit tests convert.
// Run it by hand (COOP_WRITE_TESTDATA=1) when the segment format changes.
// File format: u32 header length, header, then per segment: u8 layer
// count and per layer u32 chunk length, chunk.
func TestWriteFMP4Testdata(t *testing.T) {
	if os.Getenv("COOP_WRITE_TESTDATA") != "1" {
		t.Skip("writes committed testdata: COOP_WRITE_TESTDATA=1")
	}
	requireTool(t, "ffmpeg")
	sink := &captureSink{}
	o := startInProcessOrigin(t, sink)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append(testPatternArgs("160x120", "-preset", "ultrafast", "-bf", "3", "-g", "30", "-b:v", "150k"),
		"-t", "3", "-f", "flv", "rtmp://"+o.Config.RTMP.Address+"/live/fmp4")
	out, err := exec.CommandContext(ctx, "ffmpeg", args...).CombinedOutput()
	require.NoError(t, err, string(out))
	o.Streams.Close()
	sink.mu.Lock()
	defer sink.mu.Unlock()
	require.Empty(t, sink.decodeErrs)
	require.GreaterOrEqual(t, len(sink.segments), 4)
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(len(sink.header)))
	b = append(b, sink.header...)
	for _, s := range sink.segments {
		chunks, err := s.Marshal()
		require.NoError(t, err)
		b = append(b, byte(len(chunks)))
		for _, c := range chunks {
			b = binary.BigEndian.AppendUint32(b, uint32(len(c)))
			b = append(b, c...)
		}
	}
	p := filepath.Join("..", "peer", "fmp4", "testdata", "h264_aac.segs")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	t.Logf("wrote %s: %d segments, %d bytes", p, len(sink.segments), len(b))
}
