package fmp4

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	mfmp4 "github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/segment"
)

// recorded is a real stream: the origin's segmenter cutting ffmpeg's
// H.264 (B-frames, 3 layers) and AAC, written by the integration test
// TestWriteFMP4Testdata.
type recorded struct {
	header []byte
	segs   [][][]byte // per segment, its layer chunks
}

func loadRecorded(t *testing.T) recorded {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "h264_aac.segs"))
	require.NoError(t, err)
	var r recorded
	next := func(n int) []byte {
		require.GreaterOrEqual(t, len(b), n, "truncated testdata")
		p := b[:n]
		b = b[n:]
		return p
	}
	r.header = next(int(binary.BigEndian.Uint32(next(4))))
	for len(b) > 0 {
		n := int(next(1)[0])
		var chunks [][]byte
		for range n {
			chunks = append(chunks, next(int(binary.BigEndian.Uint32(next(4)))))
		}
		r.segs = append(r.segs, chunks)
	}
	return r
}

func (r recorded) muxer(t *testing.T) *Muxer {
	t.Helper()
	h, err := segment.UnmarshalHeader(r.header)
	require.NoError(t, err)
	m, err := New(h)
	require.NoError(t, err)
	return m
}

// convert returns init + every fragment, with at most layers layers per
// segment, and the number of video frames given to the muxer.
func (r recorded) convert(t *testing.T, layers int) (out []byte, videoFrames int) {
	t.Helper()
	m := r.muxer(t)
	out = append(out, m.Init()...)
	var end int64
	for _, chunks := range r.segs {
		var seq uint64
		ci, _, err := segment.UnmarshalChunk(chunks[0])
		require.NoError(t, err)
		seq = ci.Seq
		var frames []segment.Frame
		var ok bool
		frames, end, _, ok = Chunks(seq, chunks[:min(layers, len(chunks))])
		require.True(t, ok)
		for _, f := range frames {
			if f.Track == 0 {
				videoFrames++
			}
		}
		frag, err := m.Fragment(frames, end)
		require.NoError(t, err)
		out = append(out, frag...)
	}
	frag, err := m.Flush(end)
	require.NoError(t, err)
	require.NotEmpty(t, frag, "the last video frame was held back")
	out = append(out, frag...)
	return out, videoFrames
}

func TestInitDescribesTheTracks(t *testing.T) {
	r := loadRecorded(t)
	m := r.muxer(t)
	var it mfmp4.Init
	require.NoError(t, it.Unmarshal(bytes.NewReader(m.Init())))
	require.Len(t, it.Tracks, 2)
	h264, ok := it.Tracks[0].Codec.(*codecs.H264)
	require.True(t, ok, "track 1 is H.264: %T", it.Tracks[0].Codec)
	require.NotEmpty(t, h264.SPS)
	require.Equal(t, uint32(segment.Timebase), it.Tracks[0].TimeScale)
	aac, ok := it.Tracks[1].Codec.(*codecs.MPEG4Audio)
	require.True(t, ok, "track 2 is AAC: %T", it.Tracks[1].Codec)
	require.Equal(t, uint32(aac.Config.SampleRate), it.Tracks[1].TimeScale)
	require.Regexp(t, `^video/mp4; codecs="avc1\.[0-9a-f]{6},mp4a\.40\.2"$`, m.MIME())
	require.True(t, m.HasVideo())
}

// TestFragmentsAreContinuous: every fragment parses back, its samples are
// the segment's frames, and each track's decode time runs on without a
// gap or an overlap from one fragment to the next (audio too, whose
// timestamps jitter around 1024 samples) — with every layer and
// with the base layer alone (fewer, longer video samples over the same span).
func TestFragmentsAreContinuous(t *testing.T) {
	r := loadRecorded(t)
	require.GreaterOrEqual(t, len(r.segs), 4)
	layers := 0
	for _, s := range r.segs {
		layers = max(layers, len(s))
	}
	require.Equal(t, 3, layers, "the recorded stream has 3 layers")
	spans := map[int]uint64{}
	for _, l := range []int{3, 1} {
		out, frames := r.convert(t, l)
		var parts mfmp4.Parts
		require.NoError(t, parts.Unmarshal(out[len(r.muxer(t).Init()):]))
		require.Len(t, parts, len(r.segs)+1, "a fragment per segment and the flush")
		next := map[int]uint64{}
		samples := 0
		for i, p := range parts {
			require.Equal(t, uint32(i+1), p.SequenceNumber)
			for _, tr := range p.Tracks {
				if _, seen := next[tr.ID]; seen {
					require.Equal(t, next[tr.ID], tr.BaseTime, "track %d: fragment %d starts where the last ended", tr.ID, i)
				}
				if tr.ID == 1 {
					samples += len(tr.Samples)
					if i == 0 {
						require.False(t, tr.Samples[0].IsNonSyncSample, "the first fragment starts with a key frame")
					}
				}
				end := tr.BaseTime
				for _, s := range tr.Samples {
					end += uint64(s.Duration)
				}
				next[tr.ID] = end
			}
		}
		require.Equal(t, frames, samples, "one video sample per frame (%d layers)", l)
		if l == 3 {
			spans[l] = next[1]
		} else {
			require.Equal(t, spans[3], next[1], "the base layer alone spans the same time")
		}
		t.Logf("%d layer(s): %d video samples over %d ticks", l, samples, next[1])
	}
}

