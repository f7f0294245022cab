package rtpunits

import (
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"
	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/segment"
)

var (
	// Baseline profile, 320x240: no reordering, so DTS = PTS.
	sps = []byte{0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x0a, 0xa8}
	pps = []byte{0x68, 0xce, 0x0f, 0x2c, 0x80}
	idr = []byte{0x65, 0x88, 0x84, 0x00, 0x33}
	p1  = []byte{0x41, 0x9a, 0x02}
	asc = &mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2}
)

func h264Format() *format.H264 {
	return &format.H264{PayloadTyp: 96, SPS: sps, PPS: pps, PacketizationMode: 1}
}

func aacFormat() *format.MPEG4Audio {
	return &format.MPEG4Audio{PayloadTyp: 97, Config: asc, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
}

// packets is one access unit packetized by gortsplib's own encoder.
func h264Packets(t *testing.T, f *format.H264, au [][]byte) []*rtp.Packet {
	enc, err := f.CreateEncoder()
	require.NoError(t, err)
	pkts, err := enc.Encode(au)
	require.NoError(t, err)
	return pkts
}

func decodeAll(t *testing.T, d *Decoder, pkts []*rtp.Packet, pts int64) []*media.Unit {
	var out []*media.Unit
	for _, p := range pkts {
		us, err := d.Decode(p, pts)
		if err != nil {
			continue // more packets needed
		}
		out = append(out, us...)
	}
	return out
}

func TestH264WaitsForAKeyFrameAndTimesUnits(t *testing.T) {
	f := h264Format()
	d, err := NewDecoder(f, 1)
	require.NoError(t, err)
	require.Empty(t, decodeAll(t, d, h264Packets(t, f, [][]byte{p1}), 0), "a frame before the first key frame")
	us := decodeAll(t, d, h264Packets(t, f, [][]byte{idr}), 90000)
	us = append(us, decodeAll(t, d, h264Packets(t, f, [][]byte{p1}), 93000)...)
	require.Len(t, us, 2)
	require.Equal(t, media.Unit{Track: 1, NALUs: [][]byte{idr}, Key: true, PTS: time.Second, DTS: time.Second}, *us[0])
	require.Equal(t, media.Unit{Track: 1, NALUs: [][]byte{p1}, PTS: 93000 * time.Second / 90000, DTS: 93000 * time.Second / 90000}, *us[1])
}

func TestStrictDTSReplacesARepeatedDTS(t *testing.T) {
	for _, strict := range []bool{false, true} {
		f := h264Format()
		d, err := NewDecoder(f, 0)
		require.NoError(t, err)
		d.StrictDTS = strict
		us := decodeAll(t, d, h264Packets(t, f, [][]byte{idr}), 90000)
		// The same PTS again: the extractor answers the same DTS.
		us = append(us, decodeAll(t, d, h264Packets(t, f, [][]byte{p1}), 90000)...)
		require.Len(t, us, 2)
		want := time.Second
		if strict {
			want = 90001 * time.Second / 90000
		}
		require.Equal(t, want, us[1].DTS, "strict %v", strict)
	}
}

func TestAACTimesEachAccessUnitOfAPacket(t *testing.T) {
	f := aacFormat()
	enc, err := f.CreateEncoder()
	require.NoError(t, err)
	pkts, err := enc.Encode([][]byte{{1, 2}, {3}, {4, 5, 6}})
	require.NoError(t, err)
	require.Len(t, pkts, 1)
	d, err := NewDecoder(f, 2)
	require.NoError(t, err)
	us, err := d.Decode(pkts[0], 48000)
	require.NoError(t, err)
	step := mpeg4audio.SamplesPerAccessUnit * time.Second / 48000
	require.Equal(t, []*media.Unit{
		{Track: 2, AU: []byte{1, 2}, PTS: time.Second, DTS: time.Second},
		{Track: 2, AU: []byte{3}, PTS: time.Second + step, DTS: time.Second + step},
		{Track: 2, AU: []byte{4, 5, 6}, PTS: time.Second + 2*step, DTS: time.Second + 2*step},
	}, us)
}

func TestOnPacketReportsSkipsAndStopsOnWriteError(t *testing.T) {
	f := aacFormat()
	enc, err := f.CreateEncoder()
	require.NoError(t, err)
	pkts, err := enc.Encode([][]byte{{1}, {2}})
	require.NoError(t, err)
	d, err := NewDecoder(f, 0)
	require.NoError(t, err)
	var skips []Skip
	var wrote int
	timed := true
	cb := d.OnPacket(func(*rtp.Packet) (int64, bool) { return 0, timed },
		func(*media.Unit) error { wrote++; return errStop },
		func(s Skip, _ error) { skips = append(skips, s) })
	cb(pkts[0])
	require.Equal(t, 1, wrote, "a write error drops the packet's other units")
	timed = false
	cb(pkts[0])
	timed = true
	cb(&rtp.Packet{Header: rtp.Header{PayloadType: 97}, Payload: []byte{0xff}})
	require.Equal(t, []Skip{SkipNoPTS, SkipNotDecoded}, skips)
}

var errStop = errorString("stop")

type errorString string

func (e errorString) Error() string { return string(e) }

func TestTracksMapsOneFormatPerMedia(t *testing.T) {
	desc := &description.Session{Medias: []*description.Media{
		{Type: description.MediaTypeApplication, Formats: []format.Format{&format.Generic{PayloadTyp: 100, RTPMa: "x/90000"}}},
		{Type: description.MediaTypeVideo, Formats: []format.Format{&format.VP8{PayloadTyp: 98}, h264Format(), &format.H265{PayloadTyp: 99}}},
		{Type: description.MediaTypeAudio, Formats: []format.Format{aacFormat()}},
	}}
	carried, err := Tracks(desc)
	require.NoError(t, err)
	require.Len(t, carried, 2)
	require.Equal(t, segment.Track{ID: 0, Codec: segment.CodecH264, Params: [][]byte{sps, pps}}, carried[0].Track)
	require.Same(t, desc.Medias[1], carried[0].Media)
	require.Equal(t, uint8(1), carried[1].Track.ID)
	require.Equal(t, segment.CodecAAC, carried[1].Track.Codec)

	for name, medias := range map[string][]*description.Media{
		"nothing carried":    {{Type: description.MediaTypeVideo, Formats: []format.Format{&format.VP8{PayloadTyp: 98}}}},
		"H264 without sets":  {{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{PayloadTyp: 96}}}},
		"AAC without config": {{Type: description.MediaTypeAudio, Formats: []format.Format{&format.MPEG4Audio{PayloadTyp: 97}}}},
	} {
		_, err := Tracks(&description.Session{Medias: medias})
		require.Error(t, err, name)
	}
	many := &description.Session{}
	for range segment.MaxTracks + 1 {
		many.Medias = append(many.Medias, &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{aacFormat()}})
	}
	_, err = Tracks(many)
	require.ErrorContains(t, err, "too many tracks")
}

