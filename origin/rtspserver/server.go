// Package rtspserver is the origin's RTSP side: publishers (ANNOUNCE/RECORD
// of H.264, H.265 and AAC) and readers (DESCRIBE/SETUP/PLAY over TCP and
// UDP) of any live stream, whichever protocol it came in by.
package rtspserver

import (
	"context"
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
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"

	"github.com/coopstreaming/coop/origin/auth"
	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/origin/netguard"
	"github.com/coopstreaming/coop/origin/ratelog"
	"github.com/coopstreaming/coop/origin/rtpunits"
	"github.com/coopstreaming/coop/origin/stream"
	"github.com/coopstreaming/coop/segment"
)

// Server is the RTSP server.
type Server struct {
	// Address is the RTSP listen address (default ":8554").
	Address string
	// UDPRTPAddress and UDPRTCPAddress enable the UDP transport when set.
	UDPRTPAddress, UDPRTCPAddress string
	// Timeout bounds reads and writes (default 10s). A connection that is
	// not playing or recording must send a complete request within it.
	Timeout time.Duration
	// MaxConns caps the open RTSP connections, and so the sessions (0: no
	// cap); each session needs a connection.
	MaxConns int
	// WriteQueueSize is each reader's packet queue (default 512).
	WriteQueueSize int
	// Streams is the stream registry.
	Streams *stream.Manager
	// Auth checks publishers.
	Auth *auth.Checker
	// ReadUser and ReadPass, when set, protect reading.
	ReadUser, ReadPass string
	// Throttle refuses remote IPs that keep failing authentication
	// (default: a Throttle with its defaults).
	Throttle *auth.Throttle
	// Log receives logs.
	Log *slog.Logger
	// Metrics receives counters (optional).
	Metrics *stream.Metrics
	// Redirect, when set, is asked at each DESCRIBE of an existing
	// stream (after the read credentials are checked) whether another
	// node should serve the reader: it returns that node's RTSP address
	// (host:port) or "" to serve it here. A redirected reader gets a 302
	// Found naming the same path and query on that node; clients that
	// follow it (ffmpeg and ffprobe do) read from there.
	Redirect func(r RedirectRequest) string

	srv  *gortsplib.Server
	ln   *netguard.Listener
	warn ratelog.Limiter

	// mu guards readers.
	mu      sync.Mutex
	readers map[*gortsplib.ServerSession]*Reader
}

// Reader is a playing RTSP session, for the API.
type Reader struct {
	Path      string    `json:"path"`
	Remote    string    `json:"remote"`
	Transport string    `json:"transport"`
	Started   time.Time `json:"started"`
	Dropped   uint64    `json:"droppedPackets"`
	BytesSent uint64    `json:"bytesSent"`
	session   *gortsplib.ServerSession
	// conn is the control connection that sent PLAY.
	conn *gortsplib.ServerConn
}

// publisher is the state of a publishing session.
type publisher struct {
	pub *stream.Publication
}

// Initialize creates the gortsplib server (Start listens).
func (s *Server) Initialize() *gortsplib.Server {
	if s.Address == "" {
		s.Address = ":8554"
	}
	if s.Timeout <= 0 {
		s.Timeout = 10 * time.Second
	}
	if s.WriteQueueSize <= 0 {
		s.WriteQueueSize = 512
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.Throttle == nil {
		s.Throttle = &auth.Throttle{}
	}
	s.readers = make(map[*gortsplib.ServerSession]*Reader)
	s.srv = &gortsplib.Server{
		Listen:         s.listen,
		Handler:        s,
		RTSPAddress:    s.Address,
		UDPRTPAddress:  s.UDPRTPAddress,
		UDPRTCPAddress: s.UDPRTCPAddress,
		ReadTimeout:    s.Timeout,
		WriteTimeout:   s.Timeout,
		WriteQueueSize: s.WriteQueueSize,
	}
	return s.srv
}

// listen is gortsplib's listener hook: the RTSP port survives running out
// of file descriptors, caps connections and closes idle ones.
func (s *Server) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	s.ln = &netguard.Listener{
		Listener: ln, Name: "rtsp", MaxConns: s.MaxConns, IdleTimeout: s.Timeout, Log: s.Log,
		OnReject: func(reason string) { s.Metrics.Reject("rtsp", reason) },
	}
	return s.ln, nil
}

