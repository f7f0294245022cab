// Package playout turns the segments a peer plays back into a stream any
// player can open: HTTP MPEG-TS (`ffplay -analyzeduration 500000 http://127.0.0.1:8090/stream.ts`;
// without the flag ffmpeg analyses 5 s of a live MPEG-TS before it shows
// anything).
// It is the container-aware edge of the peer client; the P2P core hands it
// opaque layer chunks and never waits for it.
package playout

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/coopstreaming/coop/segment"
	"github.com/coopstreaming/coop/segment/tsmux"
)

// Stats are the playout's counters.
type Stats struct {
	// Segments played with their base layer, and missed ones.
	Played, Missed uint64
	// LayersPlayed sums the layers of played segments.
	LayersPlayed uint64
	// BadChunks counts chunks that failed to decode (never expected:
	// chunks are verified against signed manifests first).
	BadChunks uint64
	// Clients is the number of connected players; Dropped counts players
	// disconnected for falling behind.
	Clients int
	Dropped uint64
}

type played struct {
	seq    uint64
	layers [][]byte
}

// Playout fans played segments out to HTTP MPEG-TS clients.
type Playout struct {
	log     *slog.Logger
	in      chan played
	mu      sync.Mutex
	header  *segment.Header
	clients map[*client]struct{}
	stats   Stats
	overrun atomic.Uint64
}

type client struct {
	frames  chan []segment.Frame
	started bool // has seen a random-access segment
}

// clientQueue bounds the segments queued for one player.
const clientQueue = 32

// New returns a Playout; Run must be running for it to make progress.
func New(log *slog.Logger) *Playout {
	if log == nil {
		log = slog.Default()
	}
	return &Playout{log: log, in: make(chan played, 128), clients: make(map[*client]struct{})}
}

// SetHeader takes the stream header (codec parameters).
func (p *Playout) SetHeader(raw []byte) {
	h, err := segment.UnmarshalHeader(raw)
	if err != nil {
		p.log.Warn("bad stream header", "err", err)
		return
	}
	p.mu.Lock()
	p.header = &h
	p.mu.Unlock()
}

// Play takes one segment at its playback deadline: the chunks of its
// contiguous layers from the base, none when it was missed. It never
// blocks; if the playout falls behind, segments are dropped (counted).
func (p *Playout) Play(seq uint64, layers [][]byte) {
	select {
	case p.in <- played{seq: seq, layers: layers}:
	default:
		p.overrun.Add(1)
	}
}

// Stats returns the counters.
func (p *Playout) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stats
	st.Clients = len(p.clients)
	st.Missed += p.overrun.Load()
	return st
}

// Run delivers played segments to clients until ctx ends.
func (p *Playout) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-p.in:
			p.deliver(s)
		}
	}
}

func (p *Playout) deliver(s played) {
	var (
		frames [][]segment.Frame
		info   segment.ChunkInfo
		bad    uint64
	)
	for l, c := range s.layers {
		ci, f, err := segment.UnmarshalChunk(c)
		if err != nil || ci.Seq != s.seq || int(ci.Layer) != l {
			bad++
			break // higher layers depend on this one: stop here
		}
		if l == 0 {
			info = ci
		}
		frames = append(frames, f)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.BadChunks += bad
	if len(frames) == 0 {
		p.stats.Missed++
		for c := range p.clients {
			c.started = false // the decoder must restart at a key frame
		}
		return
	}
	p.stats.Played++
	p.stats.LayersPlayed += uint64(len(frames))
	merged := segment.Merge(frames...)
	for c := range p.clients {
		if !c.started {
			if !info.RandomAccess {
				continue
			}
			c.started = true
		}
		select {
		case c.frames <- merged:
		default:
			p.stats.Dropped++
			delete(p.clients, c)
			close(c.frames)
		}
	}
}

// ServeHTTP streams MPEG-TS from the next random-access segment on.
func (p *Playout) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	h := p.header
	p.mu.Unlock()
	if h == nil {
		http.Error(w, "no stream header yet: the peer is still joining", http.StatusServiceUnavailable)
		return
	}
	c := &client{frames: make(chan []segment.Frame, clientQueue)}
	p.mu.Lock()
	p.clients[c] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		if _, ok := p.clients[c]; ok {
			delete(p.clients, c)
			close(c.frames)
		}
		p.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "video/mp2t")
	w.Header().Set("Cache-Control", "no-cache")
	bw := bufio.NewWriterSize(w, 64<<10)
	mux, err := tsmux.New(bw, *h)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	flusher, _ := w.(http.Flusher)
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush() // players see the response before the first key frame
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case frames, ok := <-c.frames:
			if !ok {
				p.log.Info("player fell behind; disconnected", "remote", r.RemoteAddr)
				return
			}
			if err := mux.WriteFrames(frames); err != nil {
				p.log.Warn("mpeg-ts write", "remote", r.RemoteAddr, "err", err)
				return
			}
			if err := bw.Flush(); err != nil {
				if !errors.Is(err, context.Canceled) {
					p.log.Debug("player gone", "remote", r.RemoteAddr, "err", err)
				}
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}
