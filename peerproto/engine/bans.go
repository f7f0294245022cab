package engine

import (
	"bytes"
	"fmt"
	"time"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// Limits of the state keyed by ids a remote party chooses.
const (
	// MaxBans bounds a node's ban list; past it the oldest ban goes.
	MaxBans = 1024
	// BanTTL is how long a local ban lasts. A ban is a node's own verdict
	// on data it checked itself; nobody else's word bans anyone.
	BanTTL = 10 * time.Minute
)

// banList is a node's local, temporary bans: at most MaxBans entries,
// each for BanTTL, the oldest evicted first.
type banList struct {
	until map[wire.PeerID]time.Time
	order []banEntry // insertion order, oldest first (may hold stale entries)
}

type banEntry struct {
	id    wire.PeerID
	until time.Time
}

func newBanList() *banList { return &banList{until: make(map[wire.PeerID]time.Time)} }

// add bans id until now+BanTTL; it tells whether id was not banned yet.
func (b *banList) add(id wire.PeerID, now time.Time) bool {
	b.prune(now)
	_, had := b.until[id]
	for !had && len(b.until) >= MaxBans && len(b.order) > 0 {
		old := b.order[0]
		b.order = b.order[1:]
		if b.until[old.id] == old.until {
			delete(b.until, old.id)
		}
	}
	until := now.Add(BanTTL)
	b.until[id] = until
	b.order = append(b.order, banEntry{id, until})
	if len(b.order) > 2*MaxBans { // re-bans leave stale entries behind
		b.compact()
	}
	return !had
}

// has tells whether id is banned now.
func (b *banList) has(id wire.PeerID, now time.Time) bool {
	until, ok := b.until[id]
	return ok && now.Before(until)
}

// prune forgets expired bans.
func (b *banList) prune(now time.Time) {
	for len(b.order) > 0 && !now.Before(b.order[0].until) {
		old := b.order[0]
		b.order = b.order[1:]
		if b.until[old.id] == old.until {
			delete(b.until, old.id)
		}
	}
}

func (b *banList) compact() {
	kept := make([]banEntry, 0, len(b.until))
	for _, e := range b.order {
		if b.until[e.id] == e.until {
			kept = append(kept, e)
		}
	}
	b.order = kept
}

func (b *banList) len() int { return len(b.until) }

// ban bans a partner that sent data failing verification: locally and for
// BanTTL. The server is told (Accuse), but it bans nobody on a peer's
// word (two sybils could otherwise evict an honest peer): it probes the
// accused itself (onAccuse).
func (e *Engine) ban(p *partner, err error) {
	now := e.env.Now()
	e.stats.BadData++
	if e.bans.add(p.id, now) {
		e.stats.Banned++
	}
	e.stats.LastBan = err.Error()
	e.env.Disconnect(p.id)
	if e.serverID != 0 && !p.server {
		e.send(e.serverID, &wire.Accuse{Peer: p.id, Reason: err.Error()})
	}
}

// probeTimeout bounds the server's wait for a probed chunk.
const probeTimeout = 5 * time.Second

// onAccuse: an accusation is a claim, not evidence (the accuser cannot
// prove who sent it the bytes), so nobody is banned on it. The server
// checks the accused itself: it asks it for a chunk both hold and
// compares the bytes with its own (probe, at most one per partner at a
// time; ids that are not connected partners cost nothing). Only data
// the server received itself gets a node banned swarm-wide. At a peer,
// an Accuse from the server is such a verdict; from anyone else it is
// ignored.
func (e *Engine) onAccuse(from *partner, m *wire.Accuse) {
	now := e.env.Now()
	if !e.IsServer() {
		if from.server && e.bans.add(m.Peer, now) {
			e.stats.Banned++
			delete(e.candidates, m.Peer)
			if e.partners[m.Peer] != nil {
				e.env.Disconnect(m.Peer)
			}
		}
		return
	}
	e.stats.Accusations++
	p := e.partners[m.Peer]
	if p == nil || p.server || p.bm == nil || now.Sub(p.probeAt) < probeTimeout {
		return
	}
	for seq := e.liveEdge; e.haveEdge && seq >= e.have.Base() && seq+uint64(e.have.Window()) > e.liveEdge; seq-- {
		s := e.segs[seq]
		if s != nil && len(s.chunks) > 0 && s.chunks[0] != nil && p.bm.Has(seq, 0) {
			p.probeAt, p.probe = now, chunkKey{seq, 0}
			e.stats.Probes++
			e.send(p.id, &wire.Request{Seq: seq, Layer: 0})
			return
		}
		if seq == 0 {
			return
		}
	}
}

// checkProbe compares a chunk a probed partner sent the server with the
// server's own copy: a mismatch is evidence, and the sender is banned
// swarm-wide (every peer is told).
func (e *Engine) checkProbe(p *partner, m *wire.Data, now time.Time) {
	k := chunkKey{m.Seq, int(m.Layer)}
	if p.probeAt.IsZero() || p.probe != k || now.Sub(p.probeAt) > probeTimeout {
		return
	}
	s := e.segs[m.Seq]
	var own []byte
	ok := false
	if s != nil {
		own, ok = s.piece(k.layer, int(m.Piece))
	}
	if !ok || bytes.Equal(own, m.Payload) {
		if !ok || int(m.Piece) >= s.man.Pieces(k.layer)-1 {
			p.probeAt = time.Time{} // every piece matched (or nothing to compare)
		}
		return
	}
	p.probeAt = time.Time{}
	if e.bans.add(p.id, now) {
		e.stats.Banned++
	}
	e.stats.LastBan = fmt.Sprintf("peer %d served the server a bad chunk of segment %d", p.id, m.Seq)
	verdict := &wire.Accuse{Peer: p.id, Reason: "served bad data to the server"}
	for _, q := range e.list() {
		if q.id != p.id {
			e.send(q.id, verdict)
		}
	}
	e.env.Disconnect(p.id)
}

// Banned tells whether a node is banned (locally, for BanTTL).
func (e *Engine) Banned(id wire.PeerID) bool { return e.bans.has(id, e.env.Now()) }

// BanCount is the number of nodes banned now (at most MaxBans).
func (e *Engine) BanCount() int { return e.bans.len() }
