package segmenter

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/segment"
)

// feed pushes 30 fps video with a key frame every gop frames, every other
// frame non-reference, plus audio every 23 ms.
func feed(s *Segmenter, frames, gop int) {
	audioNext := time.Duration(0)
	for i := 0; i < frames; i++ {
		dts := time.Duration(i) * time.Second / 30
		for audioNext <= dts {
			s.Push(&media.Unit{Track: 1, AU: []byte{0x21}, PTS: audioNext, DTS: audioNext})
			audioNext += 23 * time.Millisecond
		}
		nal := []byte{0x41}
		switch {
		case i%gop == 0:
			nal = []byte{0x65}
		case i%2 == 1:
			nal = []byte{0x01}
		}
		s.Push(&media.Unit{Track: 0, NALUs: [][]byte{nal}, Key: i%gop == 0, PTS: dts, DTS: dts})
	}
	s.Flush()
}

var tracks = []segment.Track{
	{ID: 0, Codec: segment.CodecH264, Params: [][]byte{{0x67, 1}, {0x68, 2}}},
	{ID: 1, Codec: segment.CodecAAC, Params: [][]byte{{0x12, 0x10}}},
}

func TestSegmentsAreNumberedTimedAndLayered(t *testing.T) {
	var segs []*segment.Segment
	s := &Segmenter{Tracks: tracks, Target: time.Second, Layers: 3, FirstSeq: 7, OnSegment: func(x *segment.Segment) { segs = append(segs, x) }}
	feed(s, 300, 60) // 10 s, key frame every 2 s
	require.Len(t, segs, 10)
	for i, x := range segs {
		require.Equal(t, uint64(7+i), x.Seq)
		require.InDelta(t, segment.Timebase, x.Duration, segment.Timebase/10, "segment %d duration", i)
		require.Equal(t, i%2 == 0, x.RandomAccess, "segment %d starts with a key frame every other second", i)
		require.Len(t, x.Layers, 3)
		for _, f := range x.Layers[1] {
			require.Equal(t, uint8(0), f.Track, "only video in enhancement layers")
		}
		merged := segment.Merge(x.Layers...)
		for j, f := range merged {
			require.Equal(t, uint32(j), f.Index)
		}
	}
	first := segs[0].Layers[0][0]
	require.True(t, first.Key)
	require.Equal(t, []byte{0, 0, 0, 2, 0x67, 1, 0, 0, 0, 2, 0x68, 2, 0, 0, 0, 1, 0x65}, first.Payload,
		"key frames carry SPS and PPS in-band")
}

func TestOneLayerWhenNothingIsDroppable(t *testing.T) {
	var segs []*segment.Segment
	s := &Segmenter{Tracks: tracks[:1], Target: time.Second, OnSegment: func(x *segment.Segment) { segs = append(segs, x) }}
	for i := 0; i < 90; i++ {
		d := time.Duration(i) * time.Second / 30
		s.Push(&media.Unit{Track: 0, NALUs: [][]byte{{0x41}}, Key: i == 0, PTS: d, DTS: d})
	}
	s.Flush()
	require.Len(t, segs, 3)
	for _, x := range segs {
		require.Len(t, x.Layers, 1)
	}
}

func TestAudioBeforeTheFirstVideoFrameIsNotASegmentStart(t *testing.T) {
	var segs []*segment.Segment
	s := &Segmenter{Tracks: tracks, OnSegment: func(x *segment.Segment) { segs = append(segs, x) }}
	s.Push(&media.Unit{Track: 1, AU: []byte{1}})
	s.Flush()
	require.Empty(t, segs)
}

func TestEverySegmentOfAnAudioOnlyStreamIsARandomAccessPoint(t *testing.T) {
	var segs []*segment.Segment
	s := &Segmenter{Tracks: tracks[1:], Target: 500 * time.Millisecond, OnSegment: func(x *segment.Segment) { segs = append(segs, x) }}
	for i := 0; i < 100; i++ {
		d := time.Duration(i) * 23 * time.Millisecond
		s.Push(&media.Unit{Track: 0, AU: []byte{0x21}, PTS: d, DTS: d})
	}
	s.Flush()
	require.GreaterOrEqual(t, len(segs), 4)
	for _, x := range segs {
		require.True(t, x.RandomAccess, "segment %d", x.Seq)
	}
}
