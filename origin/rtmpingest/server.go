// Package rtmpingest accepts RTMP publishers (OBS, ffmpeg -f flv) with
// go-rtmp behind the rtmpguard framer: H.264 and AAC, and H.265 by
// Enhanced RTMP. It turns FLV tags into units for the stream registry.
package rtmpingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	rtmp "github.com/yutopp/go-rtmp"
	rtmpmsg "github.com/yutopp/go-rtmp/message"

	"github.com/coopstreaming/coop/origin/auth"
	"github.com/coopstreaming/coop/origin/flvunits"
	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/origin/netguard"
	"github.com/coopstreaming/coop/origin/ratelog"
	"github.com/coopstreaming/coop/origin/rtmpguard"
	"github.com/coopstreaming/coop/origin/stream"
	"github.com/coopstreaming/coop/segment"
)

// Server is the RTMP ingest server.
type Server struct {
	// Address is the listen address (default ":1935").
	Address string
	// Timeout closes idle and half-open connections (default 10s).
	Timeout time.Duration
	// Limits bounds what the guard lets through.
	Limits rtmpguard.Limits
	// MaxConns caps the open RTMP connections (0: no cap).
	MaxConns int
	// Throttle refuses remote IPs that keep trying wrong stream keys
	// (default: a Throttle with its defaults).
	Throttle *auth.Throttle
	// TrackWait is how long to wait for the sequence headers of all
	// tracks before starting with those seen (default 2s).
	TrackWait time.Duration
	// Streams is the stream registry.
	Streams *stream.Manager
	// Auth checks publishers.
	Auth *auth.Checker
	// Log receives logs.
	Log *slog.Logger
	// Metrics receives counters (optional).
	Metrics *stream.Metrics

	ln   net.Listener
	srv  *rtmp.Server
	wg   sync.WaitGroup
	warn ratelog.Limiter
	// mu guards conns and closed.
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// Start listens and serves in the background.
func (s *Server) Start() error {
	if s.Address == "" {
		s.Address = ":1935"
	}
	if s.Timeout <= 0 {
		s.Timeout = 10 * time.Second
	}
	if s.TrackWait <= 0 {
		s.TrackWait = flvunits.DefaultTrackWait
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.Throttle == nil {
		s.Throttle = &auth.Throttle{}
	}
	s.conns = make(map[net.Conn]struct{})
	tcp, err := net.Listen("tcp", s.Address)
	if err != nil {
		return fmt.Errorf("rtmp listen on %s: %w", s.Address, err)
	}
	// go-rtmp's accept loop spins on errors: the guard backs off instead
	// (out of file descriptors) and caps the connections.
	ln := &netguard.Listener{Listener: tcp, Name: "rtmp", MaxConns: s.MaxConns, Log: s.Log,
		OnReject: func(reason string) { s.Metrics.Reject("rtmp", reason) }}
	s.ln = ln
	quiet := logrus.New()
	quiet.Out = io.Discard
	lim := s.Limits.WithDefaults()
	s.srv = rtmp.NewServer(&rtmp.ServerConfig{
		OnConnect: func(conn net.Conn) (io.ReadWriteCloser, *rtmp.ConnConfig) {
			remote := conn.RemoteAddr().String()
			g := rtmpguard.NewConn(conn, lim, s.Timeout)
			g.OnReject = func(err error) {
				s.warn.Warn(s.Log, "RTMP connection dropped by guard", "remote", remote, "err", err)
				s.Metrics.Reject("rtmp", "guard")
			}
			s.track(conn, true)
			h := &handler{s: s, remote: remote, conn: conn}
			h.conv = flvunits.Converter{Sink: h, TrackWait: s.TrackWait, OnSkip: h.onSkip}
			return &trackedConn{Conn: g, done: func() { s.track(conn, false); h.close() }}, &rtmp.ConnConfig{
				Handler: h,
				ControlState: rtmp.StreamControlStateConfig{
					MaxChunkSize:      uint32(lim.MaxChunkSize),
					MaxChunkStreams:   lim.MaxChunkStreams,
					MaxMessageStreams: 8,
					MaxMessageSize:    uint32(lim.MaxMessageSize),
				},
				Logger: quiet,
			}
		},
	})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(ln)
	}()
	s.Log.Info("RTMP listening", "address", ln.Addr().String())
	return nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

// Close stops listening and closes every connection.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
	}
	// go-rtmp closes only a listener its Serve has registered: a Close
	// that comes first (an Initialize failing right after Start) would
	// leave Serve blocked in Accept and this Wait forever.
	if s.ln != nil {
		_ = s.ln.Close()
	}
	s.wg.Wait()
}

// trackedConn runs done once when the library closes the connection.
type trackedConn struct {
	*rtmpguard.Conn
	once sync.Once
	done func()
}

func (c *trackedConn) Close() error {
	c.once.Do(c.done)
	return c.Conn.Close()
}

