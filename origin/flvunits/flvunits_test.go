package flvunits

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/segment"
)

// sink records what the converter produces.
type sink struct {
	tracks   [][]segment.Track
	units    []*media.Unit
	startErr error
	writeErr error
}

func (s *sink) Start(t []segment.Track) error {
	if s.startErr != nil {
		return s.startErr
	}
	s.tracks = append(s.tracks, t)
	return nil
}

func (s *sink) Write(u *media.Unit) error {
	if s.writeErr != nil {
		return s.writeErr
	}
	s.units = append(s.units, u)
	return nil
}

var (
	sps       = []byte{0x67, 0x64, 0, 0x1f}
	pps       = []byte{0x68, 0xee}
	avcConfig = []byte{1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 0xee}
	vps       = []byte{0x40, 0x01, 0x0c}
	hSPS      = []byte{0x42, 0x01, 0x01}
	hPPS      = []byte{0x44, 0x01, 0xc1}
	asc       = []byte{0x12, 0x10}
	idr       = []byte{0x65, 0x88, 0x84}
	nonIDR    = []byte{0x41, 0x9a}
	hevcIDR   = []byte{0x26, 0x01, 0xaf} // IDR_W_RADL
	hevcTrail = []byte{0x02, 0x01, 0xd0} // TRAIL_R
)

// hevcConfig is an HEVCDecoderConfigurationRecord holding vps, hSPS, hPPS.
func hevcConfig() []byte {
	b := make([]byte, 23)
	b[0], b[21], b[22] = 1, 0x03, 3
	for i, set := range [][]byte{vps, hSPS, hPPS} {
		b = append(b, byte(32+i), 0, 1, 0, byte(len(set)))
		b = append(b, set...)
	}
	return b
}

// avcc frames NAL units with 4-byte lengths.
func avcc(nalus ...[]byte) []byte {
	var b []byte
	for _, n := range nalus {
		b = append(b, 0, 0, 0, byte(len(n)))
		b = append(b, n...)
	}
	return b
}

func avcSeq() []byte { return append([]byte{0x17, 0, 0, 0, 0}, avcConfig...) }

// avcFrame is a legacy AVC NALU tag; cts is the composition time in ms.
func avcFrame(key bool, cts byte, nalus ...[]byte) []byte {
	ft := byte(0x27)
	if key {
		ft = 0x17
	}
	return append([]byte{ft, 1, 0, 0, cts}, avcc(nalus...)...)
}

func hevcSeq() []byte { return append([]byte{0x80 | 0x10 | 0, 'h', 'v', 'c', '1'}, hevcConfig()...) }

// hevcFrame is an Enhanced RTMP CodedFrames tag (frame type inter, so a
// key frame is found from the NAL units alone).
func hevcFrame(cts byte, nalus ...[]byte) []byte {
	return append([]byte{0x80 | 0x20 | 1, 'h', 'v', 'c', '1', 0, 0, cts}, avcc(nalus...)...)
}

func aacSeq() []byte            { return append([]byte{0xaf, 0}, asc...) }
func aacFrame(b ...byte) []byte { return append([]byte{0xaf, 1}, b...) }

type tag struct {
	audio bool
	ts    uint32
	body  []byte
	// at is when the tag arrives, from the first tag.
	at time.Duration
}

