package rtcnode

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// AddrPrefix marks a WebRTC address in Hello.ListenAddr and
// Candidate.Addr: "rtc:" (WebRTC only) or "rtc:host:port" (WebRTC, or TCP
// at host:port).
const AddrPrefix = "rtc:"

// IsRTC tells whether a candidate address names a WebRTC peer.
func IsRTC(addr string) bool { return strings.HasPrefix(addr, AddrPrefix) }

// TCPPart is the TCP address inside a WebRTC address ("" for "rtc:"),
// or addr itself when it is not one.
func TCPPart(addr string) string { return strings.TrimPrefix(addr, AddrPrefix) }

// Transport is a node's WebRTC side: one signalling WebSocket to the
// plugin (joined to one stream with the node's peer id), outgoing
// sessions (Dial) and incoming ones (handed to Accept once open). The
// socket is redialled with a backoff when it drops.
type Transport struct {
	// URL is the signalling endpoint, ws://HOST:7071/rtc/signal.
	URL string
	// Stream, Token and Peer are the join's.
	Stream, Token string
	Peer          wire.PeerID
	// Options configure the PeerConnections; ICE servers the plugin
	// names in joined replace Options.ICEServers.
	Options Options
	// Accept receives every incoming connection whose channel opened.
	Accept func(net.Conn)
	// MaxIncoming bounds incoming sessions in setup [16]; more are
	// answered with bye.
	MaxIncoming int
	// Log receives the transport's logs.
	Log *slog.Logger

	counters Counters
	api      *webrtc.API
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}

	// mu guards ws, ice, sessions, incoming and joined.
	mu       sync.Mutex
	ws       *websocket.Conn
	ice      []ICEServer
	sessions map[string]*Session // by peer + "/" + session id
	incoming int
	joined   chan struct{} // closed while a socket is joined; replaced on loss
	// wmu serialises writes to the socket.
	wmu sync.Mutex
}

// Counters returns the transport's figures.
func (t *Transport) Counters() *Counters { return &t.counters }

// Start connects the signalling socket (and keeps it) until Close.
func (t *Transport) Start() error {
	if t.URL == "" || t.Stream == "" || t.Peer == 0 {
		return errors.New("rtcnode: transport needs URL, Stream and Peer")
	}
	if t.Log == nil {
		t.Log = slog.Default()
	}
	if t.MaxIncoming <= 0 {
		t.MaxIncoming = 16
	}
	t.api = t.Options.API()
	t.ice = t.Options.ICEServers
	t.sessions = make(map[string]*Session)
	t.joined = make(chan struct{})
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.done = make(chan struct{})
	go t.run()
	return nil
}

// Close ends the socket and every session in setup.
func (t *Transport) Close() {
	if t.cancel == nil {
		return
	}
	t.cancel()
	<-t.done
	t.mu.Lock()
	for k, s := range t.sessions {
		s.Close()
		delete(t.sessions, k)
	}
	t.mu.Unlock()
}

