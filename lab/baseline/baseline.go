// Package baseline holds what the simulator's baseline overlays — the
// degree-bounded push tree (package tree) and the DONet gossip mesh
// (package donet) — share: a playback clock and counters with the same
// definitions as the peerproto engine's (docs/metrics.md), and byte
// accounting on every message, so every protocol is measured alike.
//
// Baselines carry a single layer: each segment is one chunk.
package baseline

import (
	"time"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/playback"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// ServerID is the server's ID (as in package swarm): the tree's root, the
// mesh's source and bootstrap node.
const ServerID wire.PeerID = 1

// Config is what every baseline node knows of the stream.
type Config struct {
	ID wire.PeerID
	// Server tells whether this node is the stream's source.
	Server bool
	// Upload is the node's upload capacity in bytes/s.
	Upload float64
	// StreamRate is the stream's rate in bytes/s.
	StreamRate float64
	// SegmentDuration is δ [playback.DefaultSegmentDuration].
	SegmentDuration time.Duration
	// PlayoutDelay is how long after reaching the server a segment is due
	// [playback.DefaultPlayoutDelay, as the engine].
	PlayoutDelay time.Duration
	// MinStartSlack is the least time a newcomer allows itself to fetch
	// its first segment [playback.DefaultMinStartSlack, as the engine].
	MinStartSlack time.Duration
}

// Defaults fills zero fields.
func (c *Config) Defaults() {
	if c.SegmentDuration <= 0 {
		c.SegmentDuration = playback.DefaultSegmentDuration
	}
	if c.PlayoutDelay <= 0 {
		c.PlayoutDelay = playback.DefaultPlayoutDelay
	}
	if c.MinStartSlack <= 0 {
		c.MinStartSlack = playback.DefaultMinStartSlack
	}
}

// Node is the part every baseline host shares: its environment, its
// segment store, its playback clock and its counters.
type Node struct {
	Cfg Config
	Env engine.Env
	// Segs holds the segments the node has (payload by sequence number).
	Segs map[uint64][]byte
	// Newest is the newest segment held (valid when HaveAny).
	Newest  uint64
	HaveAny bool
	// Push-only overlays cannot fetch the past: Player then starts at
	// the first segment received.
	pushOnly bool

	joined   time.Time
	clock    playback.Clock
	playing  bool
	playhead uint64
	stats    engine.Stats
	// Diagnose, when set, explains a missed segment: it returns which
	// miss counter of the stats to bump.
	Diagnose func(seq uint64, st *engine.Stats)
}

// NewNode returns a node that joined now. pushOnly is for overlays that
// cannot fetch segments older than their arrival.
func NewNode(cfg Config, env engine.Env, pushOnly bool) *Node {
	cfg.Defaults()
	return &Node{Cfg: cfg, Env: env, Segs: map[uint64][]byte{}, joined: env.Now(), pushOnly: pushOnly,
		clock: playback.Clock{SegmentDuration: cfg.SegmentDuration, PlayoutDelay: cfg.PlayoutDelay},
		stats: engine.Stats{Layers: 1}}
}

// Send sends m and counts its bytes.
func (n *Node) Send(to wire.PeerID, m wire.Message) {
	size := wire.FrameSize(m)
	if d, ok := m.(*wire.Data); ok {
		n.stats.MediaBytesOut += uint64(len(d.Payload))
		n.stats.ControlBytesOut += uint64(size - len(d.Payload))
		n.stats.ServedChunks++
	} else {
		n.stats.ControlBytesOut += uint64(size)
	}
	n.Env.Send(to, m)
}

// CountIn counts a received message's bytes.
func (n *Node) CountIn(m wire.Message) {
	size := wire.FrameSize(m)
	if d, ok := m.(*wire.Data); ok {
		n.stats.MediaBytesIn += uint64(len(d.Payload))
		n.stats.ControlBytesIn += uint64(size - len(d.Payload))
	} else {
		n.stats.ControlBytesIn += uint64(size)
	}
}

// CountHello counts a Hello in either direction.
func (n *Node) CountHello(h *wire.Hello, in bool) {
	if in {
		n.stats.ControlBytesIn += uint64(wire.FrameSize(h))
	} else {
		n.stats.ControlBytesOut += uint64(wire.FrameSize(h))
	}
}

// Hello is the node's Hello.
func (n *Node) Hello() *wire.Hello {
	role := wire.RolePeer
	if n.Cfg.Server {
		role = wire.RoleServer
	}
	h := &wire.Hello{Protocol: "baseline", Version: 1, Role: role, Stream: "live/sim", Peer: n.Cfg.ID, UploadCap: uint64(n.Cfg.Upload)}
	n.CountHello(h, false)
	return h
}

// Anchor places the playback clock: the server holds liveEdge now. Only
// the first call counts (as a player, the clock never jumps).
func (n *Node) Anchor(liveEdge uint64, now time.Time) {
	if n.clock.Anchored() || n.Cfg.Server {
		return
	}
	n.clock.Anchor(liveEdge, now)
	if n.pushOnly {
		return
	}
	n.startAt(n.chooseStart(now))
}

// Anchored tells whether the playback clock is placed.
func (n *Node) Anchored() bool { return n.clock.Anchored() }

func (n *Node) chooseStart(now time.Time) uint64 {
	back := uint64(2 * n.Cfg.PlayoutDelay / n.Cfg.SegmentDuration)
	return n.clock.Start(now, n.Cfg.MinStartSlack, back)
}

func (n *Node) startAt(seq uint64) {
	n.playhead, n.playing = seq, true
}

// Deadline is the playback deadline of seq.
func (n *Node) Deadline(seq uint64) time.Time { return n.clock.Deadline(seq) }

// Playhead is the next segment to play (valid once playing).
func (n *Node) Playhead() (uint64, bool) { return n.playhead, n.playing }

// Store keeps a received segment and counts its bytes as useful,
// duplicate or late. It reports whether the segment was new.
func (n *Node) Store(seq uint64, payload []byte, fromServer bool) bool {
	if _, ok := n.Segs[seq]; ok {
		n.stats.DuplicateBytes += uint64(len(payload))
		return false
	}
	now := n.Env.Now()
	if n.pushOnly && !n.playing && n.clock.Anchored() && !n.Deadline(seq).Before(now) {
		n.startAt(seq)
	}
	if n.playing && seq < n.playhead && !n.Cfg.Server {
		n.stats.LateBytes += uint64(len(payload))
	} else if !n.Cfg.Server {
		if fromServer {
			n.stats.UsefulFromServer += uint64(len(payload))
		} else {
			n.stats.UsefulFromPeers += uint64(len(payload))
		}
	}
	n.Segs[seq] = payload
	if !n.HaveAny || seq > n.Newest {
		n.Newest, n.HaveAny = seq, true
	}
	return true
}

// Play plays every segment whose deadline has passed and forgets
// segments more than two playout delays behind the playhead (behind the
// newest, at the server).
func (n *Node) Play(now time.Time) {
	keep := uint64(2 * n.Cfg.PlayoutDelay / n.Cfg.SegmentDuration)
	if n.Cfg.Server {
		for seq := range n.Segs {
			if n.HaveAny && seq+keep < n.Newest {
				delete(n.Segs, seq)
			}
		}
		return
	}
	if !n.playing {
		return
	}
	for !now.Before(n.Deadline(n.playhead)) {
		seq := n.playhead
		present := 0
		if _, ok := n.Segs[seq]; ok {
			present = 1
		}
		n.stats.RecordDeadline(present, 1, 1)
		if present == 0 && n.stats.Started && n.Diagnose != nil {
			n.Diagnose(seq, &n.stats)
		}
		if present > 0 && !n.stats.Started {
			n.stats.Started = true
			n.stats.StartupDelay = now.Sub(n.joined)
		}
		n.stats.PlayedAt = append(n.stats.PlayedAt, engine.PlayRecord{Seq: seq, At: now, Layers: present, Subscribed: 1, SegLayers: 1})
		if len(n.stats.PlayedAt) > 4096 {
			n.stats.PlayedAt = n.stats.PlayedAt[2048:]
		}
		n.playhead++
	}
	for seq := range n.Segs {
		if seq+keep < n.playhead {
			delete(n.Segs, seq)
		}
	}
}

// AddSource stores a segment from the stream's source (the server's
// input), its layers joined into one chunk; isNew is false for a repeat.
func (n *Node) AddSource(seq uint64, chunks [][]byte) (payload []byte, isNew bool) {
	for _, c := range chunks {
		payload = append(payload, c...)
	}
	return payload, n.Store(seq, payload, true)
}

// Stats returns the node's counters.
func (n *Node) Stats() engine.Stats { return n.stats }

// Layers is 1: baselines carry one layer.
func (n *Node) Layers() int { return 1 }

// Close does nothing: the network closes the connections.
func (n *Node) Close() {}
