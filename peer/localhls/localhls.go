// Package localhls re-serves the stream a peer plays as local HLS
// (http://127.0.0.1:8090/live/KEY/index.m3u8, also /hls/index.m3u8) with
// gohlslib's muxer (LL-HLS, fMP4 parts), for browsers and players that
// speak HLS. It implements feed.Sink: the feed's frames are written to the
// muxer with wall-clock NTP times derived from their timestamps.
package localhls

import (
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"golang.org/x/time/rate"

	"github.com/coopstreaming/coop/segment"
)

// Muxer is the local HLS output.
type Muxer struct {
	// Variant is the gohlslib variant (default LL-HLS).
	Variant gohlslib.MuxerVariant
	// SegmentMinDuration and PartMinDuration tune the muxer (defaults 1s
	// and 200ms).
	SegmentMinDuration, PartMinDuration time.Duration
	// Log receives logs.
	Log *slog.Logger

	mu     sync.Mutex // guards everything below
	m      *gohlslib.Muxer
	tracks map[uint8]*track
	base   time.Time // wall time of PTS 0
	errLog *rate.Limiter
	errs   uint64
}

type track struct {
	codec  segment.Codec
	t      *gohlslib.Track
	params [][]byte
}

// SetHeader starts a muxer for the tracks of h (closing the previous one).
func (x *Muxer) SetHeader(h segment.Header) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.Log == nil {
		x.Log = slog.Default()
	}
	if x.errLog == nil {
		x.errLog = rate.NewLimiter(rate.Every(10*time.Second), 1)
	}
	if x.m != nil {
		x.m.Close()
		x.m = nil
	}
	x.tracks = make(map[uint8]*track)
	var list []*gohlslib.Track
	for _, t := range h.Tracks {
		tr := &track{codec: t.Codec, params: t.Params}
		switch t.Codec {
		case segment.CodecH264:
			if len(t.Params) < 2 {
				continue
			}
			tr.t = &gohlslib.Track{Codec: &codecs.H264{SPS: t.Params[0], PPS: t.Params[1]}, ClockRate: segment.Timebase}
		case segment.CodecH265:
			if len(t.Params) < 3 {
				continue
			}
			tr.t = &gohlslib.Track{Codec: &codecs.H265{VPS: t.Params[0], SPS: t.Params[1], PPS: t.Params[2]}, ClockRate: segment.Timebase}
		case segment.CodecAAC:
			var conf mpeg4audio.AudioSpecificConfig
			if len(t.Params) < 1 || conf.Unmarshal(t.Params[0]) != nil {
				continue
			}
			tr.t = &gohlslib.Track{Codec: &codecs.MPEG4Audio{Config: conf}, ClockRate: conf.SampleRate}
		default:
			continue
		}
		x.tracks[t.ID] = tr
		list = append(list, tr.t)
	}
	if len(list) == 0 {
		return
	}
	m := &gohlslib.Muxer{
		Tracks: list, Variant: x.Variant,
		SegmentMinDuration: x.SegmentMinDuration, PartMinDuration: x.PartMinDuration,
		OnEncodeError: x.encodeError,
	}
	if err := m.Start(); err != nil {
		x.Log.Warn("local HLS muxer", "err", err)
		return
	}
	x.m = m
	x.base = time.Time{}
}

// encodeError logs muxer errors at most once per 10 s, with a count.
func (x *Muxer) encodeError(err error) {
	x.errs++
	if x.errLog.Allow() {
		x.Log.Warn("local HLS encode error", "err", err, "errors", x.errs)
	}
}

// WriteFrames writes one segment's frames to the muxer.
func (x *Muxer) WriteFrames(frames []segment.Frame) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		return
	}
	for _, f := range frames {
		tr := x.tracks[f.Track]
		if tr == nil {
			continue
		}
		if x.base.IsZero() {
			x.base = time.Now().Add(-time.Duration(f.PTS) * time.Second / segment.Timebase)
		}
		ntp := x.base.Add(time.Duration(f.PTS) * time.Second / segment.Timebase)
		var err error
		switch tr.codec {
		case segment.CodecH264, segment.CodecH265:
			var au h264.AVCC
			if err = au.Unmarshal(f.Payload); err != nil {
				break
			}
			nalus := [][]byte(au)
			if f.Key {
				nalus = append(append([][]byte{}, tr.params...), nalus...)
			}
			if tr.codec == segment.CodecH264 {
				err = x.m.WriteH264(tr.t, ntp, f.PTS, nalus)
			} else {
				err = x.m.WriteH265(tr.t, ntp, f.PTS, nalus)
			}
		case segment.CodecAAC:
			pts := f.PTS * int64(tr.t.ClockRate) / segment.Timebase
			err = x.m.WriteMPEG4Audio(tr.t, ntp, pts, [][]byte{f.Payload})
		}
		if err != nil {
			x.encodeError(err)
		}
	}
}

// ErrNoStream is the body of a 503 before the first header.
var ErrNoStream = errors.New("no stream yet: the peer is still joining")

// ServeHTTP serves the playlists, segments and parts (by file name).
func (x *Muxer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x.mu.Lock()
	m := x.m
	x.mu.Unlock()
	if m == nil {
		http.Error(w, ErrNoStream.Error(), http.StatusServiceUnavailable)
		return
	}
	m.Handle(w, r)
}

// Close stops the muxer.
func (x *Muxer) Close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m != nil {
		x.m.Close()
		x.m = nil
	}
}
