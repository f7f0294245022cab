// Package p2pserver is the plugin's side of the product: one peer listener
// for every stream, and per stream a tracker and server partner (a
// peerproto engine in the server role) that holds every pushed segment,
// signs its manifest and serves peers within an upload cap.
package p2pserver

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/tcpnode"
	"github.com/coopstreaming/coop/peerproto/wire"
	"github.com/coopstreaming/coop/plugin/jointoken"
	"github.com/coopstreaming/coop/plugin/pluginapi"
	"github.com/coopstreaming/coop/plugin/signkey"
	"github.com/coopstreaming/coop/plugin/tracker"
)

// ServerID is the peer id of the server partner of every stream.
const ServerID wire.PeerID = 1

// Service implements pluginapi.P2P.
type Service struct {
	// Log receives the plugin's logs.
	Log *slog.Logger
	// Level, when set, follows the log level the host configures.
	Level *slog.LevelVar

	mu       sync.Mutex
	settings pluginapi.Settings
	key      ed25519.PrivateKey
	ln       net.Listener
	streams  map[string]*swarm
	adm      admission
	// redis is the cluster's shared store when Settings.ClusterRedis is
	// set (one pool for every swarm's tracker).
	redis *redis.Client
	// relays are the running Relay calls by stream (relay.go).
	relays map[string]*relayRun
	// placer redirects new peers by load (placement.go; nil: never).
	placer *placer
	// web is the web port (web.go; nil: off).
	web *web

	// Watch serves the watch page under /watch/ on the web port (nil:
	// 404).
	Watch http.Handler
}

type swarm struct {
	name     string
	info     pluginapi.StreamInfo
	node     *tcpnode.Node
	segments atomic.Uint64
	refused  atomic.Uint64
	// epoch names the stream instance the swarm serves now (signed into
	// every manifest); a new publish gets a new one.
	epoch atomic.Uint64
	// shared is the swarm's Redis tracker (nil: in memory).
	shared *tracker.Redis
	// relay, for a relayed stream, is the peer of the upstream swarm
	// whose segments the swarm re-serves (nil: published here), upstream
	// its server's address and streamKey the upstream's key (relay.go).
	relay     *tcpnode.Node
	upstream  string
	streamKey []byte
}

// close ends the swarm's node, then its shared tracker.
func (sw *swarm) close() {
	sw.node.Close()
	if sw.shared != nil {
		sw.shared.Close()
	}
}

// newEpoch is a random non-zero stream epoch.
func newEpoch() uint64 { return mrand.Uint64() | 1 }

var _ pluginapi.P2P = (*Service)(nil)

// Configure implements pluginapi.P2P: it loads the signing key and opens
// the peer listener (once; a new address needs a plugin restart).
func (s *Service) Configure(_ context.Context, st pluginapi.Settings) (pluginapi.Configured, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.Level != nil && st.LogLevel != "" {
		if err := s.Level.UnmarshalText([]byte(st.LogLevel)); err != nil {
			return pluginapi.Configured{}, fmt.Errorf("%w: log level: %w", pluginapi.ErrInvalid, err)
		}
	}
	if s.streams == nil {
		s.streams = make(map[string]*swarm)
	}
	if s.key == nil {
		if st.KeyFile == "" {
			_, key, err := ed25519.GenerateKey(nil)
			if err != nil {
				return pluginapi.Configured{}, fmt.Errorf("signing key: %w", err)
			}
			s.key = key
			s.Log.Warn("no plugin.keyFile: signing with a key that changes at every plugin start")
		} else {
			key, created, err := signkey.LoadOrCreate(st.KeyFile)
			if err != nil {
				return pluginapi.Configured{}, err
			}
			if created {
				s.Log.Info("generated the stream signing key", "file", st.KeyFile)
			}
			s.key = key
		}
	}
	if s.ln == nil {
		ln, err := net.Listen("tcp", st.PeerAddress)
		if err != nil {
			return pluginapi.Configured{}, fmt.Errorf("peer listen on %s: %w", st.PeerAddress, err)
		}
		s.ln = ln
		go s.accept(ln)
		s.Log.Info("peer port listening", "address", ln.Addr().String())
	}
	if st.ClusterRedis != "" && s.redis == nil {
		s.redis = redis.NewClient(&redis.Options{Addr: st.ClusterRedis, DialTimeout: time.Second,
			ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1})
		s.Log.Info("swarm trackers shared through Redis", "redis", st.ClusterRedis, "node", st.ClusterNode)
	}
	if err := s.startWeb(st); err != nil {
		// The peer port is the service; without the web port only
		// WebRTC peers and the watch page are missing.
		s.Log.Warn("web port off: WebRTC signalling and the watch page are unavailable", "err", err)
	}
	s.startPlacer(settingsView{node: st.ClusterNode, maxPeers: st.PlacementMaxPeers, ttl: st.ClusterTTL,
		heartbeat: st.ClusterHeartbeat})
	s.settings = st
	return pluginapi.Configured{
		PeerAddress: s.ln.Addr().String(), StreamPublicKey: s.key.Public().(ed25519.PublicKey), PID: os.Getpid(),
		WebAddress: s.webAddress(),
	}, nil
}