func TestConverter(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name   string
		tags   []tag
		tracks [][]segment.Track
		units  []media.Unit
		skips  []Skip
	}{{
		name: "sequence headers then frames",
		tags: []tag{
			{audio: true, body: aacSeq()},
			{body: avcSeq()},
			{audio: true, ts: 0, body: aacFrame(1, 2)}, // before the track list: waits
			{ts: 0, body: avcFrame(true, 40, idr)},
			{audio: true, ts: 23, body: aacFrame(3)},
			{ts: 40, body: avcFrame(false, 0, nonIDR)},
		},
		tracks: [][]segment.Track{{
			{ID: 0, Codec: segment.CodecH264, Params: [][]byte{sps, pps}},
			{ID: 1, Codec: segment.CodecAAC, Params: [][]byte{asc}},
		}},
		units: []media.Unit{
			{Track: 0, NALUs: [][]byte{idr}, Key: true, DTS: 0, PTS: 40 * ms},
			{Track: 1, AU: []byte{3}, DTS: 23 * ms, PTS: 23 * ms},
			{Track: 0, NALUs: [][]byte{nonIDR}, DTS: 40 * ms, PTS: 40 * ms},
		},
	}, {
		name: "frames before the sequence header are dropped",
		tags: []tag{
			{ts: 0, body: avcFrame(true, 0, idr)},
			{body: avcSeq()},
			{ts: 40, body: avcFrame(true, 0, idr)},
		},
		tracks: [][]segment.Track{{{ID: 0, Codec: segment.CodecH264, Params: [][]byte{sps, pps}}}},
		units:  []media.Unit{{Track: 0, NALUs: [][]byte{idr}, Key: true, DTS: 40 * ms, PTS: 40 * ms}},
	}, {
		name: "key frame found from the NAL units",
		tags: []tag{
			{body: avcSeq()},
			{ts: 5, body: avcFrame(false, 0, sps, pps, idr)},
		},
		tracks: [][]segment.Track{{{ID: 0, Codec: segment.CodecH264, Params: [][]byte{sps, pps}}}},
		units:  []media.Unit{{Track: 0, NALUs: [][]byte{sps, pps, idr}, Key: true, DTS: 5 * ms, PTS: 5 * ms}},
	}, {
		name: "audio alone starts after the track wait",
		tags: []tag{
			{audio: true, body: aacSeq()},
			{audio: true, ts: 0, body: aacFrame(1), at: 0},
			{audio: true, ts: 1000, body: aacFrame(2), at: time.Second},
			{audio: true, ts: 1999, body: aacFrame(3), at: 2*time.Second - 1},
			{audio: true, ts: 2000, body: aacFrame(4), at: 2 * time.Second},
			{audio: true, ts: 2023, body: aacFrame(5), at: 2 * time.Second},
			{body: avcSeq()}, // too late: the track list is fixed
			{ts: 2040, body: avcFrame(true, 0, idr), at: 2 * time.Second},
		},
		tracks: [][]segment.Track{{{ID: 0, Codec: segment.CodecAAC, Params: [][]byte{asc}}}},
		units: []media.Unit{
			{Track: 0, AU: []byte{4}, DTS: 2000 * ms, PTS: 2000 * ms},
			{Track: 0, AU: []byte{5}, DTS: 2023 * ms, PTS: 2023 * ms},
			// Pins the behaviour the ingest and the puller had before
			// they shared this code: a video track that comes after an
			// audio-only start is not announced, yet its frames are
			// written on track 0 (the AAC track). Left as it was.
			{Track: 0, NALUs: [][]byte{idr}, Key: true, DTS: 2040 * ms, PTS: 2040 * ms},
		},
	}, {
		name: "HEVC by FourCC",
		tags: []tag{
			{body: hevcSeq()},
			{audio: true, body: aacSeq()},
			{ts: 100, body: hevcFrame(33, hevcIDR)},
			{ts: 133, body: hevcFrame(0, hevcTrail)},
		},
		tracks: [][]segment.Track{{
			{ID: 0, Codec: segment.CodecH265, Params: [][]byte{vps, hSPS, hPPS}},
			{ID: 1, Codec: segment.CodecAAC, Params: [][]byte{asc}},
		}},
		units: []media.Unit{
			{Track: 0, NALUs: [][]byte{hevcIDR}, Key: true, DTS: 100 * ms, PTS: 133 * ms},
			{Track: 0, NALUs: [][]byte{hevcTrail}, DTS: 133 * ms, PTS: 133 * ms},
		},
	}, {
		name: "bad tags skipped",
		tags: []tag{
			{body: []byte{}},
			{body: []byte{0x14, 0}},                                   // VP6
			{body: []byte{0x17, 0, 0, 0, 0, 1, 2}},                    // truncated AVC config
			{body: append([]byte{0x90, 'h', 'v', 'c', '1'}, 1, 2, 3)}, // bad HEVC config
			{audio: true, body: []byte{0x2f, 1}},                      // MP3
			{body: avcSeq()},
			{ts: 1, body: []byte{0x17, 1, 0, 0, 0, 0, 0, 0, 9, 0x65}}, // AVCC length past the end
			{ts: 2, body: avcFrame(true, 0, idr)},
			{body: []byte{0x57, 0}}, // info frame: ignored, no skip
		},
		tracks: [][]segment.Track{{{ID: 0, Codec: segment.CodecH264, Params: [][]byte{sps, pps}}}},
		units:  []media.Unit{{Track: 0, NALUs: [][]byte{idr}, Key: true, DTS: 2 * ms, PTS: 2 * ms}},
		skips:  []Skip{SkipVideoTag, SkipVideoTag, SkipAVCConfig, SkipHEVCConfig, SkipAudioTag, SkipFrame},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			s := &sink{}
			start := time.Unix(1000, 0)
			now := start
			var skips []Skip
			c := &Converter{Sink: s, Now: func() time.Time { return now },
				OnSkip: func(k Skip, err error) { require.Error(t, err); skips = append(skips, k) }}
			for _, tg := range tc.tags {
				now = start.Add(tg.at)
				var err error
				if tg.audio {
					err = c.Audio(tg.ts, tg.body)
				} else {
					err = c.Video(tg.ts, tg.body)
				}
				require.NoError(t, err)
			}
			require.Equal(t, tc.tracks, s.tracks)
			got := make([]media.Unit, len(s.units))
			for i, u := range s.units {
				got[i] = *u
			}
			if len(tc.units) == 0 {
				tc.units = []media.Unit{}
			}
			require.Equal(t, tc.units, got)
			require.Equal(t, tc.skips, skips)
		})
	}
}

