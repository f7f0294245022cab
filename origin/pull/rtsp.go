package pull

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/segment"
)

// pullRTSP reads an RTSP upstream with gortsplib's client until it fails.
func pullRTSP(ctx context.Context, u *url.URL, transport string, timeout time.Duration, pub *publisher) error {
	bu, err := base.ParseURL(u.String())
	if err != nil {
		return fmt.Errorf("rtsp url: %w", err)
	}
	c := &gortsplib.Client{Scheme: bu.Scheme, Host: bu.Host, ReadTimeout: timeout, WriteTimeout: timeout}
	switch transport {
	case "udp":
		t := gortsplib.TransportUDP
		c.Transport = &t
	case "tcp":
		t := gortsplib.TransportTCP
		c.Transport = &t
	}
	if err := c.Start2(); err != nil {
		return fmt.Errorf("rtsp connect: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()
	desc, _, err := c.Describe(bu)
	if err != nil {
		return fmt.Errorf("rtsp describe: %w", err)
	}
	var tracks []segment.Track
	type wired struct {
		medi *description.Media
		f    format.Format
		dec  *depacketizer
	}
	var ws []wired
	for _, medi := range desc.Medias {
		for _, f := range medi.Formats {
			t, ok, err := trackOf(f, len(tracks))
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			dec, err := newDepacketizer(f, len(tracks))
			if err != nil {
				return err
			}
			if len(tracks) == segment.MaxTracks {
				return errors.New("rtsp: too many tracks")
			}
			tracks = append(tracks, t)
			ws = append(ws, wired{medi: medi, f: f, dec: dec})
			break // one format per media
		}
	}
	if len(tracks) == 0 {
		return errors.New("rtsp: upstream has no H264, H265 or AAC track")
	}
	for _, w := range ws {
		if _, err := c.Setup(desc.BaseURL, w.medi, 0, 0); err != nil {
			return fmt.Errorf("rtsp setup: %w", err)
		}
	}
	failed := make(chan error, 1)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	if err := pub.start(tracks); err != nil {
		return err
	}
	for _, w := range ws {
		c.OnPacketRTP(w.medi, w.f, func(pkt *rtp.Packet) {
			pts, ok := c.PacketPTS2(w.medi, pkt)
			if !ok {
				return
			}
			units, err := w.dec.decode(pkt, pts)
			if err != nil {
				return // partial access units and losses: wait for the next
			}
			for _, un := range units {
				if err := pub.write(un); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	if _, err := c.Play(nil); err != nil {
		return fmt.Errorf("rtsp play: %w", err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- c.Wait() }()
	select {
	case err := <-waitErr:
		return fmt.Errorf("rtsp: %w", err)
	case err := <-failed:
		return err
	case <-pub.done():
		return errors.New("another publisher took the path over")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trackOf maps a format to a stream track; ok is false for formats the
// origin does not carry.
func trackOf(f format.Format, id int) (segment.Track, bool, error) {
	t := segment.Track{ID: uint8(id)}
	switch f := f.(type) {
	case *format.H264:
		sps, pps := f.SafeParams()
		if sps == nil || pps == nil {
			return t, false, errors.New("rtsp: H264 without sprop-parameter-sets is not supported")
		}
		t.Codec, t.Params = segment.CodecH264, [][]byte{sps, pps}
	case *format.H265:
		vps, sps, pps := f.SafeParams()
		if vps == nil || sps == nil || pps == nil {
			return t, false, errors.New("rtsp: H265 without sprop-vps/sps/pps is not supported")
		}
		t.Codec, t.Params = segment.CodecH265, [][]byte{vps, sps, pps}
	case *format.MPEG4Audio:
		if f.Config == nil {
			return t, false, errors.New("rtsp: AAC without config")
		}
		asc, err := f.Config.Marshal()
		if err != nil {
			return t, false, fmt.Errorf("rtsp: AAC config: %w", err)
		}
		t.Codec, t.Params = segment.CodecAAC, [][]byte{asc}
	default:
		return t, false, nil
	}
	return t, true, nil
}

// depacketizer turns one format's RTP packets into units.
type depacketizer struct {
	decode func(pkt *rtp.Packet, pts int64) ([]*media.Unit, error)
}

func ticks(t int64, clockRate int) time.Duration {
	return time.Duration(t) * time.Second / time.Duration(clockRate)
}

type dtsExtractor interface {
	Extract(au [][]byte, pts int64) (int64, error)
}

// videoDecoder waits for the first random-access unit and derives DTS.
func videoDecoder(track, clockRate int, decode func(*rtp.Packet) ([][]byte, error),
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
				return nil, nil
			}
			dtsx = newExtractor()
		}
		probe := au
		if key {
			probe = append(params(), au...)
		}
		dts, err := dtsx.Extract(probe, pts)
		if err != nil || dts <= prevDTS && prevDTS != 0 {
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

func newDepacketizer(f format.Format, track int) (*depacketizer, error) {
	cr := f.ClockRate()
	d := &depacketizer{}
	switch f := f.(type) {
	case *format.H264:
		rd, err := f.CreateDecoder()
		if err != nil {
			return nil, fmt.Errorf("H264 decoder: %w", err)
		}
		d.decode = videoDecoder(track, cr, rd.Decode, h264.IsRandomAccess,
			func() [][]byte { sps, pps := f.SafeParams(); return [][]byte{sps, pps} },
			func() dtsExtractor { x := &h264.DTSExtractor{}; x.Initialize(); return x })
	case *format.H265:
		rd, err := f.CreateDecoder()
		if err != nil {
			return nil, fmt.Errorf("H265 decoder: %w", err)
		}
		d.decode = videoDecoder(track, cr, rd.Decode, h265.IsRandomAccess,
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
