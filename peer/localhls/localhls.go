// Package localhls re-serves the stream a peer plays as local HLS
// (http://127.0.0.1:8090/live/KEY/index.m3u8, also /hls/index.m3u8) with
// gohlslib's muxer (LL-HLS, fMP4 parts), for browsers and players that
// speak HLS. It implements feed.Sink: the feed's frames are written to the
// muxer with wall-clock NTP times derived from their timestamps.
//
// The muxer runs on demand, as mediamtx's HLS muxers do: it starts with
// the first request and stops after IdleClose without one, so a peer that
// nobody watches over HLS spends no CPU on fMP4 parts. While it is
// stopped the package keeps the frames since the last video key frame
// (at most maxReplayBytes) and replays them into a new muxer, so the
// first playlist is ready when the next key frame closes its segment,
// not a whole GOP later.
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

// DefaultIdleClose is how long the muxer runs without a request (as
// mediamtx's hlsMuxerCloseAfter).
const DefaultIdleClose = 60 * time.Second

// maxReplayBytes bounds the frames kept for replay; a longer GOP is not
// kept and a new viewer waits for the next key frame instead.
const maxReplayBytes = 4 << 20

// Muxer is the local HLS output.
type Muxer struct {
	// Variant is the gohlslib variant (default LL-HLS).
	Variant gohlslib.MuxerVariant
	// SegmentMinDuration and PartMinDuration tune the muxer (defaults 1s
	// and 200ms).
	SegmentMinDuration, PartMinDuration time.Duration
	// IdleClose stops the muxer after this long without a request
	// [DefaultIdleClose].
	IdleClose time.Duration
	// Log receives logs.
	Log *slog.Logger

	mu      sync.Mutex // guards everything below
	header  *segment.Header
	video   map[uint8]bool  // the header's video track IDs
	m       *gohlslib.Muxer // nil while nobody watches
	tracks  map[uint8]*track
	base    time.Time // wall time of PTS 0
	lastReq time.Time
	replay  []segment.Frame // since the last video key frame (replayOK)
	bytes   int
	// replayOK: replay starts at a video key frame (or the stream has no
	// video) and fits maxReplayBytes.
	replayOK bool
	starts   uint64
	errLog   *rate.Limiter
	errs     uint64
}

type track struct {
	codec  segment.Codec
	t      *gohlslib.Track
	params [][]byte
}

// Starts counts the muxers started (one per HLS viewing session).
func (x *Muxer) Starts() uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.starts
}

// Running reports whether a muxer runs now.
func (x *Muxer) Running() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.m != nil
}

func (x *Muxer) init() {
	if x.Log == nil {
		x.Log = slog.Default()
	}
	if x.errLog == nil {
		x.errLog = rate.NewLimiter(rate.Every(10*time.Second), 1)
	}
	if x.IdleClose <= 0 {
		x.IdleClose = DefaultIdleClose
	}
}

// SetHeader takes the tracks of h; a running muxer is replaced by one for
// the new tracks.
func (x *Muxer) SetHeader(h segment.Header) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.init()
	x.header = &h
	x.video = make(map[uint8]bool)
	for _, t := range h.Tracks {
		if t.Codec.IsVideo() {
			x.video[t.ID] = true
		}
	}
	x.base = time.Time{}
	x.replay, x.bytes, x.replayOK = nil, 0, len(x.video) == 0
	if x.m != nil {
		x.stop()
		x.start()
	}
}

// start starts a muxer for x.header and replays the kept frames
// (x.mu held). It leaves x.m nil when the header has no usable track.
func (x *Muxer) start() {
	if x.header == nil {
		return
	}
	tracks := make(map[uint8]*track)
	var list []*gohlslib.Track
	for _, t := range x.header.Tracks {
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
		tracks[t.ID] = tr
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
	x.m, x.tracks = m, tracks
	x.starts++
	if x.replayOK {
		for _, f := range x.replay {
			x.write(f)
		}
	}
	x.Log.Debug("local HLS muxer started", "replayed", len(x.replay))
}

// stop closes the running muxer (x.mu held).
func (x *Muxer) stop() {
	x.m.Close()
	x.m, x.tracks = nil, nil
}

// encodeError logs muxer errors at most once per 10 s, with a count.
func (x *Muxer) encodeError(err error) {
	x.errs++
	if x.errLog.Allow() {
		x.Log.Warn("local HLS encode error", "err", err, "errors", x.errs)
	}
}

// WriteFrames takes one segment's frames: it keeps them for replay and
// writes them to the running muxer, which it stops when nobody has asked
// for HLS for IdleClose.
func (x *Muxer) WriteFrames(frames []segment.Frame) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.init()
	if x.header == nil {
		return
	}
	for _, f := range frames {
		if x.base.IsZero() {
			x.base = time.Now().Add(-time.Duration(f.PTS) * time.Second / segment.Timebase)
		}
		x.keep(f)
		if x.m != nil {
			x.write(f)
		}
	}
	if x.m != nil && time.Since(x.lastReq) > x.IdleClose {
		x.stop()
		x.Log.Debug("local HLS muxer stopped: no request lately", "idle", x.IdleClose)
	}
}

// keep adds f to the replay frames (x.mu held).
func (x *Muxer) keep(f segment.Frame) {
	if x.video[f.Track] && f.Key {
		x.replay, x.bytes, x.replayOK = x.replay[:0], 0, true
	}
	if len(x.video) == 0 && len(x.replay) > 0 &&
		time.Duration(f.PTS-x.replay[0].PTS)*time.Second/segment.Timebase > time.Second {
		// Audio only: every frame is a random-access point; a second is
		// enough to fill the first segment quickly.
		x.replay, x.bytes = x.replay[:0], 0
	}
	if !x.replayOK {
		return
	}
	if x.bytes+len(f.Payload) > maxReplayBytes {
		x.replay, x.bytes, x.replayOK = x.replay[:0], 0, false
		return
	}
	x.replay = append(x.replay, f)
	x.bytes += len(f.Payload)
}

// write writes one frame to the running muxer (x.mu held).
func (x *Muxer) write(f segment.Frame) {
	tr := x.tracks[f.Track]
	if tr == nil {
		return
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

// ErrNoStream is the body of a 503 before the first header.
var ErrNoStream = errors.New("no stream yet: the peer is still joining")

// ServeHTTP serves the playlists, segments and parts (by file name),
// starting the muxer on the first request.
func (x *Muxer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x.mu.Lock()
	x.init()
	x.lastReq = time.Now()
	if x.m == nil {
		x.start()
	}
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
		x.stop()
	}
	x.header = nil
}
