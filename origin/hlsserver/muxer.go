package hlsserver

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/origin/ratelog"
	"github.com/coopstreaming/coop/segment"
)

// queued is one unit waiting for the muxer, with its ingest time.
type queued struct {
	u   media.Unit
	ntp time.Time
}

// streamMuxer is the LL-HLS muxer of one stream and the bounded queue that
// feeds it. The publisher side (push) never blocks: when the queue is full
// the unit is dropped and counted, and video resumes at the next key frame.
type streamMuxer struct {
	path   string
	tracks []segment.Track
	hls    *gohlslib.Muxer
	htrack []*gohlslib.Track // per stream track; nil: not muxed
	queue  chan queued
	done   chan struct{}
	exited chan struct{}
	log    *slog.Logger

	// mu guards waitKey, dropped and bytesSent.
	mu        sync.Mutex
	waitKey   bool
	dropped   uint64
	bytesSent uint64
	closeOnce sync.Once
	stopOnce  sync.Once
	// warn rate-limits the muxer's refusals of units.
	warn ratelog.Limiter
}

// variantOf maps the configured name to gohlslib's variant.
func variantOf(name string) (gohlslib.MuxerVariant, error) {
	switch name {
	case "", VariantLowLatency:
		return gohlslib.MuxerVariantLowLatency, nil
	case VariantFMP4:
		return gohlslib.MuxerVariantFMP4, nil
	case VariantMPEGTS:
		return gohlslib.MuxerVariantMPEGTS, nil
	}
	return 0, fmt.Errorf("hls: unknown variant %q (want %s, %s or %s)", name, VariantLowLatency, VariantFMP4, VariantMPEGTS)
}

// newStreamMuxer builds and starts the muxer of a stream's tracks. Tracks
// the variant cannot carry are left out (logged); a stream with none left
// is an error.
func newStreamMuxer(s *Server, path string, tracks []segment.Track) (*streamMuxer, error) {
	variant, err := variantOf(s.Variant)
	if err != nil {
		return nil, err
	}
	sm := &streamMuxer{
		path: path, tracks: tracks, htrack: make([]*gohlslib.Track, len(tracks)),
		queue: make(chan queued, s.QueueSize), done: make(chan struct{}), exited: make(chan struct{}),
		log: s.Log.With("path", path), waitKey: true,
	}
	var list []*gohlslib.Track
	hasVideo := false
	for i, t := range tracks {
		var ht *gohlslib.Track
		switch t.Codec {
		case segment.CodecH264:
			if hasVideo {
				break
			}
			c := &codecs.H264{}
			if len(t.Params) >= 2 {
				c.SPS, c.PPS = t.Params[0], t.Params[1]
			}
			ht = &gohlslib.Track{Codec: c, ClockRate: 90000}
		case segment.CodecH265:
			if hasVideo || variant == gohlslib.MuxerVariantMPEGTS {
				break
			}
			c := &codecs.H265{}
			if len(t.Params) >= 3 {
				c.VPS, c.SPS, c.PPS = t.Params[0], t.Params[1], t.Params[2]
			}
			ht = &gohlslib.Track{Codec: c, ClockRate: 90000}
		case segment.CodecAAC:
			if len(t.Params) < 1 {
				break
			}
			var conf mpeg4audio.AudioSpecificConfig
			if err := conf.Unmarshal(t.Params[0]); err != nil {
				s.warn.Warn(sm.log, "HLS: AAC track left out: bad AudioSpecificConfig", "err", err)
				break
			}
			ht = &gohlslib.Track{Codec: &codecs.MPEG4Audio{Config: conf}, ClockRate: conf.SampleRate}
		}
		if ht == nil {
			s.warn.Warn(sm.log, "HLS: track left out", "track", i, "codec", t.Codec.String(), "variant", s.Variant)
			continue
		}
		hasVideo = hasVideo || t.Codec.IsVideo()
		sm.htrack[i] = ht
		list = append(list, ht)
		if variant == gohlslib.MuxerVariantMPEGTS && !t.Codec.IsVideo() {
			break // one audio track only
		}
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("hls: %s: no track the %s variant can carry", path, s.Variant)
	}
	sm.waitKey = hasVideo
	sm.hls = &gohlslib.Muxer{
		Tracks: list, Variant: variant, SegmentCount: s.SegmentCount,
		SegmentMinDuration: s.SegmentDuration, PartMinDuration: s.PartDuration,
		OnEncodeError: func(err error) { sm.log.Debug("HLS encode", "err", err) },
	}
	if err := sm.hls.Start(); err != nil {
		return nil, fmt.Errorf("hls: %s: %w", path, err)
	}
	go sm.run()
	return sm, nil
}

