// Package signal is the plugin's WebRTC signalling server
// (docs/webrtc.md): a WebSocket endpoint where peers join a stream with
// their peer id and join token, and relay SDP offers, answers and trickle
// ICE candidates to each other by peer id; offers to "server" are answered
// by the plugin itself, and their open data channels are handed to the
// stream's peer listener as inbound connections.
package signal

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"

	"github.com/coopstreaming/coop/peerproto/rtcnode"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// Defaults of the endpoint's limits (docs/webrtc.md "Limits").
const (
	DefaultJoinTimeout       = 5 * time.Second
	DefaultMaxPerIP          = 16
	DefaultMaxSockets        = 4096
	DefaultRate              = 20 // messages per second per socket
	DefaultBurst             = 40
	DefaultPingInterval      = 15 * time.Second
	DefaultWriteTimeout      = 5 * time.Second
	DefaultServerPerSocket   = 2
	DefaultMaxServerSessions = 64
	// outQueue bounds the messages waiting for one socket's writer; a
	// socket that lets more pile up is closed.
	outQueue = 64
)

// Server is the signalling endpoint (an http.Handler for GET /rtc/signal).
// Zero limits take the defaults.
type Server struct {
	// Join checks a join: the stream is served here and the token is
	// valid; it returns "" or an error code (rtcnode.CodeUnknownStream,
	// rtcnode.CodeBadToken).
	Join func(stream, token string) string
	// ServerConn takes an open connection to the server partner of the
	// stream, offered by the peer at ip (the WebSocket's address).
	ServerConn func(stream string, nc net.Conn, ip string)
	// ServerPeer is the server partner's peer id (in joined).
	ServerPeer wire.PeerID
	// Options configure the plugin's own PeerConnections; their
	// ICEServers are also told to every client in joined.
	Options rtcnode.Options
	// Limits.
	JoinTimeout, PingInterval, WriteTimeout time.Duration
	MaxPerIP, MaxSockets, Rate, Burst       int
	ServerPerSocket, MaxServerSessions      int
	// Log receives the server's logs (remote-triggered ones are
	// rate-limited).
	Log *slog.Logger

	once     sync.Once
	api      *webrtc.API
	counters Counters
	logs     sync.Map // reason -> *rate.Sometimes

	// mu guards rooms, perIP, sockets and serverSessions.
	mu             sync.Mutex
	rooms          map[string]map[string]*client // stream -> peer name -> socket
	perIP          map[string]int
	sockets        int
	serverSessions int
}

// Counters are the endpoint's figures.
type Counters struct {
	// Sockets is the number of open sockets; Joined those joined.
	Sockets, Joined atomic.Int64
	// Relayed counts messages relayed between peers; Refused sockets
	// refused or closed for a limit or a bad message.
	Relayed, Refused atomic.Uint64
	// ServerSessions counts offers to the server answered; ServerConns
	// those whose channel opened and was handed over.
	ServerSessions, ServerConns atomic.Uint64
	// rtc counts the plugin's own data channel bytes.
	RTC rtcnode.Counters
}

// Counters returns the endpoint's figures.
func (s *Server) Counters() *Counters { return &s.counters }

func (s *Server) init() {
	s.once.Do(func() {
		def := func(v *int, d int) {
			if *v <= 0 {
				*v = d
			}
		}
		defd := func(v *time.Duration, d time.Duration) {
			if *v <= 0 {
				*v = d
			}
		}
		defd(&s.JoinTimeout, DefaultJoinTimeout)
		defd(&s.PingInterval, DefaultPingInterval)
		defd(&s.WriteTimeout, DefaultWriteTimeout)
		def(&s.MaxPerIP, DefaultMaxPerIP)
		def(&s.MaxSockets, DefaultMaxSockets)
		def(&s.Rate, DefaultRate)
		def(&s.Burst, DefaultBurst)
		def(&s.ServerPerSocket, DefaultServerPerSocket)
		def(&s.MaxServerSessions, DefaultMaxServerSessions)
		if s.Log == nil {
			s.Log = slog.Default()
		}
		s.api = s.Options.API()
		s.rooms = make(map[string]map[string]*client)
		s.perIP = make(map[string]int)
	})
}

// logOnce logs at most once per 10 s per reason.
func (s *Server) logOnce(reason string, msg string, args ...any) {
	v, _ := s.logs.LoadOrStore(reason, &rate.Sometimes{Interval: 10 * time.Second})
	v.(*rate.Sometimes).Do(func() { s.Log.Info(msg+" (logged once per 10 s)", append(args, "reason", reason)...) })
}

// client is one socket.
type client struct {
	s      *Server
	ws     *websocket.Conn
	ip     string
	stream string
	name   string // joined peer name ("" until joined)
	out    chan []byte
	ctx    context.Context
	cancel context.CancelFunc
	lim    *rate.Limiter

	// mu guards sessions (server sessions in setup, by session id).
	mu       sync.Mutex
	sessions map[string]*rtcnode.Session
}

