// Package rtpunits turns the RTP packets of an RTSP session (a recording
// publisher or a pulled upstream) into units: it maps the announced
// formats to stream tracks (H.264, H.265, AAC; one format per media) and
// holds each format's depacketizer and timestamp rules.
package rtpunits

import (
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/segment"
)

// TrackOf maps a format to a stream track with ID id; ok is false for
// formats the origin does not carry.
func TrackOf(f format.Format, id int) (t segment.Track, ok bool, err error) {
	t = segment.Track{ID: uint8(id)}
	switch f := f.(type) {
	case *format.H264:
		sps, pps := f.SafeParams()
		if sps == nil || pps == nil {
			return t, false, errors.New("H264 without sprop-parameter-sets is not supported")
		}
		t.Codec, t.Params = segment.CodecH264, [][]byte{sps, pps}
	case *format.H265:
		vps, sps, pps := f.SafeParams()
		if vps == nil || sps == nil || pps == nil {
			return t, false, errors.New("H265 without sprop-vps/sps/pps is not supported")
		}
		t.Codec, t.Params = segment.CodecH265, [][]byte{vps, sps, pps}
	case *format.MPEG4Audio:
		if f.Config == nil {
			return t, false, errors.New("AAC without config")
		}
		asc, err := f.Config.Marshal()
		if err != nil {
			return t, false, fmt.Errorf("AAC config: %w", err)
		}
		t.Codec, t.Params = segment.CodecAAC, [][]byte{asc}
	default:
		return t, false, nil
	}
	return t, true, nil
}

// Carried is one announced format the origin carries, and its track.
type Carried struct {
	Media  *description.Media
	Format format.Format
	Track  segment.Track
}

