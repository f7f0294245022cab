// Package localrtsp re-serves the stream a peer plays as local RTSP
// (rtsp://127.0.0.1:8555/live/KEY), so VLC, GStreamer and ffmpeg users
// keep their habits. A gortsplib server receives the feed's frames,
// packetises them with each format's RTP encoder, and writes them to each
// playing session from a key frame on (a session that joins mid-GOP, or
// lost packets, waits for the next key frame).
package localrtsp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/pion/rtp"

	"github.com/coopstreaming/coop/segment"
)

// DefaultWriteQueueSize is each session's packet queue: a whole segment
// arrives at once, so it is larger than gortsplib's default.
const DefaultWriteQueueSize = 4096

// Server is the local RTSP server. It implements feed.Sink.
type Server struct {
	// Address is the listen address, e.g. "127.0.0.1:8555".
	Address string
	// Path is the one path served, e.g. "live/KEY".
	Path string
	// WriteQueueSize is each session's packet queue (a power of two,
	// default DefaultWriteQueueSize).
	WriteQueueSize int
	// Log receives logs.
	Log *slog.Logger

	srv  *gortsplib.Server
	addr net.Addr

	mu       sync.Mutex // guards everything below
	ss       *gortsplib.ServerStream
	tracks   map[uint8]*trackOut
	hasVideo bool
	readers  map[*gortsplib.ServerSession]*reader
	start    time.Time
	written  uint64
}

type reader struct {
	started bool
	dropped uint64
}

// Start listens.
func (s *Server) Start() error {
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.WriteQueueSize <= 0 {
		s.WriteQueueSize = DefaultWriteQueueSize
	}
	s.readers = make(map[*gortsplib.ServerSession]*reader)
	s.srv = &gortsplib.Server{
		Handler: s, RTSPAddress: s.Address, WriteQueueSize: s.WriteQueueSize,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err == nil {
				s.addr = ln.Addr() // the bound port, when Address asks for port 0
			}
			return ln, err
		},
	}
	if err := s.srv.Start(); err != nil {
		return fmt.Errorf("local rtsp on %s: %w", s.Address, err)
	}
	return nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.addr.String() }

// URL is the address players open.
func (s *Server) URL() string { return "rtsp://" + s.Addr() + "/" + s.Path }

// Close stops the server.
func (s *Server) Close() {
	s.srv.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ss != nil {
		s.ss.Close()
		s.ss = nil
	}
}

// Readers returns the playing sessions.
func (s *Server) Readers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.readers)
}

// SetHeader (re)creates the served stream for the tracks of h.
func (s *Server) SetHeader(h segment.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tracks := make(map[uint8]*trackOut)
	desc := &description.Session{}
	hasVideo := false
	for _, t := range h.Tracks {
		o, err := newTrackOut(t)
		if err != nil {
			s.Log.Warn("local RTSP: track not served", "track", t.ID, "err", err)
			continue
		}
		tracks[t.ID] = o
		desc.Medias = append(desc.Medias, o.medi)
		hasVideo = hasVideo || t.Codec.IsVideo()
	}
	if s.ss != nil {
		s.ss.Close() // its sessions end; players reconnect to the new one
		s.readers = make(map[*gortsplib.ServerSession]*reader)
	}
	s.ss = nil
	if len(desc.Medias) == 0 {
		return
	}
	ss := &gortsplib.ServerStream{Server: s.srv, Desc: desc}
	if err := ss.Initialize(); err != nil {
		s.Log.Warn("local RTSP stream", "err", err)
		return
	}
	s.ss, s.tracks, s.hasVideo = ss, tracks, hasVideo
}

// WriteFrames sends one segment's frames to the playing sessions.
func (s *Server) WriteFrames(frames []segment.Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ss == nil {
		return
	}
	for _, f := range frames {
		o := s.tracks[f.Track]
		if o == nil {
			continue
		}
		pkts, err := o.packets(f)
		if err != nil {
			s.Log.Debug("local RTSP: frame not packetised", "err", err)
			continue
		}
		isVideo := o.codec.IsVideo()
		for session, r := range s.readers {
			if !r.started {
				if (isVideo && !f.Key) || (!isVideo && s.hasVideo) {
					continue
				}
				r.started = true
			}
			for _, p := range pkts {
				if err := session.WritePacketRTP(o.medi, p); err != nil {
					r.dropped++
					if isVideo {
						r.started = false
					}
				}
			}
		}
		s.written++
	}
}

func cleanPath(p string) string { return strings.Trim(p, "/") }

