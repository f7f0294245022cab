// Package engine is a CoopStreaming node: a peer, or the server partner
// that every peer keeps. It is a state machine without goroutines or I/O of
// its own: a driver delivers connections, messages and ticks one at a time
// and the engine acts through an Env (clock, randomness, transport). The same
// code therefore runs over TCP, over the in-memory network and inside the
// discrete-event simulator.
package engine

import (
	"crypto/ed25519"
	"math/rand/v2"
	"time"

	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/monitor"
	"github.com/coopstreaming/coop/peerproto/partners"
	"github.com/coopstreaming/coop/peerproto/playback"
	"github.com/coopstreaming/coop/peerproto/push"
	"github.com/coopstreaming/coop/peerproto/qos"
	"github.com/coopstreaming/coop/peerproto/scheduler"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// Env is what the engine needs from its driver. Calls never block.
type Env interface {
	// Now is the current time (real or simulated).
	Now() time.Time
	// Send queues m for a connected node; it is dropped if not connected.
	Send(to wire.PeerID, m wire.Message)
	// UploadBacklog is the number of bytes queued for sending, all
	// connections together.
	UploadBacklog() int
	// Dial connects to a candidate; the driver later calls Connected (after
	// both Hellos) or DialFailed.
	Dial(c wire.Candidate)
	// Disconnect closes the connection to a node; the driver then calls
	// Disconnected.
	Disconnect(to wire.PeerID)
	// Rand is the node's source of randomness.
	Rand() *rand.Rand
}

// Config configures a node. Zero fields take the defaults in brackets.
type Config struct {
	// Role is wire.RolePeer or wire.RoleServer.
	Role wire.Role
	// ID is the node's identity in the swarm.
	ID wire.PeerID
	// Stream names the stream.
	Stream string
	// ListenAddr is where partners can reach this node.
	ListenAddr string
	// Token is the join token a peer presents.
	Token string
	// CheckToken validates a joining peer's token (server; nil: open).
	CheckToken func(stream, token string) bool
	// StreamKey verifies segment manifests (peers).
	StreamKey ed25519.PublicKey
	// Manifests, when set, is shared by the engines of one process (the
	// simulator's) so that each manifest's signature is checked once for
	// all of them [nil: each engine checks every manifest it receives].
	Manifests *manifest.Cache
	// SignKey signs manifests (server; used by AddSegment callers).
	SignKey ed25519.PrivateKey
	// Epoch names the stream instance the server serves (in its Welcome
	// and in the manifests its driver signs) [0]; Restart changes it.
	Epoch uint64
	// SegmentDuration is the nominal segment duration (server; a peer
	// takes the server's from its Welcome) [playback.DefaultSegmentDuration].
	SegmentDuration time.Duration
	// Layers is the number of layers of the stream [DefaultLayers].
	Layers int
	// Partners is the target number of peer partners M
	// [partners.DefaultTarget, 10].
	Partners int
	// MaxPartners bounds peer partners, inbound included [Partners+4].
	MaxPartners int
	// Window is the buffer map window in segments (multiple of 64) [64].
	Window int
	// KeepBehind is how many played segments a peer keeps for others [16].
	KeepBehind int
	// PlayoutDelay is the target delay between a segment reaching the
	// server and its playback deadline [playback.DefaultPlayoutDelay, 5s].
	PlayoutDelay time.Duration
	// MinStartSlack is the least time a newcomer allows itself to fetch
	// its first segment [playback.DefaultMinStartSlack, 3s]: shorter starts faster but misses more in the
	// first seconds, when the newcomer has few partners.
	MinStartSlack time.Duration
	// UploadCap bounds the node's media upload in bytes/s (0: none).
	UploadCap float64
	// MaxBacklog bounds bytes queued on the transport before the engine
	// stops serving [max(16 KiB, UploadCap × 0.1 s)]: per connection when
	// the Env has ConnBacklog (a full partner is skipped), else in total.
	MaxBacklog int
	// Seeds is how many peers the server announces a fresh segment to at
	// once (the highest-upload ones); the others hear of it SeedDelay
	// later and normally fetch it from partners [server upload ÷ stream
	// rate − 1, at least 1].
	Seeds int
	// SeedDelay delays the server's announcement to non-seed peers [1s].
	SeedDelay time.Duration
	// ControlShare caps the server's upload spent on control messages it
	// can skip — announcements to non-seeds, buffer maps and pings — at
	// this share of UploadCap [0.2]; past it they are dropped, so seeding
	// never starves behind control traffic that grows with the number of
	// peers. Negative: no cap.
	ControlShare float64
	// Urgent is the slack under which a chunk may come from the server
	// even if no partner holds it [scheduler.DefaultUrgent, 1.5s].
	Urgent time.Duration
	// Tracker is the server's directory of its swarm, asked for the
	// candidates handed to peers (server) [nil: the server ranks its own
	// partners, which are every peer it serves].
	Tracker Tracker
	// ServerQueue bounds the requests the server holds before answering
	// Busy [64].
	ServerQueue int
	// QoS configures layer control.
	QoS qos.Config
	// DisableQoS keeps every layer whatever the ratio of miss, from the
	// start (no slow start either: the ablation switches off QoS only).
	DisableQoS bool
	// DisableRandomFirst turns random first off (ablation).
	DisableRandomFirst bool
	// DisableRarestFirst orders by deadline only (ablation).
	DisableRarestFirst bool
	// DisableServerFallback makes the server a plain source: a peer asks
	// it only for the fresh segments it was seeded with, never for chunks
	// its partners cannot deliver in time (ablation: without server
	// partnership).
	DisableServerFallback bool
	// Substreams is the number of push sub-streams [push.DefaultSubstreams].
	Substreams int
	// NewcomerBaseOnly is how long a newcomer whose download is not
	// measured yet subscribes to the base layer only, at peer parents and
	// at the server [push.DefaultNewcomerBaseOnly; negative: never].
	NewcomerBaseOnly time.Duration
	// DisablePush turns push off: every chunk is pulled (ablation).
	DisablePush bool
	// SkipVerify trusts data without checking manifests (simulator speed;
	// never on a network).
	SkipVerify bool
	// OnPlay receives each played segment's chunks (nil layers: missed).
	OnPlay func(seq uint64, layers [][]byte)
	// OnHeader receives the stream header.
	OnHeader func(header []byte)
	// OnSegment receives each segment as soon as every layer of it is
	// held and verified, with its signed manifest unchanged (peer; an edge
	// re-serves them in its own swarm). The slices must not be modified.
	OnSegment func(seq uint64, rawManifest []byte, layers [][]byte)
	// OnRestart is called when a peer sees the server's stream restart
	// (a new epoch) and resets its buffer and playback clock.
	OnRestart func()
}

func (c Config) withDefaults() Config {
	if c.Role == 0 {
		c.Role = wire.RolePeer
	}
	if c.SegmentDuration <= 0 {
		c.SegmentDuration = playback.DefaultSegmentDuration
	}
	if c.Layers <= 0 {
		c.Layers = DefaultLayers
	}
	if c.Partners <= 0 {
		c.Partners = partners.DefaultTarget
	}
	if c.MaxPartners <= 0 {
		c.MaxPartners = c.Partners + 4
	}
	if c.Window <= 0 {
		c.Window = 64
	}
	if c.KeepBehind <= 0 {
		c.KeepBehind = 16
	}
	if c.PlayoutDelay <= 0 {
		c.PlayoutDelay = playback.DefaultPlayoutDelay
	}
	if c.MinStartSlack <= 0 {
		c.MinStartSlack = playback.DefaultMinStartSlack
	}
	if c.MaxBacklog <= 0 {
		c.MaxBacklog = max(16<<10, int(c.UploadCap/10))
	}
	if c.SeedDelay <= 0 {
		c.SeedDelay = time.Second
	}
	if c.ControlShare == 0 {
		c.ControlShare = 0.2
	}
	if c.Urgent <= 0 {
		c.Urgent = scheduler.DefaultUrgent
	}
	if c.ServerQueue <= 0 {
		c.ServerQueue = 64
	}
	if c.Substreams <= 0 {
		c.Substreams = push.DefaultSubstreams
	}
	if c.NewcomerBaseOnly == 0 {
		c.NewcomerBaseOnly = push.DefaultNewcomerBaseOnly
	}
	return c
}

// DefaultLayers is the layer count of a stream when none is configured.
// The origin's segmenter uses segment.DefaultLayers, which peerproto may
// not import; integration/defaults_test.go keeps the two equal.
const DefaultLayers = 3

// initialChunkSize is the chunk size a peer assumes per layer until it
// has seen one.
const initialChunkSize = 40 << 10

// newRateMeter is the meter of every measured rate (media in and out, per
// partner and in total): 10 s in 20 buckets.
func newRateMeter() *monitor.Meter { return monitor.NewMeter(10*time.Second, 20) }

// Intervals of periodic work.
const (
	bufferMapInterval = 5 * time.Second
	pingInterval      = 2 * time.Second
	manageInterval    = 2 * time.Second
	reportInterval    = 5 * time.Second
	idleTimeout       = 12 * time.Second
	busyBackoff       = 300 * time.Millisecond
	// serverBackoffMax caps the back-off after the server's busy
	// refusals (busyBackoff doubled per refusal in a row).
	serverBackoffMax = 4 * time.Second
	// The server partner's control toward each peer is small and fixed:
	// each announcement to a non-seed names only the newest segment
	// (up-to implies the others), and a peer also implies the server's
	// holdings from its partners' announcements (what a partner holds, the
	// server holds); the server pings a peer at connect and every
	// serverPingInterval (the peer's pings keep the connection alive),
	// and a peer pings it every serverPingEvery-th round.
	serverPingInterval = 30 * time.Second
	serverPingEvery    = 4
	// candidateServerEvery: a peer with at least half its partners asks
	// the server for candidates at most this often (its partners every
	// second).
	candidateServerEvery = 10 * time.Second
	// serverCandidates is how many candidates a peer asks the server
	// for, busyCandidates how many the server answers with while its
	// uplink is backed up (a list is ~35 B a candidate).
	serverCandidates = 16
	busyCandidates   = 8
	// repairBacklog: the server serves a non-seed's request only while
	// less than this much of its upload is queued on its uplink
	// (repairWaits). Measured in the simulator (TestSimQuick, 3 seeds):
	// 20 ms gave N = 500 0.997 at 3.8 server copies per segment and
	// N = 1000 0.991 at 3.3, against 0.995 at 4.4 and 0.991 at 4.2 with no
	// such rule; 10 ms and 50 ms did less well.
	repairBacklog = 20 * time.Millisecond
	// edgeSyncInterval: the server announces its edge to every peer this
	// often (each peer extrapolates between, on its playback clock), and
	// to a peer connected less than edgeSyncNewcomer ago at every segment.
	// extrapolateAhead bounds the extrapolation past the newest segment
	// the server announced (segments). At N = 5000 per-segment
	// announcements were 6.9 MB of the server's 24 MB of control in 60 s.
	edgeSyncInterval = 5 * time.Second
	edgeSyncNewcomer = 3 * time.Second
	extrapolateAhead = 24
	// impliedAhead bounds how far past the known live edge a partner's
	// announcement moves the server's implied holdings (segments).
	impliedAhead = 8
)