// push queues a copy of u without blocking; it reports whether u was
// dropped because the queue was full.
func (sm *streamMuxer) push(u *media.Unit, now time.Time) (dropped bool) {
	if u.Track < 0 || u.Track >= len(sm.htrack) || sm.htrack[u.Track] == nil {
		return false
	}
	video := sm.tracks[u.Track].Codec.IsVideo()
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if sm.waitKey {
		if !video || !u.Key {
			return false // nothing before the first (or next) key frame
		}
		sm.waitKey = false
	}
	select {
	case sm.queue <- queued{u: copyUnit(u), ntp: now}:
		return false
	default:
		sm.dropped++
		if video {
			sm.waitKey = true // later frames reference the lost one
		}
		return true
	}
}

// copyUnit copies the payload of u into one buffer.
func copyUnit(u *media.Unit) media.Unit {
	c := *u
	if len(u.AU) > 0 {
		c.AU = bytes.Clone(u.AU)
	}
	if len(u.NALUs) > 0 {
		buf := make([]byte, 0, u.Size())
		c.NALUs = make([][]byte, len(u.NALUs))
		for i, n := range u.NALUs {
			start := len(buf)
			buf = append(buf, n...)
			c.NALUs[i] = buf[start:len(buf):len(buf)]
		}
	}
	return c
}

func (sm *streamMuxer) run() {
	defer close(sm.exited)
	for {
		select {
		case <-sm.done:
			return
		case q := <-sm.queue:
			if err := sm.write(q); err != nil {
				sm.warn.Warn(sm.log, "HLS muxer refused a unit", "err", err)
			}
		}
	}
}

func (sm *streamMuxer) write(q queued) error {
	t := sm.htrack[q.u.Track]
	pts := int64(q.u.PTS) * int64(t.ClockRate) / int64(time.Second)
	track := sm.tracks[q.u.Track]
	switch track.Codec {
	case segment.CodecH264:
		return sm.hls.WriteH264(t, q.ntp, pts, withParams(track, q.u.Key, nonEmpty(q.u.NALUs)))
	case segment.CodecH265:
		return sm.hls.WriteH265(t, q.ntp, pts, withParams(track, q.u.Key, nonEmpty(q.u.NALUs)))
	case segment.CodecAAC:
		return sm.hls.WriteMPEG4Audio(t, q.ntp, pts, [][]byte{q.u.AU})
	}
	return nil
}

// withParams puts the track's parameter sets in front of a key frame that
// does not carry them in band (RTMP sends them once, out of band): the
// muxer's DTS extractor reads the SPS from the stream.
func withParams(t segment.Track, key bool, nalus [][]byte) [][]byte {
	if !key || len(t.Params) == 0 {
		return nalus
	}
	for _, n := range nalus {
		switch t.Codec {
		case segment.CodecH264:
			if n[0]&0x1f == 7 { // SPS
				return nalus
			}
		case segment.CodecH265:
			if (n[0]>>1)&0x3f == 33 { // SPS
				return nalus
			}
		}
	}
	out := make([][]byte, 0, len(t.Params)+len(nalus))
	for _, p := range t.Params {
		if len(p) > 0 {
			out = append(out, p)
		}
	}
	return append(out, nalus...)
}

// nonEmpty drops empty NAL units (the muxer reads each one's header byte).
func nonEmpty(nalus [][]byte) [][]byte {
	out := nalus[:0:0]
	for _, n := range nalus {
		if len(n) > 0 {
			out = append(out, n)
		}
	}
	return out
}

// close stops the feeding goroutine and the muxer; waiting HTTP requests
// return.
func (sm *streamMuxer) close() {
	sm.closeOnce.Do(func() {
		sm.stopFeeding()
		sm.hls.Close()
	})
}

// stopFeeding ends the goroutine that feeds the muxer and waits for it.
func (sm *streamMuxer) stopFeeding() {
	sm.stopOnce.Do(func() { close(sm.done) })
	<-sm.exited
}

func (sm *streamMuxer) addSent(n int) {
	sm.mu.Lock()
	sm.bytesSent += uint64(n)
	sm.mu.Unlock()
}

// sameTracks tells whether a resumed publisher's tracks can continue on
// the existing muxer (same codecs and parameters).
func sameTracks(a, b []segment.Track) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Codec != b[i].Codec || len(a[i].Params) != len(b[i].Params) {
			return false
		}
		for j := range a[i].Params {
			if !bytes.Equal(a[i].Params[j], b[i].Params[j]) {
				return false
			}
		}
	}
	return true
}