func (s *Server) stream(path string) (*gortsplib.ServerStream, *base.Response) {
	if cleanPath(path) != s.Path {
		return nil, &base.Response{StatusCode: base.StatusNotFound}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ss == nil {
		return nil, &base.Response{StatusCode: base.StatusNotFound}
	}
	return s.ss, &base.Response{StatusCode: base.StatusOK}
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (s *Server) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	ss, res := s.stream(ctx.Path)
	return res, ss, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (s *Server) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	ss, res := s.stream(ctx.Path)
	return res, ss, nil
}

// OnAnnounce implements gortsplib.ServerHandlerOnAnnounce: publishing to a
// peer is refused.
func (s *Server) OnAnnounce(*gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusForbidden}, errors.New("coop-peer serves playback only")
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (s *Server) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ss == nil || ctx.Session.SetuppedStream() != s.ss {
		return &base.Response{StatusCode: base.StatusNotFound}, errors.New("the stream changed since SETUP")
	}
	s.readers[ctx.Session] = &reader{}
	s.Log.Info("local RTSP player connected", "remote", ctx.Conn.NetConn().RemoteAddr().String())
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose.
func (s *Server) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.readers[ctx.Session]; ok {
		delete(s.readers, ctx.Session)
		s.Log.Info("local RTSP player left", "droppedPackets", r.dropped)
	}
}

// trackOut packetises one track.
type trackOut struct {
	codec     segment.Codec
	medi      *description.Media
	clockRate int
	encode    func(f segment.Frame) ([]*rtp.Packet, error)
}

func newTrackOut(t segment.Track) (*trackOut, error) {
	o := &trackOut{codec: t.Codec}
	video := func(params [][]byte, enc func([][]byte) ([]*rtp.Packet, error)) func(segment.Frame) ([]*rtp.Packet, error) {
		return func(f segment.Frame) ([]*rtp.Packet, error) {
			var au h264.AVCC
			if err := au.Unmarshal(f.Payload); err != nil {
				return nil, err
			}
			nalus := [][]byte(au)
			if f.Key {
				nalus = append(append([][]byte{}, params...), nalus...)
			}
			return enc(nalus)
		}
	}
	switch t.Codec {
	case segment.CodecH264:
		if len(t.Params) < 2 {
			return nil, errors.New("H264 without SPS and PPS")
		}
		f := &format.H264{PayloadTyp: 96, PacketizationMode: 1, SPS: t.Params[0], PPS: t.Params[1]}
		enc, err := f.CreateEncoder()
		if err != nil {
			return nil, err
		}
		o.medi = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{f}}
		o.clockRate = f.ClockRate()
		o.encode = video(t.Params[:2], enc.Encode)
	case segment.CodecH265:
		if len(t.Params) < 3 {
			return nil, errors.New("H265 without VPS, SPS and PPS")
		}
		f := &format.H265{PayloadTyp: 96, VPS: t.Params[0], SPS: t.Params[1], PPS: t.Params[2]}
		enc, err := f.CreateEncoder()
		if err != nil {
			return nil, err
		}
		o.medi = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{f}}
		o.clockRate = f.ClockRate()
		o.encode = video(t.Params[:3], enc.Encode)
	case segment.CodecAAC:
		if len(t.Params) < 1 {
			return nil, errors.New("AAC without AudioSpecificConfig")
		}
		var conf mpeg4audio.AudioSpecificConfig
		if err := conf.Unmarshal(t.Params[0]); err != nil {
			return nil, fmt.Errorf("AAC config: %w", err)
		}
		f := &format.MPEG4Audio{PayloadTyp: 97, Config: &conf, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
		enc, err := f.CreateEncoder()
		if err != nil {
			return nil, err
		}
		o.medi = &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{f}}
		o.clockRate = f.ClockRate()
		o.encode = func(fr segment.Frame) ([]*rtp.Packet, error) { return enc.Encode([][]byte{fr.Payload}) }
	default:
		return nil, fmt.Errorf("codec %v not supported", t.Codec)
	}
	return o, nil
}

// packets encodes f and stamps the packets with the RTP time of its PTS.
func (o *trackOut) packets(f segment.Frame) ([]*rtp.Packet, error) {
	pkts, err := o.encode(f)
	if err != nil {
		return nil, err
	}
	ts := uint32(f.PTS * int64(o.clockRate) / segment.Timebase)
	for _, p := range pkts {
		p.Timestamp += ts
	}
	return pkts, nil
}