func (s *Service) accept(ln net.Listener) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.Log.Warn("peer accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		ip := remoteIP(nc)
		if reason := s.adm.enter(ip); reason != "" {
			if s.adm.reject(reason) {
				s.Log.Warn("peer connection refused: too many waiting for a Hello (logged once per 10 s)",
					"reason", reason, "remote", nc.RemoteAddr().String())
			}
			nc.Close()
			continue
		}
		go func() {
			defer s.adm.leave(ip)
			s.dispatch(nc)
		}()
	}
}

// dispatch reads a connection's Hello and hands it to its stream's node.
func (s *Service) dispatch(nc net.Conn) {
	remote := nc.RemoteAddr().String()
	s.mu.Lock()
	timeout, maxConns := s.settings.HandshakeTimeout, s.settings.MaxPeerConnections
	s.mu.Unlock()
	if timeout <= 0 {
		timeout = defaultHelloTimeout
	}
	if maxConns <= 0 {
		maxConns = defaultMaxConns
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	r, hello, err := tcpnode.ReadHello(nc)
	if err != nil {
		if s.adm.reject(reasonBadHello) {
			s.Log.Info("dropped a peer connection without a valid Hello (logged once per 10 s)", "remote", remote, "err", err)
		}
		nc.Close()
		return
	}
	s.mu.Lock()
	sw := s.streams[hello.Stream]
	conns := int64(0)
	for _, x := range s.streams {
		conns += x.node.Counters().Conns.Load()
	}
	s.mu.Unlock()
	if sw == nil {
		if s.adm.reject(reasonUnknown) {
			s.Log.Info("peer asked for an unknown stream (logged once per 10 s)", "remote", remote, "stream", hello.Stream)
		}
		_, _ = nc.Write(wire.Marshal(&wire.Reject{Reason: wire.RejectNotFound}))
		nc.Close()
		return
	}
	if conns >= int64(maxConns) {
		if s.adm.reject(reasonConnCap) {
			s.Log.Warn("peer refused: connection cap reached (logged once per 10 s)", "connections", conns, "remote", remote)
		}
		_, _ = nc.Write(wire.Marshal(&wire.Reject{Reason: wire.RejectFull}))
		nc.Close()
		return
	}
	if s.redirect(nc, hello, conns) {
		return
	}
	sw.node.HandOff(nc, r, hello)
}

// AnnounceStream implements pluginapi.P2P.
func (s *Service) AnnounceStream(_ context.Context, info pluginapi.StreamInfo) error {
	if err := info.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.key == nil {
		s.mu.Unlock()
		return errors.New("announce before configure")
	}
	if info.Epoch == 0 { // a host that names no instance: every announce is a new one
		info.Epoch = newEpoch()
	}
	old := s.streams[info.Name]
	if old != nil && old.relay != nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: stream %s is relayed from %s, not published here", pluginapi.ErrInvalid, info.Name, old.upstream)
	}
	if old != nil && old.info.Layers == info.Layers && old.info.SegmentDurationMs == info.SegmentDurationMs {
		old.info = info
		if old.epoch.Load() == info.Epoch {
			// The same instance announced again (publisher back within
			// grace, a header change): segments go on numbering.
			s.mu.Unlock()
			return old.node.Do(func(e *engine.Engine) { e.SetHeader(info.Header) })
		}
		// A new instance of a stream whose swarm lives on: its segments
		// number from zero again; the connected peers follow the new
		// epoch without reconnecting.
		old.epoch.Store(info.Epoch)
		s.mu.Unlock()
		s.Log.Info("stream restarted", "stream", info.Name, "epoch", info.Epoch)
		return old.node.Do(func(e *engine.Engine) { e.SetHeader(info.Header); e.Restart(info.Epoch) })
	}
	delete(s.streams, info.Name)
	sw, err := s.newSwarm(info, s.key)
	if err == nil {
		s.streams[info.Name] = sw
	}
	s.mu.Unlock()
	if old != nil {
		old.close()
	}
	if err != nil {
		return err
	}
	s.Log.Info("stream announced", "stream", info.Name, "layers", info.Layers, "segment_ms", info.SegmentDurationMs)
	return nil
}

