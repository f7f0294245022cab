// Package pluginapi is the versioned contract between the origin (host) and
// the P2P plugin process: the go-plugin handshake, the Go interface both
// sides program against, and the gRPC adapters that carry it (the service
// is defined in pluginv1/p2p.proto; the generated code is committed).
//
// The contract is media-agnostic and independent of the P2P core: stream
// headers and layer chunks are opaque bytes.
package pluginapi

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-plugin"
)

// ProtocolVersion is the version of the host↔plugin protocol. Host and
// plugin refuse each other when it differs.
const ProtocolVersion = 1

// PluginName is the name the plugin is dispensed under.
const PluginName = "p2p"

// Handshake is the go-plugin handshake shared by host and plugin. The
// cookie is not a secret: it only stops the plugin binary from being run
// by hand as if it were a normal program.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "COOP_PLUGIN_COOKIE",
	MagicCookieValue: "b8f3c1e2-coopstreaming-p2p",
}

// Limits of the contract, enforced on both sides.
const (
	// MaxPartBytes is the largest data field of one SegmentPart, well
	// under gRPC's default 4 MiB receive limit.
	MaxPartBytes = 1 << 20
	// MaxChunkBytes bounds one layer chunk (the segment format's limit).
	MaxChunkBytes = 16 << 20
	// MaxLayers bounds the layers of a segment.
	MaxLayers = 8
	// MaxHeaderBytes bounds a stream header.
	MaxHeaderBytes = 64 << 10
	// MaxStreamName bounds a stream name.
	MaxStreamName = 255
)

// Admission defaults of the plugin's peer port, used when a Settings
// field is zero (the origin's config defaults are these too).
const (
	// DefaultHandshakeTimeout bounds the wait for a new peer
	// connection's Hello.
	DefaultHandshakeTimeout = 3 * time.Second
	// DefaultMaxPeerConnections bounds the admitted peer connections,
	// all streams together.
	DefaultMaxPeerConnections = 2048
	// DefaultPartners is the target number of peer partners M the origin
	// configures (plugin.partners); the P2P core's copy is
	// partners.DefaultTarget, pinned equal by integration/defaults_test.go.
	DefaultPartners = 10
)

// Errors of the contract.
var (
	// ErrInvalid marks a request that breaks the contract's limits.
	ErrInvalid = errors.New("pluginapi: invalid request")
	// ErrUnknownStream marks a segment or close for a stream never announced.
	ErrUnknownStream = errors.New("pluginapi: unknown stream")
)

// Settings configure the plugin (sent by the host after every start).
type Settings struct {
	// PeerAddress is the listen address for peers (e.g. ":7070").
	PeerAddress string
	// UploadCap is the server partner's upload cap in bytes/s (0: none).
	UploadCap uint64
	// Seeds is how many peers hear of a fresh segment first (0: from cap).
	Seeds int
	// Partners is the target partner count M (0: default).
	Partners int
	// KeyFile is the Ed25519 signing key (PEM PKCS#8), created if missing.
	KeyFile string
	// TokenSecret enables HMAC join tokens; empty: open.
	TokenSecret string
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// HandshakeTimeout bounds the wait for a new peer connection's Hello
	// (0: DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// MaxPeerConnections bounds the peer connections the plugin admits
	// (0: DefaultMaxPeerConnections).
	MaxPeerConnections int
	// ClusterRedis is the Redis address (host:port) of the cluster's
	// shared tracker; "": each swarm's tracker is in memory (one node).
	ClusterRedis string
	// ClusterNode is this node's id in the cluster.
	ClusterNode string
	// ClusterTTL and ClusterHeartbeat are the tracker entries' TTL and
	// re-sync period (0: the cluster/registry defaults).
	ClusterTTL, ClusterHeartbeat time.Duration
	// PlacementMaxPeers is the peers the node serves before it answers a
	// new peer's Hello with a redirect to a node of the cluster that
	// serves the stream and has room (cluster/placement; 0: never).
	PlacementMaxPeers int
	// WebAddress is the listen address of the plugin's web port: WebRTC
	// signalling (/rtc/signal) and the watch page (/watch/); "": off.
	WebAddress string
	// ICEServers are the STUN/TURN servers of WebRTC peers (none: host
	// candidates only).
	ICEServers []ICEServer
}