// Joined waits until the socket is joined (or ctx ends).
func (t *Transport) Joined(ctx context.Context) error {
	t.mu.Lock()
	ch := t.joined
	t.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *Transport) run() {
	defer close(t.done)
	backoff := 500 * time.Millisecond
	for t.ctx.Err() == nil {
		start := time.Now()
		err := t.session()
		if t.ctx.Err() != nil {
			return
		}
		if time.Since(start) > 30*time.Second {
			backoff = 500 * time.Millisecond
		}
		t.Log.Info("signalling socket lost; redialling", "url", t.URL, "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-t.ctx.Done():
			return
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// session runs one socket: join, then dispatch until it fails.
func (t *Transport) session() error {
	dctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
	ws, _, err := websocket.Dial(dctx, t.URL, nil)
	cancel()
	if err != nil {
		return fmt.Errorf("dial %s: %w", t.URL, err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(MaxMessageSize)
	t.mu.Lock()
	t.ws = ws
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.ws = nil
		select {
		case <-t.joined:
			t.joined = make(chan struct{})
		default:
		}
		t.mu.Unlock()
	}()
	if err := t.send(&Message{Type: TypeJoin, Stream: t.Stream, Peer: FormatPeer(t.Peer), Token: t.Token}); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
	m, err := t.read(rctx, ws)
	cancel()
	if err != nil {
		return err
	}
	if m.Type != TypeJoined {
		return fmt.Errorf("join refused: %s %s", m.Code, m.Description)
	}
	t.mu.Lock()
	if len(m.ICEServers) > 0 {
		t.ice = m.ICEServers
	}
	close(t.joined)
	t.mu.Unlock()
	t.Log.Debug("signalling joined", "stream", t.Stream, "peer", FormatPeer(t.Peer))
	for {
		m, err := t.read(t.ctx, ws)
		if err != nil {
			return err
		}
		t.handle(m)
	}
}

func (t *Transport) read(ctx context.Context, ws *websocket.Conn) (*Message, error) {
	typ, b, err := ws.Read(ctx)
	if err != nil {
		return nil, fmt.Errorf("signalling read: %w", err)
	}
	if typ != websocket.MessageText {
		return nil, fmt.Errorf("%w: binary frame", ErrBadMessage)
	}
	return Decode(b)
}

// send writes one message on the socket (5 s at most).
func (t *Transport) send(m *Message) error {
	t.mu.Lock()
	ws := t.ws
	t.mu.Unlock()
	if ws == nil {
		return errors.New("rtcnode: signalling not connected")
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	ctx, cancel := context.WithTimeout(t.ctx, 5*time.Second)
	defer cancel()
	if err := ws.Write(ctx, websocket.MessageText, m.Encode()); err != nil {
		return fmt.Errorf("signalling write: %w", err)
	}
	return nil
}

func (t *Transport) handle(m *Message) {
	key := m.From + "/" + m.Session
	t.mu.Lock()
	s := t.sessions[key]
	t.mu.Unlock()
	switch m.Type {
	case TypeOffer:
		if s == nil && m.From != "" {
			t.answer(m)
		}
	case TypeAnswer:
		if s != nil {
			if err := s.Answered(m.SDP); err != nil {
				t.Log.Debug("bad answer", "from", m.From, "err", err)
				s.Close()
			}
		}
	case TypeCandidate:
		if s != nil {
			_ = s.Candidate(m.Candidate)
		}
	case TypeBye:
		if s != nil {
			s.Close()
		}
	case TypeError:
		t.mu.Lock()
		for k, s := range t.sessions {
			if m.Session != "" && strings.HasSuffix(k, "/"+m.Session) {
				s.Close()
			}
		}
		t.mu.Unlock()
		t.Log.Debug("signalling error", "code", m.Code, "message", m.Description)
	}
}

// signal is a session's candidate sender.
func (t *Transport) signal(to, id string) Signal {
	return func(c *webrtc.ICECandidateInit) {
		m := &Message{Type: TypeCandidate, To: to, Session: id, Candidate: []byte("null")}
		if c != nil {
			m.Candidate = mustJSON(c)
		}
		_ = t.send(m)
	}
}

func (t *Transport) options() Options {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.Options
	o.ICEServers = t.ice
	return o
}

// answer runs an incoming session to its open channel.
func (t *Transport) answer(m *Message) {
	key := m.From + "/" + m.Session
	t.mu.Lock()
	if t.incoming >= t.MaxIncoming {
		t.mu.Unlock()
		_ = t.send(&Message{Type: TypeBye, To: m.From, Session: m.Session, Reason: "busy"})
		return
	}
	t.incoming++
	t.mu.Unlock()
	s, sdp, err := Answer(t.api, t.options(), m.Session, m.From, m.SDP, &t.counters, t.signal(m.From, m.Session))
	if err != nil {
		t.mu.Lock()
		t.incoming--
		t.mu.Unlock()
		t.Log.Debug("cannot answer", "from", m.From, "err", err)
		_ = t.send(&Message{Type: TypeBye, To: m.From, Session: m.Session, Reason: "bad offer"})
		return
	}
	t.mu.Lock()
	t.sessions[key] = s
	t.mu.Unlock()
	if err := t.send(&Message{Type: TypeAnswer, To: m.From, Session: m.Session, SDP: sdp}); err == nil {
		s.Release()
	}
	go func() {
		ctx, cancel := context.WithTimeout(t.ctx, SetupTimeout)
		defer cancel()
		c, err := s.Wait(ctx)
		t.mu.Lock()
		t.incoming--
		delete(t.sessions, key)
		t.mu.Unlock()
		if err != nil {
			return
		}
		t.counters.Accepted.Add(1)
		if t.Accept == nil {
			c.Close()
			return
		}
		t.Accept(c)
	}()
}

// Dial opens a session to the peer named to (a hex peer id or "server")
// and returns its connection once the channel is open (SetupTimeout at
// most).
func (t *Transport) Dial(ctx context.Context, to string) (net.Conn, error) {
	if !validName(to) {
		return nil, fmt.Errorf("rtcnode: bad peer name %q", to)
	}
	ctx, cancel := context.WithTimeout(ctx, SetupTimeout)
	defer cancel()
	if err := t.Joined(ctx); err != nil {
		return nil, fmt.Errorf("rtcnode: signalling not joined: %w", err)
	}
	t.counters.Dials.Add(1)
	id := FormatPeer(wire.PeerID(randomID()))
	s, sdp, err := Offer(t.api, t.options(), id, to, &t.counters, t.signal(to, id))
	if err != nil {
		t.counters.DialFailures.Add(1)
		return nil, err
	}
	key := to + "/" + id
	t.mu.Lock()
	t.sessions[key] = s
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.sessions, key)
		t.mu.Unlock()
	}()
	if err := t.send(&Message{Type: TypeOffer, To: to, Session: id, SDP: sdp}); err != nil {
		s.Close()
		t.counters.DialFailures.Add(1)
		return nil, err
	}
	s.Release()
	c, err := s.Wait(ctx)
	if err != nil {
		t.counters.DialFailures.Add(1)
		_ = t.send(&Message{Type: TypeBye, To: to, Session: id, Reason: "timeout"})
		return nil, err
	}
	t.counters.SetupNanos.Add(uint64(s.Elapsed()))
	return c, nil
}

func randomID() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1
}

// Handles implements tcpnode.Transport: every "rtc:" address.
func (t *Transport) Handles(addr string) bool { return IsRTC(addr) }

// DialPeer implements tcpnode.Transport: a session to the candidate's
// peer id.
func (t *Transport) DialPeer(ctx context.Context, c wire.Candidate) (net.Conn, error) {
	return t.Dial(ctx, FormatPeer(c.Peer))
}

// Advertise implements tcpnode.Transport: "rtc:" before the TCP listen
// address (or alone).
func (t *Transport) Advertise(listen string) string { return AddrPrefix + TCPPart(listen) }
