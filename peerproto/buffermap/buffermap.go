// Package buffermap is the in-memory buffer map: for each layer, which
// segments of a sliding window a node holds. It is a ring of bitsets, so
// advancing the window, setting a chunk and testing one are O(1) and
// allocation-free, and it converts to and from the wire form.
package buffermap

import (
	"fmt"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// Map is a buffer map over segments [Base, Base+Window).
type Map struct {
	base   uint64
	window int
	layers int
	words  int
	bits   [][]uint64 // bits[layer] is a ring indexed by seq % window
}

// New returns an empty map of window segments (a multiple of 64, at most
// wire.MaxWindow) and layers layers, starting at base.
func New(base uint64, window, layers int) *Map {
	if window <= 0 || window%64 != 0 || window > wire.MaxWindow {
		panic(fmt.Sprintf("buffermap: window %d is not a positive multiple of 64 up to %d", window, wire.MaxWindow))
	}
	if layers <= 0 || layers > wire.MaxLayers {
		panic(fmt.Sprintf("buffermap: %d layers", layers))
	}
	m := &Map{base: base, window: window, layers: layers, words: window / 64}
	m.bits = make([][]uint64, layers)
	for l := range m.bits {
		m.bits[l] = make([]uint64, m.words)
	}
	return m
}

// Base is the first segment of the window.
func (m *Map) Base() uint64 { return m.base }

// Window is the number of segments covered.
func (m *Map) Window() int { return m.window }

// Layers is the number of layers tracked.
func (m *Map) Layers() int { return m.layers }

// In tells whether seq is inside the window.
func (m *Map) In(seq uint64) bool { return seq >= m.base && seq-m.base < uint64(m.window) }

func (m *Map) pos(seq uint64) (int, uint64) {
	i := int(seq % uint64(m.window))
	return i / 64, 1 << (i % 64)
}

// Has tells whether the chunk (seq, layer) is held.
func (m *Map) Has(seq uint64, layer int) bool {
	if layer < 0 || layer >= m.layers || !m.In(seq) {
		return false
	}
	w, bit := m.pos(seq)
	return m.bits[layer][w]&bit != 0
}

// Set marks (seq, layer) held; it reports false when seq is outside the
// window or layer out of range.
func (m *Map) Set(seq uint64, layer int) bool {
	if layer < 0 || layer >= m.layers || !m.In(seq) {
		return false
	}
	w, bit := m.pos(seq)
	m.bits[layer][w] |= bit
	return true
}

// Clear unmarks (seq, layer).
func (m *Map) Clear(seq uint64, layer int) {
	if layer < 0 || layer >= m.layers || !m.In(seq) {
		return
	}
	w, bit := m.pos(seq)
	m.bits[layer][w] &^= bit
}

// Advance moves the window to start at base, forgetting segments before it.
func (m *Map) Advance(base uint64) {
	if base <= m.base {
		return
	}
	if base-m.base >= uint64(m.window) {
		for l := range m.bits {
			clear(m.bits[l])
		}
		m.base = base
		return
	}
	for s := m.base; s < base; s++ {
		w, bit := m.pos(s)
		for l := range m.bits {
			m.bits[l][w] &^= bit
		}
	}
	m.base = base
}

// Count returns how many chunks of layer are held.
func (m *Map) Count(layer int) int {
	n := 0
	for _, w := range m.bits[layer] {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}

// Encode converts the map to its wire form.
func (m *Map) Encode() *wire.BufferMap {
	out := &wire.BufferMap{Base: m.base, Window: uint16(m.window), Bits: make([][]byte, m.layers)}
	for l := 0; l < m.layers; l++ {
		b := make([]byte, m.window/8)
		for i := 0; i < m.window; i++ {
			if m.Has(m.base+uint64(i), l) {
				b[i/8] |= 0x80 >> (i % 8)
			}
		}
		out.Bits[l] = b
	}
	return out
}

// Load replaces the map's content with a received wire map. Segments of the
// wire map outside this map's window are ignored; layers beyond Layers too.
func (m *Map) Load(w *wire.BufferMap) {
	for l := range m.bits {
		clear(m.bits[l])
	}
	if w.Base > m.base {
		m.base = w.Base
	}
	for l := 0; l < len(w.Bits) && l < m.layers; l++ {
		bits := w.Bits[l]
		for i := 0; i < int(w.Window) && i/8 < len(bits); i++ {
			if bits[i/8]&(0x80>>(i%8)) != 0 {
				m.Set(w.Base+uint64(i), l)
			}
		}
	}
}

// Diff returns the chunks held by m and not by old (both over the same
// window positions), for an incremental Have message.
func (m *Map) Diff(old *Map) []wire.HaveEntry {
	var out []wire.HaveEntry
	for l := 0; l < m.layers; l++ {
		for i := 0; i < m.window; i++ {
			s := m.base + uint64(i)
			if m.Has(s, l) && !old.Has(s, l) {
				out = append(out, wire.HaveEntry{Seq: s, Layer: uint8(l)})
			}
		}
	}
	return out
}
