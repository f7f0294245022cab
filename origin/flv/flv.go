// Package flv parses the bodies of FLV audio and video tags as RTMP carries
// them (the payloads go-rtmp hands to OnAudio/OnVideo): AVC and AAC packet
// headers, the AVC and HEVC decoder configuration records, and Enhanced
// RTMP (FourCC) video headers. Every parser bounds its work by the input.
package flv

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Errors returned by the parsers.
var (
	ErrTruncated   = errors.New("flv: truncated")
	ErrUnsupported = errors.New("flv: unsupported codec")
	ErrInvalid     = errors.New("flv: invalid")
)

// MaxTagSize bounds a tag body accepted by the parsers.
const MaxTagSize = 8 << 20

// VideoCodec is the codec of a video tag.
type VideoCodec uint8

// Video codecs understood here.
const (
	VideoH264 VideoCodec = 1
	VideoH265 VideoCodec = 2
)

// VideoPacketType says what a video tag carries.
type VideoPacketType uint8

// Video packet types (the legacy AVC ones, Enhanced RTMP mapped onto them).
const (
	VideoSequenceHeader VideoPacketType = 0
	VideoNALUs          VideoPacketType = 1
	VideoEndOfSequence  VideoPacketType = 2
	// VideoIgnored is a packet with nothing to decode (metadata, MPEG-2 TS
	// sequence start, or an info/command frame).
	VideoIgnored VideoPacketType = 255
)

// VideoTag is a parsed video tag body.
type VideoTag struct {
	Codec      VideoCodec
	PacketType VideoPacketType
	KeyFrame   bool
	// CompositionTime is PTS - DTS in milliseconds.
	CompositionTime int32
	// Data is the decoder configuration record (sequence header) or the
	// AVCC/HVCC-framed NAL units. It aliases the input.
	Data []byte
}

// ParseVideo parses a video tag body.
func ParseVideo(b []byte) (VideoTag, error) {
	var t VideoTag
	if len(b) > MaxTagSize {
		return t, fmt.Errorf("%w: video tag of %d bytes", ErrInvalid, len(b))
	}
	if len(b) < 1 {
		return t, ErrTruncated
	}
	if b[0]&0x80 != 0 {
		return parseEnhancedVideo(b)
	}
	frameType := b[0] >> 4
	codecID := b[0] & 0x0f
	if frameType == 5 { // video info/command frame
		t.PacketType = VideoIgnored
		return t, nil
	}
	if codecID != 7 {
		return t, fmt.Errorf("%w: FLV video codec id %d", ErrUnsupported, codecID)
	}
	if len(b) < 5 {
		return t, ErrTruncated
	}
	t.Codec = VideoH264
	t.KeyFrame = frameType == 1
	t.PacketType = VideoPacketType(b[1])
	if t.PacketType > VideoEndOfSequence {
		return t, fmt.Errorf("%w: AVC packet type %d", ErrInvalid, b[1])
	}
	t.CompositionTime = si24(b[2:5])
	t.Data = b[5:]
	return t, nil
}

// Enhanced RTMP packet types (enhanced-rtmp v1).
const (
	exSequenceStart        = 0
	exCodedFrames          = 1
	exSequenceEnd          = 2
	exCodedFramesX         = 3
	exMetadata             = 4
	exMPEG2TSSequenceStart = 5
)

func parseEnhancedVideo(b []byte) (VideoTag, error) {
	var t VideoTag
	if len(b) < 5 {
		return t, ErrTruncated
	}
	frameType := (b[0] >> 4) & 0x07
	packetType := b[0] & 0x0f
	fourCC := string(b[1:5])
	if fourCC != "hvc1" {
		return t, fmt.Errorf("%w: enhanced RTMP FourCC %q", ErrUnsupported, fourCC)
	}
	t.Codec = VideoH265
	t.KeyFrame = frameType == 1
	if frameType == 5 {
		t.PacketType = VideoIgnored
		return t, nil
	}
	rest := b[5:]
	switch packetType {
	case exSequenceStart:
		t.PacketType = VideoSequenceHeader
		t.Data = rest
	case exCodedFrames:
		if len(rest) < 3 {
			return t, ErrTruncated
		}
		t.PacketType = VideoNALUs
		t.CompositionTime = si24(rest[:3])
		t.Data = rest[3:]
	case exCodedFramesX:
		t.PacketType = VideoNALUs
		t.Data = rest
	case exSequenceEnd:
		t.PacketType = VideoEndOfSequence
	case exMetadata, exMPEG2TSSequenceStart:
		t.PacketType = VideoIgnored
	default:
		return t, fmt.Errorf("%w: enhanced packet type %d", ErrInvalid, packetType)
	}
	return t, nil
}