// guardConn is the netguard connection under an RTSP connection.
func guardConn(sc *gortsplib.ServerConn) *netguard.Conn {
	c, _ := sc.NetConn().(*netguard.Conn)
	return c
}

// OnRequest implements gortsplib.ServerHandlerOnRequest: each complete
// request gives the connection another idle timeout.
func (s *Server) OnRequest(sc *gortsplib.ServerConn, req *base.Request) {
	if c := guardConn(sc); c != nil {
		c.Touch()
		if req.Method == base.Teardown {
			c.Exempt(false)
		}
	}
}

// OnConnClose implements gortsplib.ServerHandlerOnConnClose. A UDP reader
// whose control connection is gone is ended at once: nobody can tear it
// down any more, and it would receive RTP until the session timeout.
func (s *Server) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	session := ctx.Conn.Session()
	if session == nil {
		return
	}
	s.mu.Lock()
	r := s.readers[session]
	s.mu.Unlock()
	if r != nil && r.conn == ctx.Conn && r.Transport != "" && r.Transport != gortsplib.TransportTCP.String() {
		session.Close()
	}
}

// OnDecodeError implements gortsplib.ServerHandlerOnDecodeError: bad RTP
// or RTCP from a remote party is counted and logged at a bounded rate
// (without a handler, gortsplib writes one stdlib log line per packet).
func (s *Server) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	s.Metrics.Reject("rtsp", "decode_error")
	s.warn.Warn(s.Log, "RTSP packet not decoded", "err", ctx.Error)
}

// OnPacketsLost implements gortsplib.ServerHandlerOnPacketsLost (a
// publisher's RTP lost on the way), logged at a bounded rate.
func (s *Server) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	s.warn.Warn(s.Log, "RTSP publisher's RTP packets lost", "lost", ctx.Lost)
}

// OnStreamWriteError implements gortsplib.ServerHandlerOnStreamWriteError,
// logged at a bounded rate.
func (s *Server) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	s.warn.Warn(s.Log, "RTSP write to a reader failed", "err", ctx.Error)
}

// Start listens.
func (s *Server) Start() error {
	if err := s.srv.Start(); err != nil {
		return fmt.Errorf("rtsp listen on %s: %w", s.Address, err)
	}
	s.Log.Info("RTSP listening", "address", s.Address, "udp", s.UDPRTPAddress != "")
	return nil
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Readers lists the playing readers.
func (s *Server) Readers() []Reader {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Reader, 0, len(s.readers))
	for _, r := range s.readers {
		c := *r
		c.BytesSent = r.session.BytesSent()
		c.Dropped = s.Streams.ReaderDropped(r.Path, r.session)
		out = append(out, c)
	}
	return out
}

func cleanPath(p string) string { return strings.Trim(p, "/") }

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose.
func (s *Server) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	if p, ok := ctx.Session.UserData().(*publisher); ok && p.pub != nil {
		p.pub.Close()
	}
	s.mu.Lock()
	r := s.readers[ctx.Session]
	delete(s.readers, ctx.Session)
	s.mu.Unlock()
	if r != nil {
		dropped := s.Streams.RemoveReader(r.Path, ctx.Session)
		if s.Metrics != nil {
			s.Metrics.Readers.WithLabelValues(r.Path).Dec()
		}
		s.Log.Info("RTSP reader left", "path", r.Path, "remote", r.Remote, "droppedPackets", dropped)
	}
}

// RedirectRequest is what Server.Redirect is asked about.
type RedirectRequest struct {
	// Path is the stream path ("live/KEY").
	Path string
	// Host is the host the reader used to reach this node (from the
	// request URL), for a target address without one.
	Host string
}

