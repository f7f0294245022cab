package engine

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/push"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// This file is the server partner: the segments it adds, the seeds it
// announces them to first, its delayed announcements to everyone else,
// its control budget and the candidate lists it hands out.

type delayedHave struct {
	at      time.Time
	added   time.Time
	entries []wire.HaveEntry
}

// shed tells whether the server drops a control message of n bytes
// because its control budget (ControlShare of the upload cap, one second
// or 512 bytes of burst) is spent. Only messages whose loss a peer
// survives are budgeted: announcements to non-seeds (the next one implies
// the skipped ones), buffer maps and pings. Candidate lists are not (a
// newcomer without them has no partner), nor busy refusals (dropping them
// made peers wait for timeouts: N = 2000 fell from 0.86 to 0.71).
func (e *Engine) shed(m wire.Message, n int) bool {
	if e.cfg.UploadCap <= 0 || e.cfg.ControlShare < 0 {
		return false
	}
	switch m := m.(type) {
	case *wire.Have:
		if m.Flags&wire.HaveSeed != 0 {
			return false
		}
	case *wire.BufferMap, *wire.Ping:
	default:
		return false
	}
	now := e.env.Now()
	rate := e.cfg.ControlShare * e.cfg.UploadCap
	burst := max(rate, 512) // a second of budget, at least one large control message
	e.ctrlTokens = min(burst, e.ctrlTokens+rate*now.Sub(e.ctrlAt).Seconds())
	e.ctrlAt = now
	if e.ctrlTokens < float64(n) {
		return true
	}
	e.ctrlTokens -= float64(n)
	return false
}

// AddSegment stores a segment at the server: the signed manifest and the
// chunk of every layer. Peers learn of it by Have.
func (e *Engine) AddSegment(seq uint64, rawManifest []byte, chunks [][]byte) error {
	if !e.IsServer() {
		return errors.New("engine: AddSegment on a peer")
	}
	if len(chunks) == 0 || len(chunks) > e.cfg.Layers {
		return fmt.Errorf("engine: segment %d has %d layers (max %d)", seq, len(chunks), e.cfg.Layers)
	}
	if e.haveEdge && seq <= e.liveEdge {
		return fmt.Errorf("engine: segment %d is not after %d", seq, e.liveEdge)
	}
	man, _, err := manifest.Decode(rawManifest)
	if err != nil {
		return fmt.Errorf("engine: segment %d: %w", seq, err)
	}
	if man.Layers() != len(chunks) {
		return fmt.Errorf("engine: segment %d has %d layers, its manifest %d", seq, len(chunks), man.Layers())
	}
	e.segs[seq] = &seg{rawManifest: rawManifest, man: man, chunks: chunks, layers: len(chunks)}
	e.liveEdge, e.haveEdge = seq, true
	if seq >= e.have.Base()+uint64(e.have.Window()) {
		base := seq - uint64(e.have.Window()) + 1
		e.have.Advance(base)
		for s := range e.segs {
			if s < base {
				delete(e.segs, s)
			}
		}
	}
	haves := make([]wire.HaveEntry, len(chunks))
	size := 0
	for l := range chunks {
		e.have.Set(seq, l)
		haves[l] = wire.HaveEntry{Seq: seq, Layer: uint8(l)}
		size += len(chunks[l])
		e.noteChunkSize(l, len(chunks[l]))
	}
	rate := float64(size) / e.segDur.Seconds()
	if e.segRate == 0 {
		e.segRate = rate
	} else {
		e.segRate = 0.9*e.segRate + 0.1*rate
	}
	now := e.env.Now()
	seedMsg := &wire.Have{Flags: wire.HaveSeed, Entries: haves}
	if roots := e.push.roots[push.Substream(seq, e.push.k)]; e.push.k > 0 && len(roots) > 0 {
		// With push the seeds are the roots of each sub-stream: they hear
		// of the segments of theirs and are pushed them at once.
		for _, id := range roots {
			e.send(id, seedMsg)
		}
		for l := range chunks {
			e.forward(seq, l, -1, now)
		}
	} else {
		// No push, or a sub-stream without roots yet: seeds pull the
		// fresh segment at once (without them every peer waits for the
		// delayed announcement and then all ask the server together).
		if now.Sub(e.lastSeedPick) > 2*time.Second || len(e.seeds) == 0 {
			e.pickSeeds()
			e.lastSeedPick = now
		}
		for _, p := range e.list() {
			id := p.id
			if e.seeds[id] {
				e.send(id, seedMsg)
			}
		}
	}
	e.segs[seq].added = now
	e.delayed = append(e.delayed, delayedHave{at: now.Add(e.cfg.SeedDelay), added: now, entries: haves})
	return nil
}

