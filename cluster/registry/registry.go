// Package registry is the cluster's shared state about nodes and
// streams: which nodes (origins, edges) are alive, where they serve,
// their load, and which streams each serves with the stream's epoch and
// public key. Nodes heartbeat; a node that stops is gone within its TTL.
// Two backends: Memory (one node, the default) and Redis (several nodes
// sharing one redis-server). The package imports neither origin nor
// peerproto, so the origin and the plugin may both use it.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Role is a node's part in the cluster.
type Role string

// Roles.
const (
	// RoleOrigin takes publishers and runs the stream's swarm.
	RoleOrigin Role = "origin"
	// RoleEdge serves streams it gets from an origin (not built yet).
	RoleEdge Role = "edge"
)

// Defaults of Options (the origin's cluster.* config defaults are these).
const (
	// DefaultHeartbeat is how often a node refreshes its entry.
	DefaultHeartbeat = 2 * time.Second
	// DefaultTTL is how long an entry outlives its last heartbeat
	// (3 heartbeats).
	DefaultTTL = 3 * DefaultHeartbeat
	// DefaultMaxNodes caps the nodes kept; a new node beyond it evicts
	// the one whose heartbeat is oldest.
	DefaultMaxNodes = 256
	// DefaultMaxStreamsPerNode caps the streams one node may claim; the
	// rest of its list is dropped (by name order) and counted.
	DefaultMaxStreamsPerNode = 1024
	// DefaultMaxStreams caps the distinct streams a View lists.
	DefaultMaxStreams = 4096
	// DefaultPrefix namespaces the Redis keys.
	DefaultPrefix = "coop:"
	// maxValue bounds one node's encoded entry as read back from Redis.
	maxValue = 1 << 20
)

// Addresses are where a node serves (host:port; "" when it does not).
type Addresses struct {
	RTSP string `json:"rtsp,omitempty"`
	HLS  string `json:"hls,omitempty"`
	Peer string `json:"peer,omitempty"`
	API  string `json:"api,omitempty"`
}

// Load is what a node serves now.
type Load struct {
	// Peers is the P2P peers attached to the node's plugin.
	Peers int `json:"peers"`
	// Readers is the RTSP/HLS readers.
	Readers int `json:"readers"`
	// EgressBytesPerSec is the node's server-side media egress: RTSP,
	// HLS and the server partner's uploads to peers.
	EgressBytesPerSec float64 `json:"egressBytesPerSec"`
}

// Claim is one stream a node serves.
type Claim struct {
	Stream string `json:"stream"`
	// Epoch names the stream instance (signed into every manifest).
	Epoch uint64 `json:"epoch,omitempty"`
	// PublicKey verifies the stream's manifests (Ed25519).
	PublicKey []byte `json:"publicKey,omitempty"`
	// Peers is the peers of this stream at the node.
	Peers int `json:"peers"`
}

// Node is one node's entry.
type Node struct {
	ID      string    `json:"id"`
	Role    Role      `json:"role"`
	Addr    Addresses `json:"addr"`
	Load    Load      `json:"load"`
	Streams []Claim   `json:"streams"`
	// Seen is when the registry took its last heartbeat (set by the
	// backend).
	Seen time.Time `json:"seen"`
}

// Stream is a stream as the cluster sees it: the node that originates
// it and the nodes that relay it.
type Stream struct {
	Name string `json:"name"`
	// Origin is the origin-role node serving it (the lowest id when
	// several claim it: see OtherOrigins).
	Origin string `json:"origin,omitempty"`
	// OtherOrigins lists further origin-role nodes claiming the same
	// name (a conflict an operator should see).
	OtherOrigins []string `json:"otherOrigins,omitempty"`
	// Edges are the edge-role nodes serving it.
	Edges []string `json:"edges,omitempty"`
	// Epoch and PublicKey are the origin's.
	Epoch     uint64 `json:"epoch,omitempty"`
	PublicKey []byte `json:"publicKey,omitempty"`
	// Peers is the stream's peers over every node.
	Peers int `json:"peers"`
}

// Totals sum the live nodes.
type Totals struct {
	Nodes             int     `json:"nodes"`
	Streams           int     `json:"streams"`
	Peers             int     `json:"peers"`
	Readers           int     `json:"readers"`
	EgressBytesPerSec float64 `json:"egressBytesPerSec"`
}

// View is the cluster at one moment.
type View struct {
	// Backend is "memory" or "redis".
	Backend string   `json:"backend"`
	Nodes   []Node   `json:"nodes"`
	Streams []Stream `json:"streams"`
	Totals  Totals   `json:"totals"`
	// Dropped counts what the caps left out since start (streams beyond
	// a node's or the view's cap, nodes evicted).
	Dropped uint64 `json:"dropped"`
}