// ICEServer is one STUN or TURN server (plugin.iceServers).
type ICEServer struct {
	URLs       []string
	Username   string
	Credential string
}

// ProcessStats report the plugin process itself: runtime figures and the
// peer connections it refused, by reason. The plugin's Go memory limit
// comes from GOMEMLIMIT, which the origin sets from its memoryLimit.
type ProcessStats struct {
	Goroutines       uint64
	MemoryBytes      uint64 // memory the Go runtime holds from the OS
	HeapBytes        uint64 // live and unswept heap objects
	MemoryLimitBytes uint64 // the soft memory limit in force (0: none)
	// Rejected counts peer connections refused or dropped, by reason.
	Rejected map[string]uint64
}

// ProcessReporter is implemented by a P2P that reports on its process;
// the figures travel with every Stats answer.
type ProcessReporter interface {
	Process() ProcessStats
}

// Configured is the plugin's answer to Configure.
type Configured struct {
	// PeerAddress is the bound listen address.
	PeerAddress string
	// StreamPublicKey verifies the manifests the plugin signs.
	StreamPublicKey []byte
	// PID is the plugin's process id.
	PID int
	// WebAddress is the bound address of the web port ("": off).
	WebAddress string
}

// StreamInfo announces a stream.
type StreamInfo struct {
	// Name is the origin path, e.g. "live/KEY".
	Name string
	// Header is the opaque stream header.
	Header []byte
	// SegmentDurationMs is the nominal segment duration.
	SegmentDurationMs uint32
	// Layers is the most layers a segment has.
	Layers int
	// Epoch names the stream instance: the origin keeps it for every
	// announce of one instance (publisher back within grace, plugin
	// restart) and picks a new one when segment numbers start again, so
	// peers reset only for a real restart. 0: the plugin picks one.
	Epoch uint64
}

// Segment is one numbered segment of a stream, as layer chunks.
type Segment struct {
	Stream       string
	Seq          uint64
	DurationMs   uint32
	RandomAccess bool
	// Chunks holds one opaque chunk per layer, base layer first.
	Chunks [][]byte
}

// StreamStats are one swarm's counters.
type StreamStats struct {
	Stream             string
	Peers              int
	LiveEdge           uint64
	Segments           uint64
	ServerMediaBytes   uint64
	ServerControlBytes uint64
	// PeerBytesFromServer and PeerBytesFromPeers are the useful media
	// bytes peers report, by source.
	PeerBytesFromServer uint64
	PeerBytesFromPeers  uint64
	// Continuity is the mean base-layer continuity of connected peers.
	Continuity   float64
	RefusedJoins uint64
	Banned       uint64
	// Epoch is the stream instance the swarm serves (the cluster
	// registry publishes it).
	Epoch uint64
	// StreamKey is the key the swarm's peers verify manifests with when
	// it is not the plugin's own: a relayed stream's upstream key.
	StreamKey []byte
	// Upstream is a relayed stream's upstream peer address ("": the
	// stream is published here).
	Upstream string
	// RelayBytesFromServer and RelayBytesFromPeers are the useful media
	// bytes a relay received from the upstream's server partner and from
	// other peers of the upstream swarm.
	RelayBytesFromServer uint64
	RelayBytesFromPeers  uint64
	// RelayConnected tells whether a relay is connected to the upstream's
	// server partner; RelayPartners counts its peer partners there.
	RelayConnected bool
	RelayPartners  int
}

// Offload is the share of the useful media bytes peers received that came
// from other peers (docs/metrics.md).
func (s StreamStats) Offload() float64 {
	total := s.PeerBytesFromServer + s.PeerBytesFromPeers
	if total == 0 {
		return 0
	}
	return float64(s.PeerBytesFromPeers) / float64(total)
}

// P2P is what the plugin offers the host.
type P2P interface {
	// Configure starts the plugin's listener; call it first.
	Configure(ctx context.Context, s Settings) (Configured, error)
	// AnnounceStream starts a swarm or replaces its header.
	AnnounceStream(ctx context.Context, info StreamInfo) error
	// PushSegment hands over one segment.
	PushSegment(ctx context.Context, seg Segment) error
	// CloseStream ends a swarm.
	CloseStream(ctx context.Context, name string) error
	// Stats returns every swarm's counters.
	Stats(ctx context.Context) ([]StreamStats, error)
}