func TestTrackWaitIsConfigurable(t *testing.T) {
	s := &sink{}
	start := time.Unix(1000, 0)
	now := start
	c := &Converter{Sink: s, TrackWait: 500 * time.Millisecond, Now: func() time.Time { return now }}
	require.NoError(t, c.Audio(0, aacSeq()))
	require.NoError(t, c.Audio(0, aacFrame(1)))
	require.False(t, c.Started())
	now = start.Add(500 * time.Millisecond)
	require.NoError(t, c.Audio(500, aacFrame(2)))
	require.True(t, c.Started())
	require.Len(t, s.units, 1)
}

func TestSinkErrorsAreReturned(t *testing.T) {
	boom := errors.New("boom")
	c := &Converter{Sink: &sink{startErr: boom}}
	require.NoError(t, c.Video(0, avcSeq()))
	require.ErrorIs(t, c.Video(0, avcFrame(true, 0, idr)), boom)
	require.False(t, c.Started())

	c = &Converter{Sink: &sink{writeErr: boom}}
	require.NoError(t, c.Video(0, avcSeq()))
	require.ErrorIs(t, c.Video(0, avcFrame(true, 0, idr)), boom)
	require.True(t, c.Started())
}

func TestSequenceHeaderIsCopied(t *testing.T) {
	// The caller may reuse the buffer of a sequence header.
	s := &sink{}
	now := time.Unix(0, 0)
	c := &Converter{Sink: s, Now: func() time.Time { return now }, TrackWait: time.Second}
	seq := aacSeq()
	require.NoError(t, c.Audio(0, seq))
	seq[2] = 0xff
	require.NoError(t, c.Audio(0, aacFrame(7)))
	now = now.Add(time.Second)
	require.NoError(t, c.Audio(1000, aacFrame(8)))
	require.Equal(t, [][]segment.Track{{{ID: 0, Codec: segment.CodecAAC, Params: [][]byte{asc}}}}, s.tracks)
}

// FuzzConverter feeds a session of tags: each is a kind byte (even:
// video, odd: audio), a length byte and the body.
func FuzzConverter(f *testing.F) {
	frame := func(audio bool, body []byte) []byte {
		k := byte(0)
		if audio {
			k = 1
		}
		return append([]byte{k, byte(len(body))}, body...)
	}
	var session []byte
	for _, b := range [][]byte{avcSeq(), avcFrame(true, 40, idr), avcFrame(false, 0, nonIDR)} {
		session = append(session, frame(false, b)...)
	}
	session = append(session, frame(true, aacSeq())...)
	session = append(session, frame(true, aacFrame(1, 2))...)
	f.Add(session)
	f.Add(append(frame(false, hevcSeq()), frame(false, hevcFrame(33, hevcIDR))...))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		s := &sink{}
		now := time.Unix(0, 0)
		c := &Converter{Sink: s, Now: func() time.Time { now = now.Add(time.Second); return now }}
		for len(b) >= 2 {
			audio, n := b[0]&1 == 1, int(b[1])
			b = b[2:]
			n = min(n, len(b))
			body := b[:n]
			b = b[n:]
			var err error
			if audio {
				err = c.Audio(uint32(len(b)), body)
			} else {
				err = c.Video(uint32(len(b)), body)
			}
			require.NoError(t, err)
		}
		require.LessOrEqual(t, len(s.tracks), 1)
	})
}