// Tracks picks, in media order, the first carried format of each media;
// the track IDs follow that order. It fails on a carried format it cannot
// describe, on more than segment.MaxTracks, and when nothing is carried.
func Tracks(desc *description.Session) ([]Carried, error) {
	var out []Carried
	for _, medi := range desc.Medias {
		for _, f := range medi.Formats {
			t, ok, err := TrackOf(f, len(out))
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			if len(out) == segment.MaxTracks {
				return nil, errors.New("too many tracks")
			}
			out = append(out, Carried{Media: medi, Format: f, Track: t})
			break // one format per media
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no H264, H265 or AAC track")
	}
	return out, nil
}

// Decoder turns one format's RTP packets into the units of one track. It
// is not safe for concurrent use (gortsplib calls a format's packet
// callback from one goroutine).
type Decoder struct {
	// StrictDTS also replaces a DTS the extractor returns that is not
	// after the previous one (the extractor itself refuses only a DTS
	// before it). The RTSP puller sets it; RTSP record does not.
	StrictDTS bool

	decode func(pkt *rtp.Packet, pts int64) ([]*media.Unit, error)
}

// NewDecoder returns the decoder of format f for the units of track.
func NewDecoder(f format.Format, track int) (*Decoder, error) {
	cr := f.ClockRate()
	d := &Decoder{}
	switch f := f.(type) {
	case *format.H264:
		rd, err := f.CreateDecoder()
		if err != nil {
			return nil, fmt.Errorf("H264 decoder: %w", err)
		}
		d.decode = d.video(track, cr, rd.Decode, h264.IsRandomAccess,
			func() [][]byte { sps, pps := f.SafeParams(); return [][]byte{sps, pps} },
			func() dtsExtractor { x := &h264.DTSExtractor{}; x.Initialize(); return x })
	case *format.H265:
		rd, err := f.CreateDecoder()
		if err != nil {
			return nil, fmt.Errorf("H265 decoder: %w", err)
		}
		d.decode = d.video(track, cr, rd.Decode, h265.IsRandomAccess,
			func() [][]byte { vps, sps, pps := f.SafeParams(); return [][]byte{vps, sps, pps} },
			func() dtsExtractor { x := &h265.DTSExtractor{}; x.Initialize(); return x })
	case *format.MPEG4Audio:
		rd, err := f.CreateDecoder()
		if err != nil {
			return nil, fmt.Errorf("AAC decoder: %w", err)
		}
		d.decode = func(pkt *rtp.Packet, pts int64) ([]*media.Unit, error) {
			aus, err := rd.Decode(pkt)
			if err != nil || len(aus) == 0 {
				return nil, err
			}
			units := make([]*media.Unit, len(aus))
			for i, au := range aus {
				t := ticks(pts+int64(i)*mpeg4audio.SamplesPerAccessUnit, cr)
				units[i] = &media.Unit{Track: track, AU: au, PTS: t, DTS: t}
			}
			return units, nil
		}
	default:
		return nil, fmt.Errorf("format %T not supported", f)
	}
	return d, nil
}

// Decode turns one packet with its PTS (in clock-rate ticks, gortsplib's
// PacketPTS2) into the units it completes: none while an access unit is
// partial or before the first random-access video unit.
func (d *Decoder) Decode(pkt *rtp.Packet, pts int64) ([]*media.Unit, error) {
	return d.decode(pkt, pts)
}

// Skip says why a packet gave no units.
type Skip int

// Reasons a packet gave no units.
const (
	// SkipNoPTS: the packet could not be timed (no RTCP sender report
	// yet, or gortsplib cannot place it).
	SkipNoPTS Skip = iota + 1
	// SkipNotDecoded: the depacketizer refused the packet (a partial
	// access unit, a loss, bad payload).
	SkipNotDecoded
)

// OnPacket returns the callback for gortsplib's OnPacketRTP: it times
// each packet with pts, decodes it and hands the units to write; a write
// error drops the packet's remaining units. skip, when set, hears of
// packets that gave no units for a reason (the caller logs).
func (d *Decoder) OnPacket(pts func(*rtp.Packet) (int64, bool), write func(*media.Unit) error,
	skip func(Skip, error),
) func(*rtp.Packet) {
	return func(pkt *rtp.Packet) {
		t, ok := pts(pkt)
		if !ok {
			if skip != nil {
				skip(SkipNoPTS, nil)
			}
			return
		}
		units, err := d.decode(pkt, t)
		if err != nil {
			if skip != nil {
				skip(SkipNotDecoded, err)
			}
			return
		}
		for _, u := range units {
			if err := write(u); err != nil {
				return
			}
		}
	}
}

func ticks(t int64, clockRate int) time.Duration {
	return time.Duration(t) * time.Second / time.Duration(clockRate)
}

// dtsExtractor is what mediacommon's H.264 and H.265 DTS extractors share.
type dtsExtractor interface {
	Extract(au [][]byte, pts int64) (int64, error)
}

// video turns RTP packets of one video format into units: it waits for
// the first random-access unit and derives each unit's DTS.
func (d *Decoder) video(track, clockRate int, decode func(*rtp.Packet) ([][]byte, error),
	isRAP func([][]byte) bool, params func() [][]byte, newExtractor func() dtsExtractor,
) func(*rtp.Packet, int64) ([]*media.Unit, error) {
	var dtsx dtsExtractor
	var prevDTS int64
	return func(pkt *rtp.Packet, pts int64) ([]*media.Unit, error) {
		au, err := decode(pkt)
		if err != nil {
			return nil, err
		}
		key := isRAP(au)
		if dtsx == nil {
			if !key {
				return nil, nil // wait for a key frame
			}
			dtsx = newExtractor()
		}
		probe := au
		if key {
			// The DTS extractor reads the parameter sets in-band;
			// publishers that send them only in the SDP get them prepended.
			probe = append(params(), au...)
		}
		dts, err := dtsx.Extract(probe, pts)
		if err != nil || d.StrictDTS && dts <= prevDTS && prevDTS != 0 {
			// The extractor cannot follow every reference structure
			// (x265 temporal layers): keep the frame with a DTS that is
			// monotonic and not after its PTS.
			dts = min(prevDTS+1, pts)
			if dts <= prevDTS {
				dts = prevDTS + 1
			}
		}
		prevDTS = dts
		return []*media.Unit{{Track: track, NALUs: au, Key: key,
			PTS: ticks(pts, clockRate), DTS: ticks(dts, clockRate)}}, nil
	}
}