// handler is one RTMP connection.
type handler struct {
	rtmp.DefaultHandler
	s      *Server
	remote string
	conn   net.Conn

	// mu guards app, path, pub, closed and conv (go-rtmp's callbacks and
	// the close on disconnect).
	mu     sync.Mutex
	app    string
	path   string
	pub    *stream.Publication
	closed bool
	// conv turns the publisher's tags into units for pub.
	conv flvunits.Converter
}

func (h *handler) OnConnect(_ uint32, cmd *rtmpmsg.NetConnectionConnect) error {
	h.app = strings.Trim(cmd.Command.App, "/")
	return nil
}

func (h *handler) OnPlay(_ *rtmp.StreamContext, _ uint32, _ *rtmpmsg.NetStreamPlay) error {
	return errors.New("RTMP playback is not offered: play over RTSP")
}

// OnPublish checks the key and reserves the path; an error here makes
// go-rtmp answer NetStream.Publish.Failed, which stops OBS retrying.
func (h *handler) OnPublish(_ *rtmp.StreamContext, _ uint32, cmd *rtmpmsg.NetStreamPublish) error {
	key := cmd.PublishingName
	if i := strings.IndexByte(key, '?'); i >= 0 {
		key = key[:i]
	}
	if key == "" || strings.Contains(key, "/") {
		return fmt.Errorf("invalid stream key %q", key)
	}
	path := key
	if h.app != "" {
		path = h.app + "/" + key
	}
	ip := auth.HostOf(h.remote)
	if h.s.Throttle.Blocked(ip) {
		h.s.Metrics.Reject("rtmp", "auth_throttled")
		h.s.warn.Warn(h.s.Log, "RTMP publish refused: too many failed attempts from this address", "remote", h.remote)
		return errors.New("too many failed attempts")
	}
	err := h.s.Auth.Check(context.Background(), auth.Request{Action: "publish", Protocol: "rtmp", Path: path, Key: key, Remote: h.remote})
	if err != nil {
		h.s.warn.Warn(h.s.Log, "RTMP publish refused", "path", path, "remote", h.remote, "err", err)
		h.s.Metrics.Reject("rtmp", "auth")
		if errors.Is(err, auth.ErrDenied) {
			h.s.Throttle.Fail(ip)
		}
		return err
	}
	pub, err := h.s.Streams.Publish(path, stream.PublisherInfo{Protocol: "rtmp", Remote: h.remote, Kick: func() { h.conn.Close() }})
	if err != nil {
		h.s.warn.Warn(h.s.Log, "RTMP publish refused", "path", path, "remote", h.remote, "err", err)
		h.s.Metrics.Reject("rtmp", stream.RejectReason(err))
		return err
	}
	h.mu.Lock()
	h.path, h.pub = path, pub
	h.mu.Unlock()
	return nil
}

func (h *handler) OnVideo(timestamp uint32, payload io.Reader) error {
	body, err := flvunits.ReadTag(payload)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pub == nil {
		return nil
	}
	return h.conv.Video(timestamp, body)
}

func (h *handler) OnAudio(timestamp uint32, payload io.Reader) error {
	body, err := flvunits.ReadTag(payload)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pub == nil {
		return nil
	}
	return h.conv.Audio(timestamp, body)
}

// onSkip logs a tag the converter passed over: bad configuration records
// at a bounded rate, the rest at debug level.
func (h *handler) onSkip(what flvunits.Skip, err error) {
	switch what {
	case flvunits.SkipVideoTag:
		h.s.Log.Debug("RTMP video tag skipped", "remote", h.remote, "err", err)
	case flvunits.SkipAudioTag:
		h.s.Log.Debug("RTMP audio tag skipped", "remote", h.remote, "err", err)
	case flvunits.SkipAVCConfig:
		h.s.warn.Warn(h.s.Log, "RTMP bad AVC configuration", "remote", h.remote, "err", err)
	case flvunits.SkipHEVCConfig:
		h.s.warn.Warn(h.s.Log, "RTMP bad HEVC configuration", "remote", h.remote, "err", err)
	case flvunits.SkipFrame:
		h.s.Log.Debug("RTMP bad AVCC frame", "remote", h.remote, "err", err)
	}
}

// Start implements flvunits.Sink.
func (h *handler) Start(tracks []segment.Track) error {
	if err := h.pub.SetTracks(tracks); err != nil {
		return fmt.Errorf("start %s: %w", h.path, err)
	}
	return nil
}

// Write implements flvunits.Sink: a unit the publication refuses is
// dropped, only a replaced publication ends the session.
func (h *handler) Write(u *media.Unit) error {
	if err := h.pub.Write(u); err != nil {
		if errors.Is(err, stream.ErrReplaced) {
			return err
		}
		h.s.Log.Debug("RTMP unit dropped", "path", h.path, "err", err)
	}
	return nil
}

func (h *handler) OnClose() { h.close() }

func (h *handler) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	if h.pub != nil {
		h.pub.Close()
		h.s.Log.Info("RTMP publisher disconnected", "path", h.path, "remote", h.remote)
	}
}
