//go:build js && wasm

package main

import (
	"bytes"
	"errors"
	"fmt"
	"syscall/js"

	"github.com/coopstreaming/coop/peer/fmp4"
	"github.com/coopstreaming/coop/segment"
)

// player turns played segments into fMP4 for the page: an init segment
// per stream header (or restart), a fragment per played segment, and after
// a missed segment nothing until the next random-access one (the page
// would decode frames whose references it never got).
type player struct {
	d          *driver
	playLayers int // at most this many layers are played (0: all)
	header     []byte
	mux        *fmp4.Muxer
	waitRAP    bool
	lastEnd    int64

	// Counters (JSON in stats()).
	Fragments    uint64 `json:"fragments"`
	Missed       uint64 `json:"missed"`
	Skipped      uint64 `json:"skipped"`
	Inits        uint64 `json:"inits"`
	Errors       uint64 `json:"convertErrors"`
	LayersPlayed int    `json:"layersPlayed"` // of the last fragment
	MIME         string `json:"mime"`
	LastSeq      uint64 `json:"lastSeq"`
}

func newPlayer(d *driver, playLayers int) *player {
	return &player{d: d, playLayers: max(0, playLayers), waitRAP: true}
}

func (p *player) snapshot() player {
	s := *p
	s.d, s.mux, s.header = nil, nil, nil
	return s
}

func (p *player) onHeader(raw []byte) {
	if bytes.Equal(raw, p.header) && p.mux != nil {
		return
	}
	p.header = append([]byte(nil), raw...)
	p.reset()
}

// onRestart: the stream restarted under a new epoch; its timestamps may
// start over, so the page gets a new init segment.
func (p *player) onRestart() { p.reset() }

// reset starts a new fMP4 stream from the current header.
func (p *player) reset() {
	p.mux, p.waitRAP = nil, true
	if p.header == nil {
		return
	}
	h, err := segment.UnmarshalHeader(p.header)
	if err != nil {
		p.fail(fmt.Errorf("stream header: %w", err))
		return
	}
	m, err := fmp4.New(h)
	if err != nil {
		p.fail(err)
		return
	}
	p.mux = m
	p.Inits++
	p.MIME = m.MIME()
	p.d.hostCall("init", p.MIME, p.bytesJS(m.Init()))
}

func (p *player) fail(err error) {
	p.Errors++
	p.d.log("warn", "playback: "+err.Error())
}

func (p *player) onPlay(seq uint64, layers [][]byte) {
	if p.mux == nil {
		return
	}
	if p.playLayers > 0 && len(layers) > p.playLayers {
		layers = layers[:p.playLayers]
	}
	frames, end, rap, ok := fmp4.Chunks(seq, layers)
	if !ok {
		p.missed(seq)
		return
	}
	if p.waitRAP && !rap {
		p.Skipped++
		return
	}
	p.waitRAP = false
	frag, err := p.mux.Fragment(frames, end)
	if errors.Is(err, fmp4.ErrBackwards) { // timestamps went back: a new instance
		p.reset()
		if p.mux == nil || !rap {
			return
		}
		p.waitRAP = false
		frag, err = p.mux.Fragment(frames, end)
	}
	if err != nil {
		p.fail(err)
		p.waitRAP = true
		return
	}
	p.lastEnd = end
	if frag != nil {
		p.Fragments++
		p.LastSeq = seq
		p.LayersPlayed = len(layers)
		p.d.hostCall("fragment", float64(seq), p.bytesJS(frag), len(layers))
	}
}

// missed: the held-back frames end with their segment, then nothing
// plays until a random-access segment.
func (p *player) missed(seq uint64) {
	p.Missed++
	if !p.waitRAP {
		if frag, err := p.mux.Flush(p.lastEnd); err == nil && frag != nil {
			p.d.hostCall("fragment", float64(seq), p.bytesJS(frag), 0)
		}
	}
	p.waitRAP = true
	p.d.hostCall("missed", float64(seq))
}

func (p *player) bytesJS(b []byte) js.Value {
	a := p.d.u8.New(len(b))
	js.CopyBytesToJS(a, b)
	return a
}