// ReaderCount is the readers playing now.
func (s *Server) ReaderCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.readers)
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (s *Server) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if res, err := s.checkRead(ctx.Conn, ctx.Request); err != nil {
		return res, nil, err
	}
	path := cleanPath(ctx.Path)
	ss, ok := s.Streams.ServerStream(path)
	if !ok {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	if res := s.redirect(ctx, path); res != nil {
		return res, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, ss, nil
}

// redirect is the 302 Found for a reader another node should serve (nil:
// serve it here).
func (s *Server) redirect(ctx *gortsplib.ServerHandlerOnDescribeCtx, path string) *base.Response {
	if s.Redirect == nil || ctx.Request.URL == nil {
		return nil
	}
	to := s.Redirect(RedirectRequest{Path: path, Host: ctx.Request.URL.Hostname()})
	if to == "" {
		return nil
	}
	u := &base.URL{Scheme: "rtsp", Host: to, Path: "/" + path, RawQuery: ctx.Query}
	s.Log.Debug("RTSP reader redirected", "path", path, "remote", ctx.Conn.NetConn().RemoteAddr().String(), "to", to)
	return &base.Response{StatusCode: base.StatusFound, Header: base.Header{"Location": base.HeaderValue{u.String()}}}
}

func (s *Server) checkRead(conn *gortsplib.ServerConn, req *base.Request) (*base.Response, error) {
	if s.ReadUser == "" {
		return nil, nil
	}
	remote := conn.NetConn().RemoteAddr().String()
	ip := auth.HostOf(remote)
	if s.Throttle.Blocked(ip) {
		s.Metrics.Reject("rtsp", "auth_throttled")
		s.warn.Warn(s.Log, "RTSP read refused: too many failed logins from this address", "remote", remote)
		return &base.Response{StatusCode: base.StatusForbidden}, errors.New("too many failed logins")
	}
	if !conn.VerifyCredentials(req, s.ReadUser, s.ReadPass) {
		if _, sent := req.Header["Authorization"]; sent {
			// Wrong credentials (a first request without any is how
			// players ask for the challenge: not a failure).
			s.Metrics.Reject("rtsp", "auth")
			s.warn.Warn(s.Log, "RTSP read refused: wrong credentials", "remote", remote)
			if s.Throttle.Fail(ip) {
				s.Metrics.Reject("rtsp", "auth_throttled")
				return &base.Response{StatusCode: base.StatusForbidden}, errors.New("too many failed logins")
			}
		}
		// ErrServerAuth makes gortsplib send WWW-Authenticate when no
		// credentials came, so players retry with the ones in their URL.
		return &base.Response{StatusCode: base.StatusUnauthorized}, liberrors.ErrServerAuth{}
	}
	return nil, nil
}

// OnAnnounce implements gortsplib.ServerHandlerOnAnnounce.
func (s *Server) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	path := cleanPath(ctx.Path)
	remote := ctx.Conn.NetConn().RemoteAddr().String()
	ip := auth.HostOf(remote)
	if s.Throttle.Blocked(ip) {
		s.Metrics.Reject("rtsp", "auth_throttled")
		s.warn.Warn(s.Log, "RTSP publish refused: too many failed attempts from this address", "remote", remote)
		return &base.Response{StatusCode: base.StatusForbidden}, errors.New("too many failed attempts")
	}
	err := s.Auth.Check(context.Background(), auth.Request{
		Action: "publish", Protocol: "rtsp", Path: path, Key: auth.KeyOf(path), Remote: remote,
	})
	if err != nil {
		s.warn.Warn(s.Log, "RTSP publish refused", "path", path, "remote", remote, "err", err)
		s.Metrics.Reject("rtsp", "auth")
		if errors.Is(err, auth.ErrDenied) {
			s.Throttle.Fail(ip)
		}
		return &base.Response{StatusCode: base.StatusForbidden}, err
	}
	tracks, err := tracksOf(ctx.Description)
	if err != nil {
		s.warn.Warn(s.Log, "RTSP publish refused", "path", path, "remote", remote, "err", err)
		s.Metrics.Reject("rtsp", "codec")
		return &base.Response{StatusCode: base.StatusBadRequest}, err
	}
	session := ctx.Session
	pub, err := s.Streams.Publish(path, stream.PublisherInfo{Protocol: "rtsp", Remote: remote, Kick: session.Close})
	if err != nil {
		s.warn.Warn(s.Log, "RTSP publish refused", "path", path, "remote", remote, "err", err)
		s.Metrics.Reject("rtsp", stream.RejectReason(err))
		return &base.Response{StatusCode: base.StatusBadRequest}, err
	}
	if err := pub.SetTracks(tracks); err != nil {
		pub.Close()
		return &base.Response{StatusCode: base.StatusBadRequest}, err
	}
	session.SetUserData(&publisher{pub: pub})
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// tracksOf maps an announced description to stream tracks, in media order.
func tracksOf(desc *description.Session) ([]segment.Track, error) {
	carried, err := rtpunits.Tracks(desc)
	if err != nil {
		return nil, err
	}
	tracks := make([]segment.Track, len(carried))
	for i, c := range carried {
		tracks[i] = c.Track
	}
	return tracks, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (s *Server) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Session.State() == gortsplib.ServerSessionStatePreRecord {
		return &base.Response{StatusCode: base.StatusOK}, nil, nil
	}
	if res, err := s.checkRead(ctx.Conn, ctx.Request); err != nil {
		return res, nil, err
	}
	ss, ok := s.Streams.ServerStream(cleanPath(ctx.Path))
	if !ok {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, ss, nil
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (s *Server) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	r := &Reader{
		Path: cleanPath(ctx.Path), Remote: ctx.Conn.NetConn().RemoteAddr().String(),
		Started: time.Now(), session: ctx.Session, conn: ctx.Conn,
	}
	if tr := ctx.Session.SetuppedTransport(); tr != nil {
		r.Transport = tr.String()
	}
	if err := s.Streams.AddReader(r.Path, ctx.Session); err != nil {
		return &base.Response{StatusCode: base.StatusNotFound}, err
	}
	s.mu.Lock()
	s.readers[ctx.Session] = r
	s.mu.Unlock()
	if c := guardConn(ctx.Conn); c != nil {
		// A playing session's liveness is gortsplib's business (write
		// timeouts over TCP, RTCP and keepalives over UDP).
		c.Exempt(true)
	}
	if s.Metrics != nil {
		s.Metrics.Readers.WithLabelValues(r.Path).Inc()
	}
	s.Log.Info("RTSP reader playing", "path", r.Path, "remote", r.Remote, "transport", r.Transport)
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnRecord implements gortsplib.ServerHandlerOnRecord.
func (s *Server) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	p, ok := ctx.Session.UserData().(*publisher)
	if !ok || p.pub == nil {
		return &base.Response{StatusCode: base.StatusBadRequest}, errors.New("RECORD without ANNOUNCE")
	}
	session := ctx.Session
	if c := guardConn(ctx.Conn); c != nil {
		c.Exempt(true) // gortsplib times recording sessions out itself
	}
	// The track of each carried format is the one ANNOUNCE declared
	// (rtpunits.Tracks), so a format whose decoder cannot be made leaves
	// its own track empty and never shifts the others' units onto it.
	carried, err := rtpunits.Tracks(session.AnnouncedDescription())
	if err != nil {
		return &base.Response{StatusCode: base.StatusBadRequest}, err
	}
	for _, c := range carried {
		dec, err := rtpunits.NewDecoder(c.Format, int(c.Track.ID))
		if err != nil {
			s.Log.Debug("RTSP track not decoded", "err", err)
			continue
		}
		m := c.Media
		session.OnPacketRTP(m, c.Format, dec.OnPacket(
			func(pkt *rtp.Packet) (int64, bool) { return session.PacketPTS2(m, pkt) },
			func(u *media.Unit) error {
				// A unit the publication refuses is dropped; a
				// replaced publication ends the session.
				if err := p.pub.Write(u); err != nil && errors.Is(err, stream.ErrReplaced) {
					session.Close()
					return err
				}
				return nil
			},
			func(what rtpunits.Skip, err error) {
				if what == rtpunits.SkipNoPTS {
					s.Log.Debug("RTSP packet without PTS")
				} else {
					s.Log.Debug("RTSP packet not decoded", "err", err)
				}
			}))
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}
