package edge

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/origin/stream"
	"github.com/coopstreaming/coop/segment"
)

// publisher is the feed's sink of a relayed stream: it publishes the
// header's tracks and writes each frame as an access unit, so the
// stream manager serves the edge's RTSP and HLS readers as for any
// publisher. Its methods run on the feed's goroutine; close may come
// from another.
type publisher struct {
	streams Publisher
	path    string
	remote  string
	log     *slog.Logger
	// restart, set when the origin restarted the stream, makes the next
	// header start a new publication (timestamps begin again).
	restart atomic.Bool

	mu     sync.Mutex // guards pub, tracks, closed
	pub    *stream.Publication
	tracks map[uint8]trackRef
	closed bool
}

type trackRef struct {
	index int
	video bool
}

// SetHeader implements feed.Sink.
func (p *publisher) SetHeader(h segment.Header) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if p.restart.Swap(false) && p.pub != nil {
		p.pub.Close()
		p.pub = nil
	}
	if p.pub == nil {
		pub, err := p.streams.Publish(p.path, stream.PublisherInfo{Protocol: "edge", Remote: p.remote})
		if err != nil {
			p.log.Warn("edge: cannot publish the relayed stream", "err", err)
			return
		}
		p.pub = pub
	}
	if err := p.pub.SetTracks(h.Tracks); err != nil {
		p.log.Warn("edge: relayed tracks refused", "err", err)
		p.pub.Close()
		p.pub = nil
		return
	}
	p.tracks = make(map[uint8]trackRef, len(h.Tracks))
	for i, t := range h.Tracks {
		p.tracks[t.ID] = trackRef{index: i, video: t.Codec.IsVideo()}
	}
}

// WriteFrames implements feed.Sink.
func (p *publisher) WriteFrames(frames []segment.Frame) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pub == nil {
		return
	}
	for _, f := range frames {
		tr, ok := p.tracks[f.Track]
		if !ok {
			continue
		}
		u := &media.Unit{Track: tr.index, PTS: duration(f.PTS), DTS: duration(f.DTS), Key: f.Key}
		if tr.video {
			var au h264.AVCC // 4-byte lengths, for H.265 as well
			if err := au.Unmarshal(f.Payload); err != nil {
				continue
			}
			u.NALUs = au
		} else {
			u.AU = f.Payload
		}
		if err := p.pub.Write(u); errors.Is(err, stream.ErrReplaced) {
			p.log.Warn("edge: another publisher took the relayed stream's path over")
			p.pub = nil
			return
		}
	}
}

// close ends the publication (readers wait the grace period for a new one).
func (p *publisher) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.pub != nil {
		p.pub.Close()
		p.pub = nil
	}
}

// duration converts Timebase ticks without overflow.
func duration(ticks int64) time.Duration {
	return time.Duration(ticks/segment.Timebase)*time.Second + time.Duration(ticks%segment.Timebase)*time.Second/segment.Timebase
}