// TestFFmpegDecodesTheFragments decodes init + fragments with ffmpeg:
// no errors, and every video frame decodes, with every layer and with
// fewer (fewer frames, still no error).
func TestFFmpegDecodesTheFragments(t *testing.T) {
	if runtime.GOOS == "js" {
		t.Skip("no child processes under GOOS=js (make test-wasm)")
	}
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ffmpeg is required in CI")
		}
		t.Skip("ffmpeg not installed")
	}
	r := loadRecorded(t)
	dir := t.TempDir()
	var counts []int
	for _, l := range []int{3, 2, 1} {
		out, frames := r.convert(t, l)
		p := filepath.Join(dir, "l"+strconv.Itoa(l)+".mp4")
		require.NoError(t, os.WriteFile(p, out, 0o644))
		res, err := exec.Command("ffmpeg", "-hide_banner", "-nostats", "-v", "error", "-i", p,
			"-map", "0:v", "-f", "framemd5", "-").CombinedOutput()
		require.NoError(t, err, string(res))
		decoded, errs := 0, []string{}
		for _, line := range strings.Split(string(res), "\n") {
			switch {
			case line == "" || strings.HasPrefix(line, "#"):
			case strings.HasPrefix(line, "0,"):
				decoded++
			default:
				errs = append(errs, line)
			}
		}
		require.Empty(t, errs, "%d layer(s)", l)
		require.Equal(t, frames, decoded, "every video frame decodes (%d layers)", l)
		counts = append(counts, decoded)
	}
	t.Logf("video frames decoded with 3, 2, 1 layers: %v", counts)
	require.Less(t, counts[1], counts[0])
	require.Less(t, counts[2], counts[1])
}

func TestBadInput(t *testing.T) {
	_, err := New(segment.Header{})
	require.ErrorIs(t, err, ErrNoTracks)
	_, err = New(segment.Header{Tracks: []segment.Track{{ID: 0, Codec: segment.CodecH264, Params: [][]byte{{1}}}}})
	require.ErrorIs(t, err, ErrBadParams)
	_, err = New(segment.Header{Tracks: []segment.Track{{ID: 0, Codec: segment.CodecAAC, Params: [][]byte{{0xff}}}}})
	require.ErrorIs(t, err, ErrBadParams)

	r := loadRecorded(t)
	m := r.muxer(t)
	frames, end, _, ok := Chunks(99, r.segs[0])
	require.False(t, ok, "chunks of another segment")
	require.Nil(t, frames)
	ci, _, err := segment.UnmarshalChunk(r.segs[1][0])
	require.NoError(t, err)
	frames, end, _, ok = Chunks(ci.Seq, r.segs[1])
	require.True(t, ok)
	_, err = m.Fragment(frames, end)
	require.NoError(t, err)
	ci0, _, err := segment.UnmarshalChunk(r.segs[0][0])
	require.NoError(t, err)
	frames, end, _, _ = Chunks(ci0.Seq, r.segs[0])
	_, err = m.Fragment(frames, end)
	require.ErrorIs(t, err, ErrBackwards, "a segment before the first one")
	frag, err := m.Fragment([]segment.Frame{{Track: 7, Payload: []byte{1}}}, 0)
	require.NoError(t, err)
	require.Nil(t, frag, "no carried track")
}

// BenchmarkSegment converts one recorded segment (every layer, ~0.5 s of
// 160x120 H.264 and AAC) per op: the browser peer's cost per segment
// (GOOS=js GOARCH=wasm go test -bench . -exec go_js_wasm_exec).
func BenchmarkSegment(b *testing.B) {
	t := &testing.T{}
	r := loadRecorded(t)
	type seg struct {
		seq    uint64
		layers [][]byte
	}
	var segs []seg
	bytesIn := 0
	for _, chunks := range r.segs {
		ci, _, err := segment.UnmarshalChunk(chunks[0])
		if err != nil {
			b.Fatal(err)
		}
		segs = append(segs, seg{ci.Seq, chunks})
		for _, c := range chunks {
			bytesIn += len(c)
		}
	}
	b.SetBytes(int64(bytesIn / len(segs)))
	b.ReportAllocs()
	var m *Muxer
	for i := 0; b.Loop(); i++ {
		k := i % len(segs)
		if k == 0 {
			m = r.muxer(t)
		}
		frames, end, _, ok := Chunks(segs[k].seq, segs[k].layers)
		if !ok {
			b.Fatal("chunks")
		}
		if _, err := m.Fragment(frames, end); err != nil {
			b.Fatal(err)
		}
	}
}