func TestNewDecoderRefusesWhatItCannotDecode(t *testing.T) {
	_, err := NewDecoder(&format.VP8{PayloadTyp: 98}, 0)
	require.Error(t, err)
	_, err = NewDecoder(&format.H264{PayloadTyp: 96, PacketizationMode: 2}, 0)
	require.ErrorContains(t, err, "H264 decoder")
}

// FuzzDecode feeds RTP payloads (split at 0xff 0xfe) to an H.264 and an
// AAC decoder.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x65, 0x88, 0x84, 0xff, 0xfe, 0x41, 0x9a})
	f.Add([]byte{0x7c, 0x85, 0x88, 0xff, 0xfe, 0x7c, 0x45, 0x84})
	f.Add([]byte{0x00, 0x10, 0x00, 0x10, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		h, err := NewDecoder(h264Format(), 0)
		require.NoError(t, err)
		a, err := NewDecoder(aacFormat(), 1)
		require.NoError(t, err)
		var payloads [][]byte
		for start, i := 0, 0; i <= len(b); i++ {
			if i == len(b) || i+1 < len(b) && b[i] == 0xff && b[i+1] == 0xfe {
				payloads = append(payloads, b[start:i])
				start = i + 2
				i++
			}
		}
		for i, p := range payloads {
			pkt := &rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i), Timestamp: uint32(i * 3000), Marker: true}, Payload: p}
			for _, d := range []*Decoder{h, a} {
				us, err := d.Decode(pkt, int64(i)*3000)
				if err == nil {
					for _, u := range us {
						require.GreaterOrEqual(t, u.DTS, time.Duration(0))
					}
				}
			}
		}
	})
}
