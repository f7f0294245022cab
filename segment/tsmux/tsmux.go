// Package tsmux turns layered segments back into a playable MPEG-TS stream:
// the playout side of the segment contract (used by the peer client and by
// the tests that prove the layers decode).
package tsmux

import (
	"fmt"
	"io"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"

	"github.com/coopstreaming/coop/segment"
)

// Muxer writes frames of one stream as MPEG-TS.
type Muxer struct {
	w      *mpegts.Writer
	tracks map[uint8]*muxTrack
	// Frames counts frames written, per track ID.
	Frames map[uint8]int
}

type muxTrack struct {
	codec segment.Codec
	ts    *mpegts.Track
}

// New returns a Muxer for the tracks of h writing to w.
func New(w io.Writer, h segment.Header) (*Muxer, error) {
	m := &Muxer{tracks: make(map[uint8]*muxTrack), Frames: make(map[uint8]int)}
	var tracks []*mpegts.Track
	for _, t := range h.Tracks {
		mt := &muxTrack{codec: t.Codec}
		switch t.Codec {
		case segment.CodecH264:
			mt.ts = &mpegts.Track{Codec: &mpegts.CodecH264{}}
		case segment.CodecH265:
			mt.ts = &mpegts.Track{Codec: &mpegts.CodecH265{}}
		case segment.CodecAAC:
			if len(t.Params) == 0 {
				return nil, fmt.Errorf("tsmux: AAC track %d without config", t.ID)
			}
			var conf mpeg4audio.AudioSpecificConfig
			if err := conf.Unmarshal(t.Params[0]); err != nil {
				return nil, fmt.Errorf("tsmux: AAC config: %w", err)
			}
			mt.ts = &mpegts.Track{Codec: &mpegts.CodecMPEG4Audio{Config: conf}}
		default:
			return nil, fmt.Errorf("tsmux: codec %v", t.Codec)
		}
		m.tracks[t.ID] = mt
		tracks = append(tracks, mt.ts)
	}
	m.w = &mpegts.Writer{W: w, Tracks: tracks}
	if err := m.w.Initialize(); err != nil {
		return nil, fmt.Errorf("tsmux: %w", err)
	}
	return m, nil
}

// WriteFrames writes frames (in decode order) to the stream.
func (m *Muxer) WriteFrames(frames []segment.Frame) error {
	for _, f := range frames {
		t := m.tracks[f.Track]
		if t == nil {
			return fmt.Errorf("tsmux: frame for unknown track %d", f.Track)
		}
		var err error
		switch t.codec {
		case segment.CodecH264, segment.CodecH265:
			var au h264.AVCC
			if err = au.Unmarshal(f.Payload); err != nil {
				return fmt.Errorf("tsmux: frame %d: %w", f.Index, err)
			}
			if t.codec == segment.CodecH264 {
				err = m.w.WriteH264(t.ts, f.PTS, f.DTS, au)
			} else {
				err = m.w.WriteH265(t.ts, f.PTS, f.DTS, au)
			}
		case segment.CodecAAC:
			err = m.w.WriteMPEG4Audio(t.ts, f.PTS, [][]byte{f.Payload})
		}
		if err != nil {
			return fmt.Errorf("tsmux: frame %d: %w", f.Index, err)
		}
		m.Frames[f.Track]++
	}
	return nil
}
