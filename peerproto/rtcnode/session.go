package rtcnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// SetupTimeout bounds a session from its offer to the open channel.
const SetupTimeout = 15 * time.Second

// maxEarlyCandidates bounds the remote candidates a session buffers
// before its remote description.
const maxEarlyCandidates = 64

var errShortBuffer = io.ErrShortBuffer

// ICEServer is one STUN or TURN server (plugin.iceServers, the joined
// message's iceServers).
type ICEServer struct {
	URLs       []string `json:"urls" yaml:"urls"`
	Username   string   `json:"username,omitempty" yaml:"username"`
	Credential string   `json:"credential,omitempty" yaml:"credential"`
}

// Options configure the PeerConnections of a node.
type Options struct {
	// ICEServers are the STUN/TURN servers (none: host candidates only).
	ICEServers []ICEServer
	// Loopback gathers only 127.0.0.1 UDP host candidates and no mDNS
	// (tests on one host); otherwise every interface but loopback, as
	// pion does by default.
	Loopback bool
	// IncludeLoopback adds loopback host candidates to the others (a
	// server that peers on its own host may reach over loopback).
	IncludeLoopback bool
}

// API builds the pion API the sessions of a node share: detached data
// channels, a 64 KiB message limit, and with Loopback only loopback
// host candidates.
func (o Options) API() *webrtc.API {
	var se webrtc.SettingEngine
	se.DetachDataChannels()
	se.SetSCTPMaxMessageSize(sctpMaxMessage)
	se.SetICETimeouts(8*time.Second, 20*time.Second, 2*time.Second)
	if o.Loopback {
		se.SetIncludeLoopbackCandidate(true)
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	} else if o.IncludeLoopback {
		se.SetIncludeLoopbackCandidate(true)
	}
	return webrtc.NewAPI(webrtc.WithSettingEngine(se))
}

func (o Options) configuration() webrtc.Configuration {
	var c webrtc.Configuration
	for _, s := range o.ICEServers {
		c.ICEServers = append(c.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return c
}

// Session is one connection attempt: a PeerConnection whose data channel
// becomes a Conn once open. Its methods are safe for concurrent use.
type Session struct {
	// ID names the session in the signalling.
	ID string
	// Peer is the other end's signalling name.
	Peer string

	pc       *webrtc.PeerConnection
	counters *Counters
	opened   chan *Conn
	failed   chan struct{}
	failOnce sync.Once
	started  time.Time
	// handed is set once Wait returned the Conn (which then owns pc).
	handed atomic.Bool

	// mu guards early (candidates received before the remote
	// description) and remoteSet.
	mu        sync.Mutex
	early     []webrtc.ICECandidateInit
	remoteSet bool

	// omu guards released and held: local candidates wait until the
	// SDP they belong to was sent (Release).
	omu      sync.Mutex
	released bool
	held     []*webrtc.ICECandidateInit
	signal   Signal
}

// Signal sends one signalling message of the session (a candidate, or
// nil for the end of candidates).
type Signal func(candidate *webrtc.ICECandidateInit)

func newSession(api *webrtc.API, o Options, id, peer string, counters *Counters, signal Signal) (*Session, error) {
	pc, err := api.NewPeerConnection(o.configuration())
	if err != nil {
		return nil, fmt.Errorf("peer connection: %w", err)
	}
	s := &Session{ID: id, Peer: peer, pc: pc, counters: counters, opened: make(chan *Conn, 1),
		failed: make(chan struct{}), started: time.Now(), signal: signal}
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		var init *webrtc.ICECandidateInit
		if c != nil {
			j := c.ToJSON()
			init = &j
		}
		s.omu.Lock()
		defer s.omu.Unlock()
		if !s.released {
			s.held = append(s.held, init)
			return
		}
		s.signal(init)
	})
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateClosed {
			s.fail()
		}
	})
	return s, nil
}

// Offer starts an outgoing session: a PeerConnection with the "coop"
// channel (ordered, reliable) and its offer SDP.
func Offer(api *webrtc.API, o Options, id, peer string, counters *Counters, signal Signal) (*Session, string, error) {
	s, err := newSession(api, o, id, peer, counters, signal)
	if err != nil {
		return nil, "", err
	}
	ordered, proto := true, wire.ProtocolID
	dc, err := s.pc.CreateDataChannel(Label, &webrtc.DataChannelInit{Ordered: &ordered, Protocol: &proto})
	if err != nil {
		s.Close()
		return nil, "", fmt.Errorf("data channel: %w", err)
	}
	s.watch(dc)
	offer, err := s.pc.CreateOffer(nil)
	if err == nil {
		err = s.pc.SetLocalDescription(offer)
	}
	if err != nil {
		s.Close()
		return nil, "", fmt.Errorf("offer: %w", err)
	}
	return s, offer.SDP, nil
}

