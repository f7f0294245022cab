// Package segment defines the layered segment format: the contract between
// the origin, which cuts a live stream into numbered, layered segments, and
// the peer playout, which turns received layer chunks back into media.
//
// The format is specified in docs/segment-format.md. It is media-aware (it
// knows tracks, codecs and timestamps) but carries no P2P logic: the P2P
// core treats the encoded header and layer chunks as opaque bytes.
package segment

import (
	"errors"
	"fmt"
	"time"
)

// Version is the current version of the segment format.
const Version = 1

// Timebase is the clock rate, in ticks per second, of every timestamp in
// the format (the MPEG-TS 90 kHz clock).
const Timebase = 90000

// Defaults of a stream's segmentation: the one home of each on the
// origin's side (config, stream manager, segmenter). The P2P core may not
// import this package and has its own copies (playback.
// DefaultSegmentDuration, engine.DefaultLayers), which
// integration/defaults_test.go keeps equal to these.
const (
	// DefaultDuration is the target segment duration δ.
	DefaultDuration = 500 * time.Millisecond
	// DefaultLayers is the number of layers a stream is cut into.
	DefaultLayers = 3
)

// Size limits enforced by every decoder of this package.
const (
	// MaxHeaderSize bounds an encoded stream header.
	MaxHeaderSize = 64 << 10
	// MaxChunkSize bounds an encoded layer chunk.
	MaxChunkSize = 16 << 20
	// MaxFramesPerChunk bounds the frames in one layer chunk.
	MaxFramesPerChunk = 4096
	// MaxTracks bounds the tracks of a stream.
	MaxTracks = 8
	// MaxParams bounds the codec parameter sets of a track.
	MaxParams = 8
	// MaxLayers bounds the layers of a segment.
	MaxLayers = 8
)

// Codec identifies the codec of a track.
type Codec uint8

// Codecs known to the format.
const (
	CodecH264 Codec = 1
	CodecH265 Codec = 2
	CodecAAC  Codec = 3
)

// String returns the codec's usual name.
func (c Codec) String() string {
	switch c {
	case CodecH264:
		return "H264"
	case CodecH265:
		return "H265"
	case CodecAAC:
		return "AAC"
	default:
		return fmt.Sprintf("codec(%d)", uint8(c))
	}
}

// IsVideo tells whether the codec is a video codec.
func (c Codec) IsVideo() bool { return c == CodecH264 || c == CodecH265 }

// Track describes one elementary stream.
type Track struct {
	// ID identifies the track inside the stream (0..MaxTracks-1).
	ID uint8
	// Codec is the track's codec.
	Codec Codec
	// Params holds the codec parameters: SPS, PPS for H.264; VPS, SPS, PPS
	// for H.265; the AudioSpecificConfig for AAC.
	Params [][]byte
}

// Header is the stream header: the codec parameters of every track.
type Header struct {
	// Tracks lists the stream's tracks.
	Tracks []Track
}

// Frame is one access unit (video) or one audio access unit.
type Frame struct {
	// Index is the frame's decode-order position inside its segment; frames
	// of all layers merge back into decode order by Index.
	Index uint32
	// Track is the ID of the frame's track.
	Track uint8
	// Key marks a random-access (key) frame.
	Key bool
	// PTS and DTS are in Timebase ticks.
	PTS int64
	DTS int64
	// Payload is the frame: AVCC-framed NAL units (4-byte lengths) for
	// video, one raw AAC access unit for audio.
	Payload []byte
}

// Segment is a numbered piece of a stream, split into layers.
type Segment struct {
	// Seq is the segment number, increasing by one per segment.
	Seq uint64
	// Start is the DTS of the segment's first frame, in Timebase ticks.
	Start int64
	// Duration is the segment's media duration in Timebase ticks.
	Duration int64
	// RandomAccess tells whether the segment starts with a key frame.
	RandomAccess bool
	// Layers holds the frames of each layer; Layers[0] is the base layer
	// (audio, key and reference frames); higher layers hold frames that no
	// lower layer depends on.
	Layers [][]Frame
}

// Errors returned by the decoders.
var (
	ErrTruncated   = errors.New("segment: truncated input")
	ErrTooLarge    = errors.New("segment: size limit exceeded")
	ErrBadMagic    = errors.New("segment: bad magic")
	ErrBadVersion  = errors.New("segment: unsupported version")
	ErrTrailing    = errors.New("segment: trailing bytes")
	ErrInvalid     = errors.New("segment: invalid field")
	ErrUnknownType = errors.New("segment: unknown codec")
)
