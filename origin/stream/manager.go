// Package stream is the origin's registry of live streams: it accepts
// publications from any ingest, fans each stream out to RTSP readers (one
// bounded queue of whole units and one sender per reader: a slow reader
// loses whole units alone, the publisher never waits), feeds the segmenter, keeps readers attached across
// a publisher's reconnect within a grace period, and reports statistics.
package stream

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/origin/segmenter"
	"github.com/coopstreaming/coop/segment"
)

// Errors returned by Publish.
var (
	// ErrBusy means another publisher holds the path and takeover is off.
	ErrBusy = errors.New("stream: path is busy")
	// ErrReplaced means a newer publisher took the path over.
	ErrReplaced = errors.New("stream: publisher replaced")
	// ErrNotStarted means a unit was written before the tracks were set.
	ErrNotStarted = errors.New("stream: tracks not set")
	// ErrTooManyStreams means MaxStreams paths exist already.
	ErrTooManyStreams = errors.New("stream: too many streams")
)

// RejectReason names a Publish error for coop_origin_rejected_total.
func RejectReason(err error) string {
	switch {
	case errors.Is(err, ErrTooManyStreams):
		return "stream_limit"
	case errors.Is(err, ErrBusy):
		return "busy"
	default:
		return "publish"
	}
}

// Sink receives the segmented stream (the plugin host). Its methods are
// called from publisher goroutines and must not block.
type Sink interface {
	StreamStarted(path string, header []byte)
	SegmentReady(path string, seg *segment.Segment, chunks [][]byte)
	StreamEnded(path string)
}

// Config holds the stream behaviour settings.
type Config struct {
	// SegmentDuration is the target segment duration
	// [segment.DefaultDuration].
	SegmentDuration time.Duration
	// Layers is the maximum number of layers per segment [segment.DefaultLayers].
	Layers int
	// GracePeriod is how long readers wait for a lost publisher to come
	// back (default 10s).
	GracePeriod time.Duration
	// Takeover lets a new publisher replace the current one.
	Takeover bool
	// MaxStreams caps the paths that exist at once, published or waiting
	// for their publisher (default DefaultMaxStreams).
	MaxStreams int
}

// DefaultMaxStreams is the default Config.MaxStreams.
const DefaultMaxStreams = 64

// PublisherInfo describes a publisher.
type PublisherInfo struct {
	// Protocol is "rtmp" or "rtsp".
	Protocol string
	// Remote is the publisher's address.
	Remote string
	// Kick is called (once, asynchronously) when the publisher is replaced.
	Kick func()
}

// Manager is the registry of streams.
type Manager struct {
	Config
	// RTSP is the server the readers' streams belong to.
	RTSP *gortsplib.Server
	// Sink receives segments (optional).
	Sink Sink
	// Log receives the manager's logs.
	Log *slog.Logger
	// Metrics receives counters (optional).
	Metrics *Metrics
	// Tap receives every stream's units (optional; the HLS muxer).
	Tap Tap

	mu      sync.Mutex
	streams map[string]*Stream
	nextID  uint64
	closed  bool
}

func (m *Manager) init() {
	if m.streams == nil {
		m.streams = make(map[string]*Stream)
		if m.SegmentDuration <= 0 {
			m.SegmentDuration = segment.DefaultDuration
		}
		if m.Layers <= 0 {
			m.Layers = segment.DefaultLayers
		}
		if m.GracePeriod <= 0 {
			m.GracePeriod = 10 * time.Second
		}
		if m.MaxStreams <= 0 {
			m.MaxStreams = DefaultMaxStreams
		}
		if m.Log == nil {
			m.Log = slog.Default()
		}
	}
}

