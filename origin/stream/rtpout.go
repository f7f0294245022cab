package stream

import (
	"fmt"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/segment"
)

// trackOut packetises one track's units into RTP for the RTSP readers.
type trackOut struct {
	codec     segment.Codec
	medi      *description.Media
	clockRate int
	encode    func(u *media.Unit) ([]*rtp.Packet, error)
	setParams func(params [][]byte)
}

func newTrackOut(t segment.Track) (*trackOut, error) {
	out := &trackOut{codec: t.Codec}
	switch t.Codec {
	case segment.CodecH264:
		if len(t.Params) < 2 {
			return nil, fmt.Errorf("H264 track %d without SPS and PPS", t.ID)
		}
		f := &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: t.Params[0], PPS: t.Params[1]}
		enc, err := f.CreateEncoder()
		if err != nil {
			return nil, fmt.Errorf("H264 encoder: %w", err)
		}
		out.medi = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{f}}
		out.clockRate = f.ClockRate()
		out.setParams = func(p [][]byte) { f.SafeSetParams(p[0], p[1]) }
		out.encode = func(u *media.Unit) ([]*rtp.Packet, error) {
			nalus := u.NALUs
			if u.Key {
				sps, pps := f.SafeParams()
				nalus = append([][]byte{sps, pps}, nalus...)
			}
			return enc.Encode(nalus)
		}
	case segment.CodecH265:
		if len(t.Params) < 3 {
			return nil, fmt.Errorf("H265 track %d without VPS, SPS and PPS", t.ID)
		}
		f := &format.H265{PayloadTyp: 96, VPS: t.Params[0], SPS: t.Params[1], PPS: t.Params[2]}
		enc, err := f.CreateEncoder()
		if err != nil {
			return nil, fmt.Errorf("H265 encoder: %w", err)
		}
		out.medi = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{f}}
		out.clockRate = f.ClockRate()
		out.setParams = func(p [][]byte) { f.SafeSetParams(p[0], p[1], p[2]) }
		out.encode = func(u *media.Unit) ([]*rtp.Packet, error) {
			nalus := u.NALUs
			if u.Key {
				vps, sps, pps := f.SafeParams()
				nalus = append([][]byte{vps, sps, pps}, nalus...)
			}
			return enc.Encode(nalus)
		}
	case segment.CodecAAC:
		if len(t.Params) < 1 {
			return nil, fmt.Errorf("AAC track %d without AudioSpecificConfig", t.ID)
		}
		var conf mpeg4audio.AudioSpecificConfig
		if err := conf.Unmarshal(t.Params[0]); err != nil {
			return nil, fmt.Errorf("AAC config: %w", err)
		}
		f := &format.MPEG4Audio{PayloadTyp: 97, Config: &conf, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
		enc, err := f.CreateEncoder()
		if err != nil {
			return nil, fmt.Errorf("AAC encoder: %w", err)
		}
		out.medi = &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{f}}
		out.clockRate = f.ClockRate()
		out.setParams = func([][]byte) {}
		out.encode = func(u *media.Unit) ([]*rtp.Packet, error) { return enc.Encode([][]byte{u.AU}) }
	default:
		return nil, fmt.Errorf("codec %v not supported", t.Codec)
	}
	return out, nil
}

// packets encodes u and stamps the packets with the RTP time of pts.
func (o *trackOut) packets(u *media.Unit, pts time.Duration) ([]*rtp.Packet, error) {
	pkts, err := o.encode(u)
	if err != nil {
		return nil, err
	}
	ts := uint32(int64(pts) * int64(o.clockRate) / int64(time.Second))
	for _, p := range pkts {
		p.Timestamp += ts
	}
	return pkts, nil
}

// compatible tells whether a republish with tracks b can continue a stream
// whose readers were set up for tracks a.
func compatible(a, b []segment.Track) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Codec != b[i].Codec {
			return false
		}
	}
	return true
}
