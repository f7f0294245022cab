package engine

import (
	"crypto/ed25519"
	"slices"
	"time"

	"github.com/coopstreaming/coop/peerproto/buffermap"
	"github.com/coopstreaming/coop/peerproto/monitor"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// ConnBacklog is an optional Env method: the bytes queued for one
// connection. A driver that has it lets the engine skip a partner whose
// own queue is full and keep serving the others (a stopped receiver
// loses its own data, never anyone else's); without it the engine stops
// serving while UploadBacklog, all connections together, is full.
type ConnBacklog interface {
	Backlog(to wire.PeerID) int
}

// Epoch is the stream instance the node follows (server: serves).
func (e *Engine) Epoch() uint64 { return e.epoch }

// Restart begins a new instance of the stream at the server: segment
// numbers may start again from zero. Every held segment is dropped and
// every connected peer gets a Welcome with the new epoch (and the
// header), on which it resets its buffer and playback clock.
func (e *Engine) Restart(epoch uint64) {
	if !e.IsServer() {
		return
	}
	e.epoch = epoch
	e.segs = make(map[uint64]*seg)
	e.have = buffermap.New(0, e.cfg.Window, e.cfg.Layers)
	e.liveEdge, e.haveEdge, e.impliedEdge = 0, false, 0
	e.announcedEdge, e.notFoundSet, e.streamLayers = 0, false, 0
	e.queue, e.delayed, e.pendingHaves = nil, nil, nil
	clear(e.seeds)
	for _, p := range e.list() {
		e.welcome(p)
		e.send(p.id, e.have.Encode())
	}
}

// welcome sends a newly connected (or restarted) peer the server's Welcome
// and the stream header.
func (e *Engine) welcome(p *partner) {
	var key []byte
	if e.cfg.SignKey != nil {
		key = e.cfg.SignKey.Public().(ed25519.PublicKey)
	}
	e.send(p.id, &wire.Welcome{Peer: e.cfg.ID, SegmentDurationMs: uint32(e.segDur / time.Millisecond),
		LiveEdge: e.liveEdge, Partners: uint16(len(e.partners)), StreamKey: key,
		Epoch: e.epoch, Layers: uint8(e.cfg.Layers)})
	if e.header != nil {
		e.send(p.id, &wire.StreamHeader{Header: e.header})
	}
}

// onServerWelcome follows the server's stream instance: a new epoch (the
// stream restarted, or the origin or plugin did) resets the peer's
// buffer, playback clock and statistics; a learnt stream key may change
// with it, a pinned one never. It reports whether the Welcome is accepted.
func (e *Engine) onServerWelcome(m *wire.Welcome, now time.Time) bool {
	layers := int(m.Layers)
	if layers == 0 || layers > wire.MaxLayers {
		layers = e.cfg.Layers
	}
	restart := e.epochKnown && m.Epoch != e.epoch
	if restart || (layers != e.cfg.Layers && !e.started) {
		e.cfg.Layers = layers
		e.resetStream(now)
		if restart && !e.keyPinned {
			e.cfg.StreamKey = nil // learnt from this server again below
		}
	}
	e.epoch, e.epochKnown = m.Epoch, true
	if len(m.StreamKey) == ed25519.PublicKeySize {
		switch {
		case e.cfg.StreamKey == nil:
			e.cfg.StreamKey = ed25519.PublicKey(slices.Clone(m.StreamKey))
		case !e.cfg.StreamKey.Equal(ed25519.PublicKey(m.StreamKey)):
			e.stats.LastBan = "server presented another stream key"
			return false
		}
	}
	return true
}

// resetStream forgets everything of the previous stream instance: held
// segments, partners' maps and requests, the playback clock, QoS and the
// statistics. Peer partners are dropped (their maps number the old
// instance); the refill finds partners of the new one.
func (e *Engine) resetStream(now time.Time) {
	epochs := e.stats.Epochs + 1
	e.segs = make(map[uint64]*seg)
	e.have = buffermap.New(0, e.cfg.Window, e.cfg.Layers)
	e.liveEdge, e.haveEdge, e.impliedEdge = 0, false, 0
	e.announcedEdge, e.notFoundSet, e.streamLayers = 0, false, 0
	e.clock.Reset()
	e.playing, e.started = false, false
	e.startSeq, e.playhead = 0, 0
	e.qos = newQoS(e.cfg)
	e.pendingHaves, e.queue = nil, nil
	e.seenLayer = [wire.MaxLayers]bool{}
	for l := range e.chunkSizes {
		e.chunkSizes[l] = initialChunkSize
	}
	e.downCap = monitor.Peak{}
	e.lastArrival, e.busySince = time.Time{}, time.Time{}
	e.joinedAt = now
	e.stats = Stats{Layers: e.cfg.Layers, Epochs: epochs, Banned: e.stats.Banned, LastBan: e.stats.LastBan}
	for _, p := range e.list() {
		p.inflight = make(map[chunkKey]*request)
		p.inBytes, p.inLayer, p.bm, p.upToSet, p.upTo = 0, [wire.MaxLayers]int{}, nil, false, 0
		if !p.server {
			e.env.Disconnect(p.id)
		}
	}
	if e.cfg.OnRestart != nil {
		e.cfg.OnRestart()
	}
}