// pickSeeds chooses the peers that hear of fresh segments first: the
// highest measured (or declared) upload, as many as the server's upload
// feeds with one copy kept in reserve for fallbacks.
func (e *Engine) pickSeeds() {
	n := e.cfg.Seeds
	if n <= 0 {
		n = 1
		if e.cfg.UploadCap > 0 && e.segRate > 0 {
			n = max(1, int(e.cfg.UploadCap/e.segRate)-1)
		}
	}
	type cand struct {
		id wire.PeerID
		up float64
	}
	var list []cand
	for _, p := range e.list() {
		id := p.id
		up := float64(p.reported.UploadRate)
		if cap := float64(p.hello.UploadCap); cap > up {
			up = cap
		}
		list = append(list, cand{id, up * (0.9 + 0.2*e.env.Rand().Float64())})
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].up > list[j].up })
	clear(e.seeds)
	for i := 0; i < len(list) && i < n; i++ {
		e.seeds[list[i].id] = true
	}
	for k := 0; k < e.push.k; k++ {
		for _, id := range e.push.roots[k] {
			e.seeds[id] = true // the push roots stay seeds
		}
	}
}

// flushDelayed sends due announcements to the peers that are not seeds:
// every segment due since the last flush in one compact Have (one entry
// per segment, HaveUpTo). The server speaks to every peer, so its
// per-peer control traffic must stay small: at 2 000 peers per-chunk
// announcements took half of a 5x upload cap.
func (e *Engine) flushDelayed(now time.Time) {
	if len(e.delayed) == 0 || now.Before(e.delayed[0].at) {
		return
	}
	i := 0
	var entries []wire.HaveEntry
	var newest time.Time
	for ; i < len(e.delayed) && !now.Before(e.delayed[i].at); i++ {
		d := e.delayed[i]
		top := d.entries[0]
		for _, h := range d.entries {
			top.Layer = max(top.Layer, h.Layer)
		}
		entries = append(entries, top)
		newest = d.added
	}
	e.delayed = e.delayed[i:]
	// The newest entry implies the others (up-to): one entry per peer.
	msg := &wire.Have{Flags: wire.HaveUpTo, AgeMs: uint32(now.Sub(newest) / time.Millisecond), Entries: entries[len(entries)-1:]}
	// Peers extrapolate the server's holdings on their playback clock
	// (extrapolateServer), so a peer hears from the server only every
	// edgeSyncInterval, and a newcomer in its first seconds, until its
	// clock has seen a few announcements.
	sync := now.Sub(e.lastSync) >= edgeSyncInterval
	if sync {
		e.lastSync = now
	}
	for _, p := range e.list() {
		id := p.id
		// With push, roots hear of the segments of their own sub-streams
		// at once and of every segment here (a few roots: the cost is theirs).
		if (e.push.k > 0 || !e.seeds[id]) && (sync || now.Sub(p.since) < edgeSyncNewcomer) {
			e.send(id, msg)
		}
	}
}

// SetHeader sets the stream header the server hands to every peer.
func (e *Engine) SetHeader(h []byte) {
	e.header = h
	for _, p := range e.list() {
		id := p.id
		e.send(id, &wire.StreamHeader{Header: h})
	}
}

// admitPeer is the server's admission of a Hello: peers only, with a
// valid join token.
func (e *Engine) admitPeer(h *wire.Hello) error {
	if h.Role != wire.RolePeer {
		return fmt.Errorf("%w: server to server", ErrProtocol)
	}
	if e.cfg.CheckToken != nil && !e.cfg.CheckToken(h.Stream, h.Token) {
		return ErrAuth
	}
	return nil
}

// peerJoined registers a connected peer with the tracker and welcomes it.
func (e *Engine) peerJoined(p *partner) {
	if e.cfg.Tracker != nil {
		e.cfg.Tracker.Join(p.id, p.view)
	}
	e.welcome(p)
}

// peerLeft keeps a departed peer's byte totals (the swarm's offload) and
// takes it out of the tracker.
func (e *Engine) peerLeft(p *partner) {
	e.departed.FromServer += p.reported.FromServer
	e.departed.FromPeers += p.reported.FromPeers
	if e.cfg.Tracker != nil {
		e.cfg.Tracker.Leave(p.id)
	}
}