func si24(b []byte) int32 {
	v := int32(b[0])<<16 | int32(b[1])<<8 | int32(b[2])
	if v&0x800000 != 0 {
		v -= 1 << 24
	}
	return v
}

// AudioTag is a parsed AAC audio tag body.
type AudioTag struct {
	// SequenceHeader tells whether Data is an AudioSpecificConfig.
	SequenceHeader bool
	// Data is the AudioSpecificConfig or one raw AAC access unit.
	Data []byte
}

// ParseAudio parses an audio tag body; only AAC is supported.
func ParseAudio(b []byte) (AudioTag, error) {
	var t AudioTag
	if len(b) > MaxTagSize {
		return t, fmt.Errorf("%w: audio tag of %d bytes", ErrInvalid, len(b))
	}
	if len(b) < 2 {
		return t, ErrTruncated
	}
	if format := b[0] >> 4; format != 10 {
		return t, fmt.Errorf("%w: FLV sound format %d", ErrUnsupported, format)
	}
	if b[1] > 1 {
		return t, fmt.Errorf("%w: AAC packet type %d", ErrInvalid, b[1])
	}
	t.SequenceHeader = b[1] == 0
	t.Data = b[2:]
	return t, nil
}

// AVCConfig is the content of an AVCDecoderConfigurationRecord.
type AVCConfig struct {
	SPS [][]byte
	PPS [][]byte
}

// ParseAVCConfig parses an AVCDecoderConfigurationRecord (ISO 14496-15).
func ParseAVCConfig(b []byte) (AVCConfig, error) {
	var c AVCConfig
	if len(b) < 6 {
		return c, ErrTruncated
	}
	if b[0] != 1 {
		return c, fmt.Errorf("%w: AVC configuration version %d", ErrInvalid, b[0])
	}
	if b[4]&0x03 != 3 {
		// lengthSizeMinusOne: only 4-byte NALU lengths are handled (what
		// every RTMP encoder sends).
		return c, fmt.Errorf("%w: NALU length size %d", ErrUnsupported, b[4]&0x03+1)
	}
	off := 5
	var err error
	nSPS := int(b[off] & 0x1f)
	off++
	if c.SPS, off, err = readParamSets(b, off, nSPS); err != nil {
		return c, err
	}
	if off >= len(b) {
		return c, ErrTruncated
	}
	nPPS := int(b[off])
	off++
	if c.PPS, _, err = readParamSets(b, off, nPPS); err != nil {
		return c, err
	}
	if len(c.SPS) == 0 || len(c.PPS) == 0 {
		return c, fmt.Errorf("%w: AVC configuration without SPS or PPS", ErrInvalid)
	}
	return c, nil
}

func readParamSets(b []byte, off, n int) ([][]byte, int, error) {
	var out [][]byte
	for i := 0; i < n; i++ {
		if off+2 > len(b) {
			return nil, off, ErrTruncated
		}
		l := int(binary.BigEndian.Uint16(b[off:]))
		off += 2
		if l == 0 || off+l > len(b) {
			return nil, off, ErrTruncated
		}
		out = append(out, b[off:off+l:off+l])
		off += l
	}
	return out, off, nil
}

// HEVCConfig is the content of an HEVCDecoderConfigurationRecord.
type HEVCConfig struct {
	VPS, SPS, PPS []byte
}

// ParseHEVCConfig parses an HEVCDecoderConfigurationRecord (ISO 14496-15).
func ParseHEVCConfig(b []byte) (HEVCConfig, error) {
	var c HEVCConfig
	if len(b) < 23 {
		return c, ErrTruncated
	}
	if b[0] != 1 {
		return c, fmt.Errorf("%w: HEVC configuration version %d", ErrInvalid, b[0])
	}
	if b[21]&0x03 != 3 {
		return c, fmt.Errorf("%w: NALU length size %d", ErrUnsupported, b[21]&0x03+1)
	}
	nArrays := int(b[22])
	off := 23
	for i := 0; i < nArrays; i++ {
		if off+3 > len(b) {
			return c, ErrTruncated
		}
		typ := b[off] & 0x3f
		n := int(binary.BigEndian.Uint16(b[off+1:]))
		off += 3
		sets, next, err := readParamSets(b, off, n)
		if err != nil {
			return c, err
		}
		off = next
		if len(sets) == 0 {
			continue
		}
		switch typ {
		case 32:
			c.VPS = sets[0]
		case 33:
			c.SPS = sets[0]
		case 34:
			c.PPS = sets[0]
		}
	}
	if c.VPS == nil || c.SPS == nil || c.PPS == nil {
		return c, fmt.Errorf("%w: HEVC configuration without VPS, SPS or PPS", ErrInvalid)
	}
	return c, nil
}