// newSwarm runs under s.mu. key is the server partner's key: the
// plugin's own, or for a relayed stream one that presents the upstream's
// public key (relay.go).
func (s *Service) newSwarm(info pluginapi.StreamInfo, key ed25519.PrivateKey) (*swarm, error) {
	st := s.settings
	secret := []byte(st.TokenSecret)
	sw := &swarm{name: info.Name, info: info}
	sw.epoch.Store(info.Epoch)
	var tr engine.Tracker = tracker.NewMemory()
	if s.redis != nil {
		node := st.ClusterNode
		if node == "" {
			node = s.ln.Addr().String()
		}
		shared, err := tracker.NewRedis(tracker.RedisOptions{Client: s.redis, Stream: info.Name, Node: node,
			TTL: st.ClusterTTL, Sync: st.ClusterHeartbeat, Log: s.Log})
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", info.Name, err)
		}
		sw.shared, tr = shared, shared
	}
	node := &tcpnode.Node{
		Advertise: s.ln.Addr().String(),
		Log:       s.Log.With("stream", info.Name),
		Config: engine.Config{
			Role: wire.RoleServer, ID: ServerID, Stream: info.Name, SignKey: key, Epoch: sw.epoch.Load(),
			SegmentDuration: time.Duration(info.SegmentDurationMs) * time.Millisecond, Layers: info.Layers,
			Partners: st.Partners, UploadCap: float64(st.UploadCap), Seeds: st.Seeds,
			Tracker: tr, // one per swarm: this origin's directory of it, or the cluster's
			CheckToken: func(stream, token string) bool {
				return jointoken.Check(secret, stream, token, time.Now()) == nil
			},
		},
		OnAdmitError: func(remote string, err error) {
			if errors.Is(err, engine.ErrAuth) {
				sw.refused.Add(1)
				if s.adm.reject(reasonBadToken) {
					s.Log.Warn("peer refused: bad join token (logged once per 10 s)", "stream", info.Name, "remote", remote)
				}
			}
		},
	}
	if err := node.Start(); err != nil {
		if sw.shared != nil {
			sw.shared.Close()
		}
		return nil, fmt.Errorf("stream %s: %w", info.Name, err)
	}
	sw.node = node
	if sw.shared != nil { // fresh member figures every re-sync, read on the engine's goroutine
		sw.shared.Drive(func(fn func()) error { return node.Do(func(*engine.Engine) { fn() }) })
	}
	_ = node.Do(func(e *engine.Engine) { e.SetHeader(info.Header) })
	return sw, nil
}

func (s *Service) lookup(name string) (*swarm, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sw := s.streams[name]
	if sw == nil {
		return nil, fmt.Errorf("%w: %q", pluginapi.ErrUnknownStream, name)
	}
	return sw, nil
}

