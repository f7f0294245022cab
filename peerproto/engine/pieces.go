package engine

import (
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// This file is the piece store: a chunk travels as pieces (the signed
// manifest gives their size and hashes). A piece is verified the moment it
// arrives, kept, and forwarded to push children at once (cut-through: a
// hop costs one piece, not one chunk); the chunk counts as held — announced,
// served to pulls, played — when its last piece is in.

// partial is a chunk being assembled from its pieces.
type partial struct {
	buf []byte
	got uint64 // bit i: piece i held (manifest.MaxPieces ≤ 64)
	n   int
}

// piece returns piece i of a layer if the segment holds it (whole chunk or
// partial).
func (s *seg) piece(layer, i int) ([]byte, bool) {
	if s.man == nil || i < 0 || i >= s.man.Pieces(layer) {
		return nil, false
	}
	if layer < len(s.chunks) && s.chunks[layer] != nil {
		return s.man.Piece(s.chunks[layer], i), true
	}
	if layer < len(s.parts) && s.parts[layer] != nil && s.parts[layer].got&(1<<i) != 0 {
		return s.man.Piece(s.parts[layer].buf, i), true
	}
	return nil, false
}

// storePiece keeps piece i of a layer's chunk (already verified). It
// returns the whole chunk when this piece completes it, and dup when the
// piece was held already.
func (s *seg) storePiece(layer, i int, data []byte) (chunk []byte, dup bool) {
	if layer < len(s.chunks) && s.chunks[layer] != nil {
		return nil, true
	}
	if s.man.Pieces(layer) == 1 {
		return data, false // the frame's own buffer: no copy
	}
	for len(s.parts) <= layer {
		s.parts = append(s.parts, nil)
	}
	pt := s.parts[layer]
	if pt == nil {
		pt = &partial{buf: make([]byte, s.man.Chunks[layer].Size)}
		s.parts[layer] = pt
	}
	bit := uint64(1) << i
	if pt.got&bit != 0 {
		return nil, true
	}
	copy(pt.buf[i*int(s.man.PieceSize):], data)
	pt.got |= bit
	pt.n++
	if pt.n < s.man.Pieces(layer) {
		return nil, false
	}
	s.parts[layer] = nil
	return pt.buf, false
}

// learnManifest takes the segment's manifest from a Data message when the
// segment has none yet: verified against the stream key (or only decoded
// when the configuration skips verification). It reports whether the
// segment's pieces can be checked now; a bad manifest bans the sender.
func (e *Engine) learnManifest(p *partner, s *seg, m *wire.Data) bool {
	if s.man != nil {
		return true
	}
	if len(m.Manifest) == 0 {
		e.stats.Unverifiable++
		return false
	}
	var man *manifest.Manifest
	var err error
	if e.cfg.SkipVerify {
		man, _, err = manifest.Decode(m.Manifest)
	} else {
		if len(e.cfg.StreamKey) != ed25519.PublicKeySize {
			e.stats.Unverifiable++ // no key yet: store nothing
			return false
		}
		man, err = e.cfg.Manifests.Verify(e.cfg.StreamKey, m.Manifest)
	}
	if err != nil || man.Seq != m.Seq || man.Stream != e.cfg.Stream {
		e.ban(p, fmt.Errorf("bad manifest for segment %d: %v", m.Seq, err))
		return false
	}
	if e.epochKnown && man.Epoch != e.epoch {
		e.stats.StaleEpoch++ // signed, but for another instance of the stream
		return false
	}
	s.man, s.rawManifest, s.layers = man, m.Manifest, man.Layers()
	// The layers' rates come from the signed sizes of every segment, held
	// or not: a peer that fetched only the base took an upper layer's
	// chunks for as large as the base, so it overrated what a
	// subscription costs and underrated what its upload carries
	// (TestSimQuick seed 1, coop layered N = 1000: quality 0.68 -> 0.86
	// with push.Reserves).
	for l, c := range man.Chunks {
		if l < len(e.chunkSizes) {
			e.noteChunkSize(l, int(c.Size))
		}
	}
	return true
}

// manifestRing is how many recent segments a partner remembers having been
// sent the manifest of (a push child gets the manifest with the first
// piece of each segment, not with every piece).
const manifestRing = 16

// manifestSent tells whether the manifest of seq went to p already.
func (p *partner) manifestSent(seq uint64) bool {
	for _, s := range p.manSent {
		if s == seq+1 {
			return true
		}
	}
	return false
}

// markManifest records that the manifest of seq went to p.
func (p *partner) markManifest(seq uint64) {
	p.manSent[p.manSentAt%manifestRing] = seq + 1
	p.manSentAt++
}

// sendPieces sends pieces [from, to) of a layer's chunk to p but those in
// skip (the requester's held mask), the
// manifest with the first when p asked for it (asked) or, for a push, when
// p may not have it.
func (e *Engine) sendPieces(p *partner, seq uint64, layer int, s *seg, from, to int, skip uint64, asked, push bool, now time.Time) int {
	withManifest := asked || push && !p.manifestSent(seq)
	sent := 0
	for i := from; i < to; i++ {
		if skip&(1<<i) != 0 {
			continue
		}
		b, ok := s.piece(layer, i)
		if !ok {
			continue
		}
		d := &wire.Data{Seq: seq, Layer: uint8(layer), Piece: uint16(i), Payload: b}
		if withManifest {
			d.Manifest = s.rawManifest
			p.markManifest(seq)
			withManifest = false
		}
		e.send(p.id, d)
		sent += len(b)
	}
	p.sent.Add(now, sent)
	e.up.Add(now, sent)
	return sent
}

// lastMissing is the highest piece of n not in held (-1: none).
func lastMissing(n int, held uint64) int {
	for i := n - 1; i >= 0; i-- {
		if held&(1<<i) == 0 {
			return i
		}
	}
	return -1
}

// lastPiece is the last piece a request's supplier sends, of n.
func (r *request) lastPiece(n int) int {
	if r.last >= 0 {
		return r.last
	}
	return n - 1
}

// noteChunkSize follows the size of a layer's chunks (an average over
// recent segments).
func (e *Engine) noteChunkSize(layer, n int) {
	if !e.seenLayer[layer] {
		e.seenLayer[layer] = true
		e.chunkSizes[layer] = float64(n)
	} else {
		e.chunkSizes[layer] = 0.9*e.chunkSizes[layer] + 0.1*float64(n)
	}
}