// Answer starts an incoming session from an offer SDP and returns its
// answer SDP. Only a channel labelled "coop", ordered and reliable, is
// taken; any other closes the session.
func Answer(api *webrtc.API, o Options, id, peer, offerSDP string, counters *Counters, signal Signal) (*Session, string, error) {
	s, err := newSession(api, o, id, peer, counters, signal)
	if err != nil {
		return nil, "", err
	}
	s.pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		if dc.Label() != Label || !dc.Ordered() || dc.MaxRetransmits() != nil || dc.MaxPacketLifeTime() != nil {
			s.fail()
			return
		}
		s.watch(dc)
	})
	if err := s.setRemote(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offerSDP}); err != nil {
		s.Close()
		return nil, "", err
	}
	answer, err := s.pc.CreateAnswer(nil)
	if err == nil {
		err = s.pc.SetLocalDescription(answer)
	}
	if err != nil {
		s.Close()
		return nil, "", fmt.Errorf("answer: %w", err)
	}
	return s, answer.SDP, nil
}

// Release lets the session's local candidates out: call it once the
// offer or answer SDP was sent (candidates sent before it would reach a
// peer that does not know the session yet).
func (s *Session) Release() {
	s.omu.Lock()
	defer s.omu.Unlock()
	if s.released {
		return
	}
	s.released = true
	for _, c := range s.held {
		s.signal(c)
	}
	s.held = nil
}

// mustJSON marshals a candidate init (always marshallable).
func mustJSON(c *webrtc.ICECandidateInit) json.RawMessage {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("rtcnode: candidate: %v", err))
	}
	return b
}

// watch detaches dc when it opens and hands the Conn to Wait.
func (s *Session) watch(dc *webrtc.DataChannel) {
	dc.OnOpen(func() {
		raw, err := dc.DetachWithDeadline()
		if err != nil {
			s.fail()
			return
		}
		c := newConn(s.pc, dc, raw, s.Peer, s.counters)
		select {
		case s.opened <- c:
		default:
			c.Close() // a second channel: not ours
		}
	})
}

// Answered sets the answer of an outgoing session.
func (s *Session) Answered(sdp string) error {
	return s.setRemote(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp})
}

func (s *Session) setRemote(d webrtc.SessionDescription) error {
	if err := s.pc.SetRemoteDescription(d); err != nil {
		return fmt.Errorf("remote description: %w", err)
	}
	s.mu.Lock()
	s.remoteSet = true
	early := s.early
	s.early = nil
	s.mu.Unlock()
	for _, c := range early {
		_ = s.pc.AddICECandidate(c)
	}
	return nil
}

// Candidate adds a remote candidate (raw JSON of an ICECandidateInit;
// null or empty: the end of candidates, nothing to do).
func (s *Session) Candidate(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var c webrtc.ICECandidateInit
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("candidate: %w", err)
	}
	if c.Candidate == "" {
		return nil
	}
	s.mu.Lock()
	if !s.remoteSet {
		if len(s.early) < maxEarlyCandidates {
			s.early = append(s.early, c)
		}
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if err := s.pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("candidate: %w", err)
	}
	return nil
}

// Wait returns the open connection, or an error when the session fails,
// is closed or ctx ends (the session is then closed).
func (s *Session) Wait(ctx context.Context) (*Conn, error) {
	select {
	case c := <-s.opened:
		s.handed.Store(true)
		return c, nil
	case <-s.failed:
		s.Close()
		return nil, errors.New("rtcnode: session failed")
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("rtcnode: session %s to %s: %w", s.ID, s.Peer, ctx.Err())
	}
}

// Elapsed is the time since the session started.
func (s *Session) Elapsed() time.Duration { return time.Since(s.started) }

func (s *Session) fail() { s.failOnce.Do(func() { close(s.failed) }) }

// Close abandons the session (a Conn already handed out owns the
// PeerConnection from then on and is not closed by it).
func (s *Session) Close() {
	if s.handed.Load() {
		return
	}
	select {
	case c := <-s.opened: // opened, never taken
		c.Close()
		s.fail()
		return
	default:
	}
	s.fail()
	go func() { _ = s.pc.Close() }()
}