// Publish reserves path for a new publisher. The publication starts
// producing output once SetTracks is called.
func (m *Manager) Publish(path string, info PublisherInfo) (*Publication, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	if m.closed {
		return nil, errors.New("stream: manager closed")
	}
	s := m.streams[path]
	if s == nil {
		if len(m.streams) >= m.MaxStreams {
			return nil, fmt.Errorf("%w: %d paths exist", ErrTooManyStreams, len(m.streams))
		}
		s = &Stream{path: path, m: m, created: time.Now()}
		m.streams[path] = s
	}
	s.mu.Lock()
	if s.ended {
		// The grace period ran out and end() is forgetting this stream
		// (it waits for m.mu, which we hold): a new publish is a new
		// stream, never an orphan attached to the ended one.
		s.mu.Unlock()
		s = &Stream{path: path, m: m, created: time.Now()}
		m.streams[path] = s
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if s.pub != nil {
		if !m.Takeover {
			return nil, fmt.Errorf("%w: %s is published from %s", ErrBusy, path, s.pub.info.Remote)
		}
		old := s.pub
		s.detachLocked()
		if old.info.Kick != nil {
			go old.info.Kick()
		}
		m.Log.Info("publisher replaced", "path", path, "old", old.info.Remote, "new", info.Remote)
	}
	m.nextID++
	p := &Publication{s: s, id: m.nextID, info: info}
	s.pub = p
	if s.graceTimer != nil {
		s.graceTimer.Stop()
		s.graceTimer = nil
	}
	s.pubInfo = info
	return p, nil
}

// ServerStream returns the RTSP stream of path, for a reader.
func (m *Manager) ServerStream(path string) (*gortsplib.ServerStream, bool) {
	s := m.lookup(path)
	if s == nil {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ss, s.ss != nil
}

// Close ends every stream.
func (m *Manager) Close() {
	m.mu.Lock()
	m.init()
	m.closed = true
	streams := make([]*Stream, 0, len(m.streams))
	for _, s := range m.streams {
		streams = append(streams, s)
	}
	m.mu.Unlock()
	for _, s := range streams {
		s.mu.Lock()
		s.detachLocked()
		s.mu.Unlock()
		s.end()
	}
}

// Stream is one live path.
type Stream struct {
	path    string
	m       *Manager
	created time.Time

	mu         sync.Mutex
	pub        *Publication
	pubInfo    PublisherInfo
	tracks     []segment.Track
	outs       []*trackOut
	desc       *description.Session
	ss         *gortsplib.ServerStream
	seg        *segmenter.Segmenter
	graceTimer *time.Timer
	ended      bool
	// timeline continuity across publishers
	offset     time.Duration
	lastDTS    time.Duration
	needOffset bool

	readers  map[*gortsplib.ServerSession]*reader
	hasVideo bool

	stats streamStats
}

type streamStats struct {
	bytesIn      uint64
	units        uint64
	segments     uint64
	layerBytes   [segment.MaxLayers]uint64
	publishes    uint64
	resumes      uint64
	writeErrors  uint64
	lastSegments uint64
}

// detachLocked removes the current publisher.
func (s *Stream) detachLocked() {
	if s.pub != nil {
		s.pub.detached = true
		s.pub = nil
	}
	if s.seg != nil {
		s.seg.Flush()
	}
}

// startLocked sets up the outputs for tracks, reusing the readers' stream
// when the tracks are compatible with it.
func (s *Stream) startLocked(tracks []segment.Track) error {
	s.stats.publishes++
	if s.ss != nil && compatible(s.tracks, tracks) {
		for i, o := range s.outs {
			o.setParams(tracks[i].Params)
		}
		s.tracks = tracks
		s.needOffset = true
		s.stats.resumes++
		s.m.Log.Info("publisher resumed, readers kept", "path", s.path)
		s.announceLocked()
		if s.m.Tap != nil {
			s.m.Tap.TapStart(s.path, tracks)
		}
		return nil
	}
	if s.ss != nil {
		s.m.Log.Info("publisher changed codecs, readers ended", "path", s.path)
		s.stopReadersLocked()
		s.ss.Close()
		s.ss = nil
	}
	outs := make([]*trackOut, len(tracks))
	desc := &description.Session{}
	for i, t := range tracks {
		o, err := newTrackOut(t)
		if err != nil {
			return err
		}
		outs[i] = o
		desc.Medias = append(desc.Medias, o.medi)
	}
	ss := &gortsplib.ServerStream{Server: s.m.RTSP, Desc: desc}
	if err := ss.Initialize(); err != nil {
		return fmt.Errorf("rtsp stream: %w", err)
	}
	s.tracks, s.outs, s.desc, s.ss = tracks, outs, desc, ss
	s.readers = make(map[*gortsplib.ServerSession]*reader)
	s.hasVideo = false
	for _, t := range tracks {
		s.hasVideo = s.hasVideo || t.Codec.IsVideo()
	}
	s.offset, s.lastDTS, s.needOffset = 0, 0, false
	s.announceLocked()
	if s.m.Tap != nil {
		s.m.Tap.TapStart(s.path, tracks)
	}
	return nil
}

// announceLocked (re)starts the segmenter and announces the header.
func (s *Stream) announceLocked() {
	var first uint64
	if s.seg != nil {
		first = s.seg.NextSeq()
	}
	s.seg = &segmenter.Segmenter{
		Tracks:    s.tracks,
		Target:    s.m.SegmentDuration,
		Layers:    s.m.Layers,
		FirstSeq:  first,
		OnSegment: s.onSegment,
	}
	if s.m.Sink == nil {
		return
	}
	h, err := segment.MarshalHeader(segment.Header{Tracks: s.tracks})
	if err != nil {
		s.m.Log.Error("stream header", "path", s.path, "err", err)
		return
	}
	s.m.Sink.StreamStarted(s.path, h)
}

// onSegment runs under s.mu (called by the segmenter).
func (s *Stream) onSegment(seg *segment.Segment) {
	chunks, err := seg.Marshal()
	if err != nil {
		s.m.Log.Error("segment encoding", "path", s.path, "seq", seg.Seq, "err", err)
		return
	}
	s.stats.segments++
	for l, c := range chunks {
		s.stats.layerBytes[l] += uint64(len(c))
		s.m.Metrics.segment(s.path, l, len(c))
	}
	if s.m.Sink != nil {
		s.m.Sink.SegmentReady(s.path, seg, chunks)
	}
}

func (s *Stream) writeLocked(u *media.Unit) error {
	if s.needOffset {
		// Continue the readers' timeline where the last publisher stopped.
		s.offset = s.lastDTS + 40*time.Millisecond - u.DTS
		s.needOffset = false
	}
	u.PTS += s.offset
	u.DTS += s.offset
	if u.DTS > s.lastDTS {
		s.lastDTS = u.DTS
	}
	s.stats.units++
	s.stats.bytesIn += uint64(u.Size())
	s.m.Metrics.ingest(s.path, s.pubInfo.Protocol, u.Size())
	if u.Track < 0 || u.Track >= len(s.outs) {
		return fmt.Errorf("unit for unknown track %d", u.Track)
	}
	o := s.outs[u.Track]
	pkts, err := o.packets(u, u.PTS)
	if err != nil {
		s.stats.writeErrors++
		return fmt.Errorf("rtp encoding: %w", err)
	}
	isVideo := o.codec.IsVideo()
	isHEVC := o.codec == segment.CodecH265
	for _, r := range s.readers {
		if _, ok := r.medias[o.medi]; !ok {
			continue // the reader did not set this track up
		}
		if r.resync.Swap(false) && r.hasVideo {
			r.started = false // its sender lost part of a unit
		}
		if !r.started {
			if (isVideo && !u.Key) || (!isVideo && r.hasVideo) {
				continue
			}
			r.started = true
			r.skipRASL = isHEVC && media.IsH265CRA(u.NALUs)
		} else if r.skipRASL && isHEVC {
			if media.IsH265RASL(u.NALUs) {
				continue
			}
			r.skipRASL = false
		}
		if !r.offer(readerUnit{medi: o.medi, pkts: pkts}) {
			r.dropped++
			s.m.Metrics.readerDrop(s.path)
			if isVideo {
				r.started = false // resume at the next key frame
			}
		}
	}
	if s.m.Tap != nil {
		s.m.Tap.TapUnit(s.path, u)
	}
	s.seg.Push(u)
	return nil
}

func (m *Manager) lookup(path string) *Stream {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.streams[path]
}

// AddReader starts sending path's packets to a playing session.
func (m *Manager) AddReader(path string, session *gortsplib.ServerSession) error {
	s := m.lookup(path)
	if s == nil {
		return fmt.Errorf("stream: %s is not published", path)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ss == nil || session.SetuppedStream() != s.ss {
		return fmt.Errorf("stream: %s changed since SETUP", path)
	}
	if s.readers == nil {
		s.readers = make(map[*gortsplib.ServerSession]*reader)
	}
	r := newReader(session)
	if len(r.medias) == 0 {
		return fmt.Errorf("stream: %s: the session set up no track", path)
	}
	if old := s.readers[session]; old != nil {
		old.stop()
	}
	s.readers[session] = r
	r.start()
	return nil
}

// RemoveReader stops sending to a session and returns the packets it lost.
func (m *Manager) RemoveReader(path string, session *gortsplib.ServerSession) uint64 {
	s := m.lookup(path)
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.readers[session]
	if r == nil {
		return 0
	}
	delete(s.readers, session)
	r.stop()
	return r.dropped
}

// ReaderDropped returns the packets a playing session lost so far.
func (m *Manager) ReaderDropped(path string, session *gortsplib.ServerSession) uint64 {
	s := m.lookup(path)
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.readers[session]; r != nil {
		return r.dropped
	}
	return 0
}

// stopReadersLocked ends every reader's sender and forgets the readers.
func (s *Stream) stopReadersLocked() {
	for _, r := range s.readers {
		r.stop()
	}
	s.readers = nil
}

// end closes the readers' stream and forgets the path.
func (s *Stream) end() {
	s.mu.Lock()
	if s.ended || s.pub != nil {
		s.mu.Unlock()
		return
	}
	s.ended = true
	s.stopReadersLocked()
	if s.ss != nil {
		s.ss.Close()
		s.ss = nil
	}
	hadHeader := s.seg != nil
	s.mu.Unlock()
	// The end is announced under m.mu, so the plugin and the HLS muxer hear
	// of it before a new publish of the path can start (Publish needs
	// m.mu): an old stream's end never lands after a new one's start.
	// Sink and Tap must not block (both only hand the event on).
	s.m.mu.Lock()
	if s.m.streams[s.path] == s {
		delete(s.m.streams, s.path)
	}
	if hadHeader && s.m.Sink != nil {
		s.m.Sink.StreamEnded(s.path)
	}
	if hadHeader && s.m.Tap != nil {
		s.m.Tap.TapEnd(s.path)
	}
	s.m.mu.Unlock()
	s.m.Log.Info("stream ended", "path", s.path)
}

// Publication is one publisher's hold on a path.
type Publication struct {
	s        *Stream
	id       uint64
	info     PublisherInfo
	started  bool
	detached bool // guarded by s.mu
	closed   bool
}

// SetTracks starts output for the publication's tracks.
func (p *Publication) SetTracks(tracks []segment.Track) error {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.detached {
		return ErrReplaced
	}
	if err := s.startLocked(tracks); err != nil {
		return err
	}
	p.started = true
	s.m.Log.Info("publishing", "path", s.path, "protocol", p.info.Protocol, "remote", p.info.Remote, "tracks", trackNames(tracks))
	return nil
}

// Write delivers one unit. Its timestamps are relative to this publication.
func (p *Publication) Write(u *media.Unit) error {
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.detached {
		return ErrReplaced
	}
	if !p.started {
		return ErrNotStarted
	}
	return s.writeLocked(u)
}

// Close ends the publication: readers wait GracePeriod for a new one.
func (p *Publication) Close() {
	s := p.s
	s.mu.Lock()
	if p.closed {
		s.mu.Unlock()
		return
	}
	p.closed = true
	if p.detached {
		s.mu.Unlock()
		return
	}
	s.detachLocked()
	grace := s.m.GracePeriod
	if s.ss == nil {
		grace = 0
	}
	s.graceTimer = time.AfterFunc(grace, s.end)
	s.mu.Unlock()
	s.m.Log.Info("publisher gone, waiting for it to come back", "path", s.path, "grace", grace)
}

func trackNames(tracks []segment.Track) []string {
	out := make([]string, len(tracks))
	for i, t := range tracks {
		out[i] = t.Codec.String()
	}
	return out
}

// Info is a snapshot of one stream for the API.
type Info struct {
	Path           string    `json:"path"`
	Publishing     bool      `json:"publishing"`
	Protocol       string    `json:"protocol,omitempty"`
	Publisher      string    `json:"publisher,omitempty"`
	Tracks         []string  `json:"tracks"`
	Created        time.Time `json:"created"`
	BytesIn        uint64    `json:"bytesIn"`
	BytesOut       uint64    `json:"bytesOut"`
	Units          uint64    `json:"units"`
	Segments       uint64    `json:"segments"`
	LayerBytes     []uint64  `json:"layerBytes"`
	LayerShares    []float64 `json:"layerShares"`
	Publishes      uint64    `json:"publishes"`
	Resumes        uint64    `json:"resumes"`
	Readers        int       `json:"readers"`
	NextSegmentSeq uint64    `json:"nextSegmentSeq"`
}

// Snapshot lists the streams, sorted by path.
func (m *Manager) Snapshot() []Info {
	m.mu.Lock()
	streams := make([]*Stream, 0, len(m.streams))
	for _, s := range m.streams {
		streams = append(streams, s)
	}
	m.mu.Unlock()
	out := make([]Info, 0, len(streams))
	for _, s := range streams {
		s.mu.Lock()
		in := Info{
			Path: s.path, Publishing: s.pub != nil, Tracks: trackNames(s.tracks), Created: s.created,
			BytesIn: s.stats.bytesIn, Units: s.stats.units, Segments: s.stats.segments,
			Publishes: s.stats.publishes, Resumes: s.stats.resumes,
		}
		if s.pub != nil {
			in.Protocol, in.Publisher = s.pub.info.Protocol, s.pub.info.Remote
		}
		for _, r := range s.readers {
			in.BytesOut += r.session.BytesSent()
		}
		in.Readers = len(s.readers)
		if s.seg != nil {
			in.NextSegmentSeq = s.seg.NextSeq()
		}
		var total uint64
		for _, b := range s.stats.layerBytes {
			total += b
		}
		for l, b := range s.stats.layerBytes {
			if b == 0 && l > 0 {
				break
			}
			in.LayerBytes = append(in.LayerBytes, b)
			if total > 0 {
				in.LayerShares = append(in.LayerShares, float64(b)/float64(total))
			}
		}
		s.mu.Unlock()
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