// PushSegment implements pluginapi.P2P: it signs the segment's manifest
// and stores it at the stream's server partner.
func (s *Service) PushSegment(_ context.Context, seg pluginapi.Segment) error {
	if err := seg.Validate(); err != nil {
		return err
	}
	sw, err := s.lookup(seg.Stream)
	if err != nil {
		return err
	}
	if sw.relay != nil {
		return fmt.Errorf("%w: stream %s is relayed, not published here", pluginapi.ErrInvalid, seg.Stream)
	}
	if len(seg.Chunks) > sw.info.Layers {
		return fmt.Errorf("%w: segment with %d layers, stream has %d", pluginapi.ErrInvalid, len(seg.Chunks), sw.info.Layers)
	}
	var flags uint8
	if seg.RandomAccess {
		flags |= 1
	}
	man := manifest.New(seg.Stream, seg.Seq, seg.DurationMs, flags, seg.Chunks)
	man.Epoch = sw.epoch.Load()
	raw, err := manifest.Sign(s.key, man)
	if err != nil {
		return fmt.Errorf("sign segment %d: %w", seg.Seq, err)
	}
	var addErr error
	if err := sw.node.Do(func(e *engine.Engine) { addErr = e.AddSegment(seg.Seq, raw, seg.Chunks) }); err != nil {
		return err
	}
	if addErr != nil {
		return fmt.Errorf("%w: %w", pluginapi.ErrInvalid, addErr)
	}
	sw.segments.Add(1)
	return nil
}

// SegmentRefused implements pluginapi.RefusalObserver.
func (s *Service) SegmentRefused(stream string, seq uint64, err error) {
	s.Log.Warn("segment refused", "stream", stream, "seq", seq, "err", err)
}

// CloseStream implements pluginapi.P2P.
func (s *Service) CloseStream(_ context.Context, name string) error {
	s.mu.Lock()
	sw := s.streams[name]
	if sw != nil && sw.relay != nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: stream %s is relayed: it ends with its Relay call", pluginapi.ErrInvalid, name)
	}
	delete(s.streams, name)
	s.mu.Unlock()
	if sw == nil {
		return fmt.Errorf("%w: %q", pluginapi.ErrUnknownStream, name)
	}
	sw.close()
	s.Log.Info("stream closed", "stream", name)
	return nil
}

// Stats implements pluginapi.P2P.
func (s *Service) Stats(_ context.Context) ([]pluginapi.StreamStats, error) {
	s.mu.Lock()
	list := make([]*swarm, 0, len(s.streams))
	for _, sw := range s.streams {
		list = append(list, sw)
	}
	s.mu.Unlock()
	out := make([]pluginapi.StreamStats, 0, len(list))
	for _, sw := range list {
		var st engine.Stats
		var sws engine.SwarmStats
		var edge uint64
		if err := sw.node.Do(func(e *engine.Engine) { st, sws = e.Stats(), e.Swarm(); edge, _ = e.LiveEdge() }); err != nil {
			continue // closed meanwhile
		}
		ss := pluginapi.StreamStats{
			Stream: sw.name, Peers: sws.Peers, LiveEdge: edge, Segments: sw.segments.Load(),
			ServerMediaBytes: st.MediaBytesOut, ServerControlBytes: st.ControlBytesOut,
			PeerBytesFromServer: sws.FromServer, PeerBytesFromPeers: sws.FromPeers,
			Continuity: sws.Continuity, RefusedJoins: sw.refused.Load(), Banned: sws.Banned, Epoch: sw.epoch.Load(),
		}
		if sw.relay != nil {
			ss.StreamKey, ss.Upstream = sw.streamKey, sw.upstream
			_ = sw.relay.Do(func(e *engine.Engine) {
				rs := e.Stats()
				ss.RelayBytesFromServer, ss.RelayBytesFromPeers = rs.UsefulFromServer, rs.UsefulFromPeers
				ss.RelayConnected, ss.RelayPartners = e.HasServer(), len(e.Partners())
				if ss.RelayConnected {
					ss.RelayPartners-- // the server is counted apart
				}
			})
		}
		out = append(out, ss)
	}
	return out, nil
}

// Close ends every swarm and the listener.
func (s *Service) Close() {
	s.mu.Lock()
	relays := s.relays
	s.relays = nil
	s.mu.Unlock()
	for _, r := range relays { // each takes its relayed swarm with it
		r.cancel()
		<-r.done
	}
	s.mu.Lock()
	streams := s.streams
	s.streams = map[string]*swarm{}
	ln := s.ln
	s.ln = nil
	rc := s.redis
	s.redis = nil
	pl := s.placer
	s.placer = nil
	wb := s.web
	s.web = nil
	s.mu.Unlock()
	pl.stop()
	s.stopWeb(wb)
	if ln != nil {
		ln.Close()
	}
	for _, sw := range streams {
		sw.close()
	}
	if rc != nil {
		rc.Close()
	}
}
