// Package flvunits turns the FLV audio and video tag bodies of one RTMP
// session (an ingest publisher or a pulled upstream) into units: H.264,
// H.265 by Enhanced RTMP (FourCC) and AAC. It holds the session's
// sequence headers and the rule that fixes its track list: on the first
// video frame, or after TrackWait of audio alone.
package flvunits

import (
	"fmt"
	"io"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/coopstreaming/coop/origin/flv"
	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/segment"
)

// DefaultTrackWait is how long a session waits for a video sequence
// header before it starts with audio alone.
const DefaultTrackWait = 2 * time.Second

// Sink receives what a Converter produces.
type Sink interface {
	// Start fixes the track list; the Converter calls it once, before the
	// first Write. An error is returned from Video or Audio.
	Start(tracks []segment.Track) error
	// Write takes one unit; an error is returned from Video or Audio.
	Write(u *media.Unit) error
}

// Skip says why a tag was passed over.
type Skip int

// Reasons for passing a tag over.
const (
	// SkipVideoTag: the video tag header did not parse.
	SkipVideoTag Skip = iota + 1
	// SkipAudioTag: the audio tag header did not parse.
	SkipAudioTag
	// SkipAVCConfig: a bad AVC decoder configuration record.
	SkipAVCConfig
	// SkipHEVCConfig: a bad HEVC decoder configuration record.
	SkipHEVCConfig
	// SkipFrame: a video frame whose AVCC/HVCC framing did not parse.
	SkipFrame
)

func (s Skip) String() string {
	switch s {
	case SkipVideoTag:
		return "video tag"
	case SkipAudioTag:
		return "audio tag"
	case SkipAVCConfig:
		return "AVC configuration"
	case SkipHEVCConfig:
		return "HEVC configuration"
	case SkipFrame:
		return "video frame"
	}
	return fmt.Sprintf("skip(%d)", int(s))
}

// ReadTag reads a tag body from go-rtmp's payload reader, bounded so that
// an oversized body fails to parse instead of growing memory.
func ReadTag(payload io.Reader) ([]byte, error) {
	return io.ReadAll(io.LimitReader(payload, flv.MaxTagSize+1))
}

// Converter is the state of one session's conversion. It is not safe for
// concurrent use: the caller serialises Video and Audio.
type Converter struct {
	// Sink receives the tracks and units.
	Sink Sink
	// TrackWait is how long audio alone waits for a video sequence header
	// (DefaultTrackWait when zero).
	TrackWait time.Duration
	// OnSkip, when set, hears of every tag passed over (the caller logs).
	OnSkip func(s Skip, err error)
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	started    bool
	firstSeen  time.Time
	video      segment.Codec
	videoParam [][]byte
	audioConf  []byte
	videoIdx   int
	audioIdx   int
}

// Started tells whether the track list is fixed.
func (c *Converter) Started() bool { return c.started }

func (c *Converter) skip(s Skip, err error) {
	if c.OnSkip != nil {
		c.OnSkip(s, err)
	}
}

func (c *Converter) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Video converts one video tag body at timestamp (milliseconds). A bad tag
// is skipped (OnSkip); only the Sink's errors are returned.
func (c *Converter) Video(timestamp uint32, body []byte) error {
	tag, err := flv.ParseVideo(body)
	if err != nil {
		c.skip(SkipVideoTag, err)
		return nil
	}
	switch tag.PacketType {
	case flv.VideoSequenceHeader:
		c.videoConfig(tag)
	case flv.VideoNALUs:
		if c.video == 0 {
			return nil // no configuration yet
		}
		if err := c.startIfReady(true); err != nil {
			return err
		}
		var au h264.AVCC
		if err := au.Unmarshal(tag.Data); err != nil {
			c.skip(SkipFrame, err)
			return nil
		}
		key := tag.KeyFrame
		if c.video == segment.CodecH264 {
			key = key || h264.IsRandomAccess(au)
		} else {
			key = key || h265.IsRandomAccess(au)
		}
		dts := time.Duration(timestamp) * time.Millisecond
		return c.Sink.Write(&media.Unit{Track: c.videoIdx, NALUs: au, Key: key, DTS: dts,
			PTS: dts + time.Duration(tag.CompositionTime)*time.Millisecond})
	}
	return nil
}

func (c *Converter) videoConfig(tag flv.VideoTag) {
	switch tag.Codec {
	case flv.VideoH264:
		cfg, err := flv.ParseAVCConfig(tag.Data)
		if err != nil {
			c.skip(SkipAVCConfig, err)
			return
		}
		c.video, c.videoParam = segment.CodecH264, [][]byte{cfg.SPS[0], cfg.PPS[0]}
	case flv.VideoH265:
		cfg, err := flv.ParseHEVCConfig(tag.Data)
		if err != nil {
			c.skip(SkipHEVCConfig, err)
			return
		}
		c.video, c.videoParam = segment.CodecH265, [][]byte{cfg.VPS, cfg.SPS, cfg.PPS}
	}
}

// Audio converts one audio tag body at timestamp (milliseconds). A bad tag
// is skipped (OnSkip); only the Sink's errors are returned.
func (c *Converter) Audio(timestamp uint32, body []byte) error {
	tag, err := flv.ParseAudio(body)
	if err != nil {
		c.skip(SkipAudioTag, err)
		return nil
	}
	if tag.SequenceHeader {
		c.audioConf = append([]byte(nil), tag.Data...)
		return nil
	}
	if c.audioConf == nil {
		return nil
	}
	if err := c.startIfReady(false); err != nil || !c.started {
		return err
	}
	t := time.Duration(timestamp) * time.Millisecond
	return c.Sink.Write(&media.Unit{Track: c.audioIdx, AU: tag.Data, PTS: t, DTS: t})
}

// startIfReady fixes the track list on the first video frame, or after
// TrackWait of audio alone.
func (c *Converter) startIfReady(video bool) error {
	if c.started {
		return nil
	}
	if !video {
		now := c.now()
		if c.firstSeen.IsZero() {
			c.firstSeen = now
		}
		wait := c.TrackWait
		if wait <= 0 {
			wait = DefaultTrackWait
		}
		if now.Sub(c.firstSeen) < wait {
			return nil
		}
	}
	var tracks []segment.Track
	if c.video != 0 {
		c.videoIdx = len(tracks)
		tracks = append(tracks, segment.Track{ID: uint8(len(tracks)), Codec: c.video, Params: c.videoParam})
	}
	if c.audioConf != nil {
		c.audioIdx = len(tracks)
		tracks = append(tracks, segment.Track{ID: uint8(len(tracks)), Codec: segment.CodecAAC, Params: [][]byte{c.audioConf}})
	}
	if err := c.Sink.Start(tracks); err != nil {
		return err
	}
	c.started = true
	return nil
}