// RelayRequest asks the plugin to relay an upstream node's stream (an
// edge): see Relayer.
type RelayRequest struct {
	// Stream is the stream's name, e.g. "live/KEY".
	Stream string
	// Upstream is host:port of the upstream node's peer port.
	Upstream string
	// StreamKey is the Ed25519 public key the upstream signs the
	// stream's manifests with: the relay verifies every segment with it
	// and hands it to its own peers.
	StreamKey []byte
	// Token is the join token presented upstream ("": one minted with
	// the plugin's token secret, if it has one).
	Token string
}

// RelayEvent is what a relay hands the host: a stream header, or one
// verified segment, in order (a gap is a segment the relay never got).
type RelayEvent struct {
	// Epoch is the upstream stream instance the event belongs to; a new
	// epoch means segment numbers started again.
	Epoch uint64
	// Header, when set, is a (new) stream header.
	Header []byte
	// Segment, when set, is a segment as the upstream signed it.
	Segment *Segment
}

// Relayer is implemented by a P2P that can relay an upstream node's
// swarm. Relay joins the stream's swarm at req.Upstream as a
// high-capacity peer, verifies each segment with req.StreamKey,
// re-serves the upstream's signed manifests unchanged in the plugin's
// own swarm of that name (its peers get the upstream's key and epoch, so
// peers of every node trust one key and can partner across nodes) and
// calls emit with the header and every segment. It returns when ctx ends
// (the relay's swarm ends with it), or with the error that stopped it;
// an error from emit stops it too. emit is called from one goroutine.
type Relayer interface {
	Relay(ctx context.Context, req RelayRequest, emit func(RelayEvent) error) error
}

// Validate checks a relay request against the contract's limits.
func (r *RelayRequest) Validate() error {
	switch {
	case r.Stream == "" || len(r.Stream) > MaxStreamName:
		return errors.Join(ErrInvalid, errors.New("stream name empty or too long"))
	case r.Upstream == "" || len(r.Upstream) > MaxStreamName:
		return errors.Join(ErrInvalid, errors.New("upstream address empty or too long"))
	case len(r.StreamKey) != ed25519.PublicKeySize:
		return errors.Join(ErrInvalid, errors.New("stream key is not 32 bytes (Ed25519)"))
	case len(r.Token) > MaxHeaderBytes:
		return errors.Join(ErrInvalid, errors.New("token over 64 KiB"))
	}
	if _, _, err := net.SplitHostPort(r.Upstream); err != nil {
		return errors.Join(ErrInvalid, fmt.Errorf("upstream %q is not host:port: %w", r.Upstream, err))
	}
	return nil
}

// Validate checks a segment against the contract's limits.
func (s *Segment) Validate() error {
	if s.Stream == "" || len(s.Stream) > MaxStreamName {
		return errors.Join(ErrInvalid, errors.New("stream name empty or too long"))
	}
	if len(s.Chunks) == 0 || len(s.Chunks) > MaxLayers {
		return errors.Join(ErrInvalid, errors.New("layer count outside 1..8"))
	}
	for _, c := range s.Chunks {
		if len(c) == 0 || len(c) > MaxChunkBytes {
			return errors.Join(ErrInvalid, errors.New("chunk size outside 1..16 MiB"))
		}
	}
	return nil
}

// Validate checks a stream announcement against the contract's limits.
func (i *StreamInfo) Validate() error {
	switch {
	case i.Name == "" || len(i.Name) > MaxStreamName:
		return errors.Join(ErrInvalid, errors.New("stream name empty or too long"))
	case len(i.Header) > MaxHeaderBytes:
		return errors.Join(ErrInvalid, errors.New("header over 64 KiB"))
	case i.Layers < 1 || i.Layers > MaxLayers:
		return errors.Join(ErrInvalid, errors.New("layers outside 1..8"))
	case i.SegmentDurationMs == 0 || i.SegmentDurationMs > 60000:
		return errors.Join(ErrInvalid, errors.New("segment duration outside 1ms..60s"))
	}
	return nil
}