// ServeHTTP implements http.Handler: the WebSocket upgrade and the
// socket's life.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.init()
	ip := remoteIP(r.RemoteAddr)
	s.mu.Lock()
	if s.sockets >= s.MaxSockets || s.perIP[ip] >= s.MaxPerIP {
		s.mu.Unlock()
		s.counters.Refused.Add(1)
		s.logOnce(rtcnode.CodeFull, "signalling socket refused: too many sockets", "remote", ip)
		http.Error(w, rtcnode.CodeFull, http.StatusServiceUnavailable)
		return
	}
	s.sockets++
	s.perIP[ip]++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.sockets--
		if s.perIP[ip]--; s.perIP[ip] <= 0 {
			delete(s.perIP, ip)
		}
		s.mu.Unlock()
	}()
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered the request
	}
	defer ws.CloseNow()
	ws.SetReadLimit(rtcnode.MaxMessageSize)
	s.counters.Sockets.Add(1)
	defer s.counters.Sockets.Add(-1)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	c := &client{s: s, ws: ws, ip: ip, out: make(chan []byte, outQueue), ctx: ctx, cancel: cancel,
		lim: rate.NewLimiter(rate.Limit(s.Rate), s.Burst), sessions: make(map[string]*rtcnode.Session)}
	go c.writer()
	go c.pinger()
	defer c.leave()
	if code := c.join(); code != "" {
		s.counters.Refused.Add(1)
		c.fail(code, "")
		return
	}
	for {
		typ, b, err := ws.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusMessageTooBig {
				s.counters.Refused.Add(1)
				s.logOnce(rtcnode.CodeTooLarge, "signalling message over the limit", "remote", ip)
			}
			return
		}
		if !c.lim.Allow() {
			s.counters.Refused.Add(1)
			s.logOnce(rtcnode.CodeRate, "signalling socket over the message rate", "remote", ip)
			c.fail(rtcnode.CodeRate, "")
			return
		}
		m, err := decode(typ, b)
		if err == nil {
			err = c.handle(m)
		}
		if err != nil {
			s.counters.Refused.Add(1)
			s.logOnce(rtcnode.CodeBadMessage, "bad signalling message", "remote", ip, "err", err)
			c.fail(rtcnode.CodeBadMessage, err.Error())
			return
		}
	}
}

func decode(typ websocket.MessageType, b []byte) (*rtcnode.Message, error) {
	if typ != websocket.MessageText {
		return nil, errors.New("binary frame")
	}
	return rtcnode.Decode(b)
}

// join reads and checks the join message; "" when joined.
func (c *client) join() string {
	s := c.s
	ctx, cancel := context.WithTimeout(c.ctx, s.JoinTimeout)
	typ, b, err := c.ws.Read(ctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return rtcnode.CodeTimeout
		}
		return rtcnode.CodeBadMessage
	}
	m, err := decode(typ, b)
	if err != nil || m.Type != rtcnode.TypeJoin {
		return rtcnode.CodeBadMessage
	}
	id, _ := rtcnode.ParsePeer(m.Peer) // Decode checked it
	if id == s.ServerPeer {
		return rtcnode.CodePeerInUse
	}
	if s.Join != nil {
		if code := s.Join(m.Stream, m.Token); code != "" {
			s.logOnce(code, "signalling join refused", "remote", c.ip, "stream", m.Stream)
			return code
		}
	}
	s.mu.Lock()
	room := s.rooms[m.Stream]
	if room == nil {
		room = make(map[string]*client)
		s.rooms[m.Stream] = room
	}
	if room[m.Peer] != nil {
		s.mu.Unlock()
		return rtcnode.CodePeerInUse
	}
	room[m.Peer] = c
	c.stream, c.name = m.Stream, m.Peer
	s.mu.Unlock()
	s.counters.Joined.Add(1)
	c.send(&rtcnode.Message{Type: rtcnode.TypeJoined, Server: rtcnode.FormatPeer(s.ServerPeer),
		ICEServers: s.Options.ICEServers})
	return ""
}

// leave unregisters a joined socket and ends its server sessions in setup.
func (c *client) leave() {
	s := c.s
	c.cancel()
	if c.name != "" {
		s.mu.Lock()
		if room := s.rooms[c.stream]; room[c.name] == c {
			delete(room, c.name)
			if len(room) == 0 {
				delete(s.rooms, c.stream)
			}
		}
		s.mu.Unlock()
		s.counters.Joined.Add(-1)
	}
	c.mu.Lock()
	for id, sess := range c.sessions {
		sess.Close()
		delete(c.sessions, id)
	}
	c.mu.Unlock()
}

