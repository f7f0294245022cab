// Package segmenter cuts a stream of access units into numbered, layered
// segments (the format of package segment).
package segmenter

import (
	"encoding/binary"
	"time"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/segment"
)

// Segmenter cuts units into segments. It is not safe for concurrent use.
type Segmenter struct {
	// Tracks describes the stream's tracks, by unit Track index.
	Tracks []segment.Track
	// Target is the target segment duration [segment.DefaultDuration]. A
	// segment is cut before the first video unit at or past Target, or
	// before a key frame past half of Target, so segments tend to start
	// with key frames.
	Target time.Duration
	// Layers is the maximum number of layers [segment.DefaultLayers].
	Layers int
	// FirstSeq is the number of the first segment.
	FirstSeq uint64
	// OnSegment receives each completed segment.
	OnSegment func(*segment.Segment)

	layerer  media.Layerer
	cur      *segment.Segment
	curStart time.Duration
	index    uint32
	next     uint64
	hasVideo bool
	inited   bool
	lastDTS  time.Duration
}

func (s *Segmenter) init() {
	if s.Target <= 0 {
		s.Target = segment.DefaultDuration
	}
	if s.Layers <= 0 {
		s.Layers = segment.DefaultLayers
	}
	s.Layers = min(s.Layers, segment.MaxLayers)
	s.layerer.Layers = s.Layers
	s.next = s.FirstSeq
	for _, t := range s.Tracks {
		if t.Codec.IsVideo() {
			s.hasVideo = true
		}
	}
	s.inited = true
}

func ticks(d time.Duration) int64 { return int64(d) * segment.Timebase / int64(time.Second) }

// Push adds a unit (in decode order).
func (s *Segmenter) Push(u *media.Unit) {
	if !s.inited {
		s.init()
	}
	if u.Track < 0 || u.Track >= len(s.Tracks) {
		return
	}
	track := s.Tracks[u.Track]
	cuttable := track.Codec.IsVideo() || !s.hasVideo
	if cuttable && s.cur != nil {
		elapsed := u.DTS - s.curStart
		if elapsed >= s.Target || (u.Key && elapsed >= s.Target/2) {
			s.cut(u.DTS)
		}
	}
	if s.cur == nil {
		if !cuttable {
			return // wait for the first video unit
		}
		// Without video every segment is a random-access point: each
		// audio frame decodes alone (a player on a peer starts at one).
		s.cur = &segment.Segment{Seq: s.next, Start: ticks(u.DTS), RandomAccess: u.Key || !s.hasVideo}
		s.curStart = u.DTS
		s.index = 0
		s.next++
	}
	layer := s.layerer.Layer(track.Codec, u)
	for len(s.cur.Layers) <= layer {
		s.cur.Layers = append(s.cur.Layers, nil)
	}
	f := segment.Frame{Index: s.index, Track: track.ID, Key: u.Key, PTS: ticks(u.PTS), DTS: ticks(u.DTS)}
	if track.Codec.IsVideo() {
		f.Payload = avcc(track.Codec, u.NALUs, u.Key, track.Params)
	} else {
		f.Payload = append([]byte(nil), u.AU...)
	}
	s.index++
	s.cur.Layers[layer] = append(s.cur.Layers[layer], f)
	if u.DTS > s.lastDTS {
		s.lastDTS = u.DTS
	}
}

func (s *Segmenter) cut(end time.Duration) {
	s.cur.Duration = ticks(end) - s.cur.Start
	seg := s.cur
	s.cur = nil
	if s.OnSegment != nil {
		s.OnSegment(seg)
	}
}

// Flush emits the segment in progress, if any.
func (s *Segmenter) Flush() {
	if s.cur != nil {
		s.cut(s.lastDTS + 33*time.Millisecond)
	}
}

// NextSeq is the number the next segment will get.
func (s *Segmenter) NextSeq() uint64 {
	if !s.inited {
		return s.FirstSeq
	}
	return s.next
}

// avcc frames NAL units with 4-byte lengths; key frames carry the
// parameter sets in-band so every segment that starts with one decodes alone.
func avcc(codec segment.Codec, nalus [][]byte, key bool, params [][]byte) []byte {
	size := 0
	for _, n := range nalus {
		size += 4 + len(n)
	}
	if key {
		for _, p := range params {
			size += 4 + len(p)
		}
	}
	b := make([]byte, 0, size)
	if key && !hasParams(codec, nalus) {
		for _, p := range params {
			b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
			b = append(b, p...)
		}
	}
	for _, n := range nalus {
		b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		b = append(b, n...)
	}
	return b
}

func hasParams(codec segment.Codec, nalus [][]byte) bool {
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		if codec == segment.CodecH264 && n[0]&0x1f == 7 { // SPS
			return true
		}
		if codec == segment.CodecH265 && (n[0]>>1)&0x3f == 33 { // SPS
			return true
		}
	}
	return false
}