// Registry is the shared state. Every method is safe for concurrent use.
type Registry interface {
	// Heartbeat registers or refreshes a node with the streams it serves
	// now (its previous list is replaced: a stream not listed is
	// withdrawn). It rebuilds the entry after a backend restart.
	Heartbeat(ctx context.Context, n Node) error
	// Leave removes a node at once (a clean shutdown).
	Leave(ctx context.Context, id string) error
	// View reads the live nodes and the streams they serve.
	View(ctx context.Context) (View, error)
	// Close releases the backend.
	Close() error
}

// ErrInvalid marks a node entry the registry refuses.
var ErrInvalid = errors.New("registry: invalid node")

// Options bound a backend; zero fields take the defaults above.
type Options struct {
	TTL               time.Duration
	MaxNodes          int
	MaxStreamsPerNode int
	MaxStreams        int
	// Prefix namespaces Redis keys (Redis only).
	Prefix string
	// Now is the clock (Memory only; tests): time.Now when nil.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	if o.MaxNodes <= 0 {
		o.MaxNodes = DefaultMaxNodes
	}
	if o.MaxStreamsPerNode <= 0 {
		o.MaxStreamsPerNode = DefaultMaxStreamsPerNode
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// MaxIDLen bounds a node id and a stream name.
const MaxIDLen = 256

// normalize validates a heartbeat and caps its stream list; it returns
// how many claims it dropped.
func normalize(n *Node, maxStreams int) (int, error) {
	if n.ID == "" || len(n.ID) > MaxIDLen {
		return 0, fmt.Errorf("%w: id empty or longer than %d", ErrInvalid, MaxIDLen)
	}
	if n.Role != RoleOrigin && n.Role != RoleEdge {
		return 0, fmt.Errorf("%w: role %q", ErrInvalid, n.Role)
	}
	claims := make([]Claim, 0, len(n.Streams))
	for _, c := range n.Streams {
		if c.Stream != "" && len(c.Stream) <= MaxIDLen && len(c.PublicKey) <= 64 {
			claims = append(claims, c)
		}
	}
	slices.SortFunc(claims, func(a, b Claim) int { return strings.Compare(a.Stream, b.Stream) })
	claims = slices.CompactFunc(claims, func(a, b Claim) bool { return a.Stream == b.Stream })
	dropped := len(n.Streams) - len(claims)
	if len(claims) > maxStreams {
		dropped += len(claims) - maxStreams
		claims = claims[:maxStreams]
	}
	n.Streams = claims
	return dropped, nil
}

// aggregate builds a View from live nodes (any order).
func aggregate(backend string, nodes []Node, maxStreams int) View {
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	v := View{Backend: backend, Nodes: nodes, Streams: []Stream{}}
	byName := map[string]*Stream{}
	var names []string
	for _, n := range nodes {
		v.Totals.Peers += n.Load.Peers
		v.Totals.Readers += n.Load.Readers
		v.Totals.EgressBytesPerSec += n.Load.EgressBytesPerSec
		for _, c := range n.Streams {
			s := byName[c.Stream]
			if s == nil {
				if len(byName) >= maxStreams {
					v.Dropped++
					continue
				}
				s = &Stream{Name: c.Stream}
				byName[c.Stream] = s
				names = append(names, c.Stream)
			}
			s.Peers += c.Peers
			switch {
			case n.Role == RoleEdge:
				s.Edges = append(s.Edges, n.ID)
			case s.Origin == "": // nodes come in id order: the lowest id wins
				s.Origin, s.Epoch, s.PublicKey = n.ID, c.Epoch, c.PublicKey
			default:
				s.OtherOrigins = append(s.OtherOrigins, n.ID)
			}
		}
	}
	slices.Sort(names)
	for _, name := range names {
		v.Streams = append(v.Streams, *byName[name])
	}
	v.Totals.Nodes, v.Totals.Streams = len(nodes), len(v.Streams)
	return v
}

// encodeNode and decodeNode are the Redis value of a node entry.
func encodeNode(n Node) ([]byte, error) { return json.Marshal(n) }

// decodeNode reads a node entry written by another node: bounded in size,
// and checked as a heartbeat is.
func decodeNode(b []byte, maxStreams int) (Node, error) {
	var n Node
	if len(b) > maxValue {
		return n, fmt.Errorf("%w: entry of %d bytes", ErrInvalid, len(b))
	}
	if err := json.Unmarshal(b, &n); err != nil {
		return n, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := normalize(&n, maxStreams); err != nil {
		return n, err
	}
	return n, nil
}