// handle acts on one message of a joined socket.
func (c *client) handle(m *rtcnode.Message) error {
	switch m.Type {
	case rtcnode.TypeOffer, rtcnode.TypeAnswer, rtcnode.TypeCandidate, rtcnode.TypeBye:
	default:
		return errors.New("unexpected " + m.Type)
	}
	if m.To == "" {
		return errors.New("no to")
	}
	if m.To == rtcnode.ServerName || m.To == rtcnode.FormatPeer(c.s.ServerPeer) {
		c.toServer(m)
		return nil
	}
	c.s.mu.Lock()
	dst := c.s.rooms[c.stream][m.To]
	c.s.mu.Unlock()
	if dst == nil || dst == c {
		if m.Type != rtcnode.TypeBye && m.Type != rtcnode.TypeCandidate {
			c.send(&rtcnode.Message{Type: rtcnode.TypeError, Code: rtcnode.CodeUnknownPeer, Session: m.Session,
				Description: "no peer " + m.To + " joined this stream"})
		}
		return nil
	}
	m.From, m.To = c.name, ""
	dst.send(m)
	c.s.counters.Relayed.Add(1)
	return nil
}

// toServer handles a message to the server partner: an offer is
// answered by the plugin, candidates and bye go to that session.
func (c *client) toServer(m *rtcnode.Message) {
	s := c.s
	c.mu.Lock()
	sess := c.sessions[m.Session]
	c.mu.Unlock()
	switch m.Type {
	case rtcnode.TypeCandidate:
		if sess != nil {
			_ = sess.Candidate(m.Candidate)
		}
		return
	case rtcnode.TypeBye:
		if sess != nil {
			sess.Close()
		}
		return
	case rtcnode.TypeAnswer:
		return // the server never offers
	}
	if sess != nil {
		return // a repeated offer
	}
	busy := func() {
		c.send(&rtcnode.Message{Type: rtcnode.TypeBye, From: rtcnode.ServerName, Session: m.Session, Reason: "busy"})
	}
	c.mu.Lock()
	mine := len(c.sessions)
	c.mu.Unlock()
	s.mu.Lock()
	if mine >= s.ServerPerSocket || s.serverSessions >= s.MaxServerSessions {
		s.mu.Unlock()
		busy()
		return
	}
	s.serverSessions++
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		s.serverSessions--
		s.mu.Unlock()
	}
	id := m.Session
	signal := func(cand *webrtc.ICECandidateInit) {
		out := &rtcnode.Message{Type: rtcnode.TypeCandidate, From: rtcnode.ServerName, Session: id, Candidate: []byte("null")}
		if cand != nil {
			out.Candidate = candidateJSON(cand)
		}
		c.send(out)
	}
	sess, sdp, err := rtcnode.Answer(s.api, s.Options, id, c.name, m.SDP, &s.counters.RTC, signal)
	if err != nil {
		release()
		s.logOnce("bad_offer", "cannot answer an offer to the server", "remote", c.ip, "err", err)
		c.send(&rtcnode.Message{Type: rtcnode.TypeBye, From: rtcnode.ServerName, Session: id, Reason: "bad offer"})
		return
	}
	s.counters.ServerSessions.Add(1)
	c.mu.Lock()
	c.sessions[id] = sess
	c.mu.Unlock()
	c.send(&rtcnode.Message{Type: rtcnode.TypeAnswer, From: rtcnode.ServerName, Session: id, SDP: sdp})
	sess.Release()
	go func() {
		defer release()
		ctx, cancel := context.WithTimeout(context.Background(), rtcnode.SetupTimeout)
		defer cancel()
		conn, err := sess.Wait(ctx)
		c.mu.Lock()
		delete(c.sessions, id)
		c.mu.Unlock()
		if err != nil {
			return
		}
		s.counters.ServerConns.Add(1)
		if s.ServerConn == nil {
			conn.Close()
			return
		}
		s.ServerConn(c.stream, conn, c.ip)
	}()
}

// send queues a message for the socket; a socket whose queue is full is
// closed (it does not read: it stalls nobody else).
func (c *client) send(m *rtcnode.Message) {
	select {
	case c.out <- m.Encode():
	case <-c.ctx.Done():
	default:
		c.s.logOnce("slow_socket", "signalling socket too slow, closing", "remote", c.ip)
		c.cancel()
		c.ws.CloseNow()
	}
}

// fail sends an error and closes the socket.
func (c *client) fail(code, detail string) {
	b := (&rtcnode.Message{Type: rtcnode.TypeError, Code: code, Description: detail}).Encode()
	ctx, cancel := context.WithTimeout(c.ctx, time.Second)
	defer cancel()
	_ = c.ws.Write(ctx, websocket.MessageText, b)
	_ = c.ws.Close(websocket.StatusPolicyViolation, code)
}

func (c *client) writer() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case b := <-c.out:
			ctx, cancel := context.WithTimeout(c.ctx, c.s.WriteTimeout)
			err := c.ws.Write(ctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				c.cancel()
				c.ws.CloseNow()
				return
			}
		}
	}
}

// pinger closes a socket that stops answering pings.
func (c *client) pinger() {
	t := time.NewTicker(c.s.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(c.ctx, 2*c.s.PingInterval)
			err := c.ws.Ping(ctx)
			cancel()
			if err != nil {
				c.cancel()
				c.ws.CloseNow()
				return
			}
		}
	}
}

func remoteIP(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// candidateJSON marshals a local candidate (always marshallable).
func candidateJSON(c *webrtc.ICECandidateInit) json.RawMessage {
	b, _ := json.Marshal(c)
	return b
}
