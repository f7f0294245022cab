// Package feed turns the segments a peer plays back into a decode-order
// stream of frames for the peer's local outputs (RTSP, HLS): it decodes the
// layer chunks, merges the layers, and after every missed segment holds the
// frames back until the next random-access segment, so no output decodes
// a frame whose references it never got. The P2P engine hands it segments
// through Play, which never blocks.
package feed

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/coopstreaming/coop/segment"
)

// Sink is one local output. Its methods run on the feed's goroutine, one
// at a time, and must not block.
type Sink interface {
	// SetHeader gives the stream's tracks, before any frames and again
	// whenever they change.
	SetHeader(h segment.Header)
	// WriteFrames gives one segment's frames in decode order; the first
	// segment after SetHeader or a gap starts with a key frame.
	WriteFrames(frames []segment.Frame)
}

// Stats are the feed's counters.
type Stats struct {
	// Segments delivered to the sinks; Skipped while waiting for a
	// random-access segment; Missed (no base layer, or overrun).
	Segments, Skipped, Missed uint64
}

type item struct {
	seq    uint64
	layers [][]byte
	header []byte
}

// Feed fans played segments out to sinks.
type Feed struct {
	log     *slog.Logger
	in      chan item
	overrun atomic.Uint64

	mu      sync.Mutex // guards sinks, stats and header
	sinks   []Sink
	header  *segment.Header
	stats   Stats
	waitRAP bool
}

// New returns a Feed; Run must be running for it to make progress.
func New(log *slog.Logger) *Feed {
	if log == nil {
		log = slog.Default()
	}
	return &Feed{log: log, in: make(chan item, 128), waitRAP: true}
}

// Add registers a sink; it gets the current header at once.
func (f *Feed) Add(s Sink) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sinks = append(f.sinks, s)
	if f.header != nil {
		s.SetHeader(*f.header)
	}
}

// SetHeader takes the encoded stream header (never blocks).
func (f *Feed) SetHeader(raw []byte) {
	select {
	case f.in <- item{header: raw}:
	default:
		f.overrun.Add(1)
	}
}

// Play takes one segment's contiguous layer chunks at its playback
// deadline (none when it was missed). It never blocks.
func (f *Feed) Play(seq uint64, layers [][]byte) {
	select {
	case f.in <- item{seq: seq, layers: layers}:
	default:
		f.overrun.Add(1)
	}
}

// Stats returns the counters.
func (f *Feed) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.stats
	st.Missed += f.overrun.Load()
	return st
}

// Run delivers until ctx ends.
func (f *Feed) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-f.in:
			if it.header != nil {
				f.setHeader(it.header)
			} else {
				f.deliver(it)
			}
		}
	}
}

func (f *Feed) setHeader(raw []byte) {
	h, err := segment.UnmarshalHeader(raw)
	if err != nil {
		f.log.Warn("bad stream header", "err", err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.header = &h
	f.waitRAP = true
	for _, s := range f.sinks {
		s.SetHeader(h)
	}
}

// Decode returns the merged frames of one segment's contiguous layers and
// whether the segment starts at a random-access point; ok is false when
// not even the base layer decodes.
func Decode(seq uint64, layers [][]byte) (frames []segment.Frame, randomAccess, ok bool) {
	var per [][]segment.Frame
	for l, c := range layers {
		ci, fr, err := segment.UnmarshalChunk(c)
		if err != nil || ci.Seq != seq || int(ci.Layer) != l {
			break // higher layers depend on this one
		}
		if l == 0 {
			randomAccess = ci.RandomAccess
		}
		per = append(per, fr)
	}
	if len(per) == 0 {
		return nil, false, false
	}
	return segment.Merge(per...), randomAccess, true
}

func (f *Feed) deliver(it item) {
	frames, rap, ok := Decode(it.seq, it.layers)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !ok {
		f.stats.Missed++
		f.waitRAP = true
		return
	}
	if f.header == nil || f.waitRAP && !rap {
		f.stats.Skipped++
		return
	}
	f.waitRAP = false
	f.stats.Segments++
	for _, s := range f.sinks {
		s.WriteFrames(frames)
	}
}
