// Package media holds the protocol-neutral access units that every ingest
// produces and every output consumes, and the rules that assign a video
// frame to a layer.
package media

import (
	"time"

	"github.com/coopstreaming/coop/segment"
)

// Unit is one access unit of one track, with timestamps relative to the
// start of its publication.
type Unit struct {
	// Track is the index of the unit's track in the stream's track list.
	Track int
	// PTS and DTS are presentation and decode times.
	PTS, DTS time.Duration
	// Key marks a random-access unit.
	Key bool
	// NALUs holds a video access unit (without start codes or lengths).
	NALUs [][]byte
	// AU holds one audio access unit.
	AU []byte
}

// Size returns the payload bytes of the unit.
func (u *Unit) Size() int {
	n := len(u.AU)
	for _, nalu := range u.NALUs {
		n += len(nalu)
	}
	return n
}

// Droppability of a video access unit, from its NAL unit headers.
type Droppability struct {
	// Droppable tells whether no other frame may reference this one.
	Droppable bool
	// TemporalID is the H.265 TemporalId (0 for H.264).
	TemporalID int
}

// ClassifyH264 reports whether an H.264 access unit is droppable: every VCL
// NAL unit has nal_ref_idc == 0 (bits 5-6 of the NAL header), so by the
// standard no other picture references it.
func ClassifyH264(nalus [][]byte) Droppability {
	vcl := false
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		typ := n[0] & 0x1f
		if typ >= 1 && typ <= 5 {
			vcl = true
			if (n[0]>>5)&0x03 != 0 {
				return Droppability{}
			}
		}
	}
	return Droppability{Droppable: vcl}
}

// ClassifyH265 reads the TemporalId of an H.265 access unit (low three bits
// of the second NAL header byte, minus one). Pictures with TemporalId > 0
// are never referenced by pictures of a lower sub-layer, so removing every
// sub-layer above a given one leaves a conforming bitstream.
func ClassifyH265(nalus [][]byte) Droppability {
	for _, n := range nalus {
		if len(n) < 2 {
			continue
		}
		typ := (n[0] >> 1) & 0x3f
		if typ <= 31 { // VCL
			tid := int(n[1]&0x07) - 1
			if tid < 0 {
				tid = 0
			}
			return Droppability{Droppable: tid > 0, TemporalID: tid}
		}
	}
	return Droppability{}
}

// Layerer assigns frames to layers 0..Layers-1.
//
// Layer 0 holds audio and every frame that others may reference. H.265
// frames go to the layer of their TemporalId (capped). H.264 has no
// temporal sub-layers in what x264 produces, but every frame with
// nal_ref_idc == 0 is individually droppable, so those frames are dealt in
// turn to layers 1..Layers-1: each added layer raises the frame rate, and
// dropping any top set of layers never breaks a reference. Reference B
// frames (x264's B-pyramid) stay in layer 0: a later P frame may reference
// them, and the slice header alone cannot tell.
type Layerer struct {
	// Layers is the maximum number of layers (1..segment.MaxLayers).
	Layers  int
	dropped uint64
}

// Layer returns the layer of a unit of the given codec.
func (l *Layerer) Layer(codec segment.Codec, u *Unit) int {
	if l.Layers <= 1 || !codec.IsVideo() {
		return 0
	}
	switch codec {
	case segment.CodecH264:
		if !ClassifyH264(u.NALUs).Droppable {
			return 0
		}
		layer := 1 + int(l.dropped%uint64(l.Layers-1))
		l.dropped++
		return layer
	case segment.CodecH265:
		return min(ClassifyH265(u.NALUs).TemporalID, l.Layers-1)
	}
	return 0
}

// H.265 NAL unit types used for random access.
const (
	h265RASLN = 8
	h265RASLR = 9
	h265CRA   = 21
)

// h265VCLType returns the NAL type of the first VCL NAL unit.
func h265VCLType(nalus [][]byte) (uint8, bool) {
	for _, n := range nalus {
		if len(n) < 2 {
			continue
		}
		if typ := (n[0] >> 1) & 0x3f; typ <= 31 {
			return typ, true
		}
	}
	return 0, false
}

// IsH265CRA tells whether an H.265 access unit is a CRA picture, whose
// RASL pictures are undecodable for a decoder that starts at it.
func IsH265CRA(nalus [][]byte) bool {
	t, ok := h265VCLType(nalus)
	return ok && t == h265CRA
}

// IsH265RASL tells whether an H.265 access unit is a RASL picture.
func IsH265RASL(nalus [][]byte) bool {
	t, ok := h265VCLType(nalus)
	return ok && (t == h265RASLN || t == h265RASLR)
}
