// Package rtmpguard frames the RTMP chunk stream ahead of go-rtmp and
// validates it, so that one unauthenticated client cannot kill the process.
//
// go-rtmp v0.0.7 with go-amf0 v0.1.0 trusts declared AMF0 counts (a strict
// array of 2^31-1 entries allocates ~32 GiB) and recurses without a depth
// limit (a million nested arrays overflow the stack): both are fatal runtime
// errors that recover cannot catch. It also enforces no message size limit,
// no chunk-stream limit and no timeouts. The Guard parses the same framing
// the library parses (including its handling of extended timestamps), holds
// every byte back until the chunk it belongs to is complete and, for command
// and data messages, until the whole message has been validated, and closes
// the connection on the first violation.
package rtmpguard

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Errors reported by the guard. Every rejection wraps one of them.
var (
	ErrMalformedAMF  = errors.New("rtmpguard: malformed AMF0")
	ErrAMFLimit      = errors.New("rtmpguard: AMF0 limit exceeded")
	ErrMessageSize   = errors.New("rtmpguard: message size limit exceeded")
	ErrChunkStreams  = errors.New("rtmpguard: too many chunk streams")
	ErrChunkSize     = errors.New("rtmpguard: invalid chunk size")
	ErrProtocol      = errors.New("rtmpguard: protocol violation")
	ErrUnsupported   = errors.New("rtmpguard: unsupported message type")
	ErrBadHandshake  = errors.New("rtmpguard: bad handshake")
	ErrBufferedLimit = errors.New("rtmpguard: too many bytes buffered")
)

// Limits bounds what the guard lets through. Zero fields take the defaults
// of DefaultLimits.
type Limits struct {
	// MaxMessageSize bounds audio, video and control messages (default 8 MiB).
	MaxMessageSize int
	// MaxCommandSize bounds AMF command and data messages (default 64 KiB).
	MaxCommandSize int
	// MaxChunkStreams bounds distinct chunk stream IDs (default 32).
	MaxChunkStreams int
	// MaxChunkSize bounds the peer's Set Chunk Size (default 1 MiB).
	MaxChunkSize int
	// MaxAMFDepth bounds AMF0 nesting (default 16).
	MaxAMFDepth int
	// MaxAMFValues bounds the AMF0 values in one message (default 1024).
	MaxAMFValues int
}

// DefaultLimits are the limits used for zero fields.
var DefaultLimits = Limits{
	MaxMessageSize:  8 << 20,
	MaxCommandSize:  64 << 10,
	MaxChunkStreams: 32,
	MaxChunkSize:    1 << 20,
	MaxAMFDepth:     16,
	MaxAMFValues:    1024,
}

// WithDefaults returns l with zero fields set from DefaultLimits.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	if l.MaxMessageSize > 0 {
		d.MaxMessageSize = l.MaxMessageSize
	}
	if l.MaxCommandSize > 0 {
		d.MaxCommandSize = l.MaxCommandSize
	}
	if l.MaxChunkStreams > 0 {
		d.MaxChunkStreams = l.MaxChunkStreams
	}
	if l.MaxChunkSize > 0 {
		d.MaxChunkSize = l.MaxChunkSize
	}
	if l.MaxAMFDepth > 0 {
		d.MaxAMFDepth = l.MaxAMFDepth
	}
	if l.MaxAMFValues > 0 {
		d.MaxAMFValues = l.MaxAMFValues
	}
	return d
}

// RTMP message type IDs (RTMP specification 5.4 and 7.1).
const (
	typeSetChunkSize = 1
	typeAbort        = 2
	typeAck          = 3
	typeUserControl  = 4
	typeWinAckSize   = 5
	typeSetPeerBW    = 6
	typeAudio        = 8
	typeVideo        = 9
	typeDataAMF3     = 15
	typeSharedAMF3   = 16
	typeCommandAMF3  = 17
	typeDataAMF0     = 18
	typeSharedAMF0   = 19
	typeCommandAMF0  = 20
	typeAggregate    = 22
)

const (
	handshakeSize  = 1 + 1536 + 1536 // C0 + C1 + C2
	rtmpVersion    = 3
	defaultChunkSz = 128
)

type chunkStream struct {
	length    uint32
	typeID    uint8
	streamID  uint32
	started   bool   // a header with a length has been seen
	got       uint32 // bytes of the current message received so far
	collected []byte // payload of the current message, for validated types
}

// Framer parses an RTMP client byte stream (handshake, then chunks) and
// says how many leading bytes are safe to hand to the library.
type Framer struct {
	lim       Limits
	handshake int // handshake bytes still expected
	chunkSize uint32
	streams   map[uint32]*chunkStream
	// Messages counts complete messages seen, by type.
	Messages map[uint8]int
}

// NewFramer returns a Framer for a server-side connection.
func NewFramer(lim Limits) *Framer {
	return &Framer{
		lim:       lim.WithDefaults(),
		handshake: handshakeSize,
		chunkSize: defaultChunkSz,
		streams:   make(map[uint32]*chunkStream),
		Messages:  make(map[uint8]int),
	}
}

// Feed parses as much of b as forms complete units (handshake bytes or
// whole chunks) and returns how many leading bytes of b were validated. The
// caller keeps the rest and calls Feed again with more data appended. An
// error means the connection must be closed.
func (f *Framer) Feed(b []byte) (int, error) {
	off := 0
	if f.handshake > 0 {
		if f.handshake == handshakeSize && len(b) > 0 && b[0] != rtmpVersion {
			return 0, fmt.Errorf("%w: version %d", ErrBadHandshake, b[0])
		}
		n := min(f.handshake, len(b))
		f.handshake -= n
		off = n
	}
	for f.handshake == 0 && off < len(b) {
		n, err := f.chunk(b[off:])
		if err != nil {
			return off, err
		}
		if n == 0 {
			break
		}
		off += n
	}
	return off, nil
}

// chunk parses one chunk at the start of b; it returns 0 when b does not
// hold the whole chunk yet.
func (f *Framer) chunk(b []byte) (int, error) {
	if len(b) < 1 {
		return 0, nil
	}
	format := b[0] >> 6
	csid := uint32(b[0] & 0x3f)
	off := 1
	switch csid {
	case 0:
		if len(b) < 2 {
			return 0, nil
		}
		csid = uint32(b[1]) + 64
		off = 2
	case 1:
		if len(b) < 3 {
			return 0, nil
		}
		csid = uint32(b[2])*256 + uint32(b[1]) + 64
		off = 3
	}
	hdrLen := [4]int{11, 7, 3, 0}[format]
	if len(b) < off+hdrLen {
		return 0, nil
	}
	h := b[off : off+hdrLen]
	off += hdrLen
	// go-rtmp reads an extended timestamp only for formats 0-2 whose
	// 24-bit field is 0xffffff; mirror it exactly so framing never drifts.
	if format < 3 && h[0] == 0xff && h[1] == 0xff && h[2] == 0xff {
		if len(b) < off+4 {
			return 0, nil
		}
		off += 4
	}

	prev := f.streams[csid]
	if prev == nil {
		if len(f.streams) >= f.lim.MaxChunkStreams {
			return 0, fmt.Errorf("%w: more than %d", ErrChunkStreams, f.lim.MaxChunkStreams)
		}
		prev = &chunkStream{}
	}
	// Work on a copy: nothing changes until the whole chunk is present.
	cs := &chunkStream{}
	*cs = *prev
	if format <= 1 {
		if cs.got != 0 {
			return 0, fmt.Errorf("%w: new message header on chunk stream %d in the middle of a message", ErrProtocol, csid)
		}
		length := uint32(h[3])<<16 | uint32(h[4])<<8 | uint32(h[5])
		typeID := h[6]
		if err := f.checkSize(typeID, length); err != nil {
			return 0, err
		}
		cs.length, cs.typeID, cs.started = length, typeID, true
		if format == 0 {
			cs.streamID = binary.LittleEndian.Uint32(h[7:11])
		}
	} else if !cs.started {
		return 0, fmt.Errorf("%w: chunk format %d on chunk stream %d without a previous header", ErrProtocol, format, csid)
	}
	payload := min(cs.length-cs.got, f.chunkSize)
	if len(b) < off+int(payload) {
		return 0, nil
	}
	if needsBody(cs.typeID) {
		cs.collected = append(prev.collected, b[off:off+int(payload)]...)
	}
	off += int(payload)
	cs.got += payload
	f.streams[csid] = cs
	if cs.got == cs.length {
		err := f.message(cs)
		cs.got, cs.collected = 0, cs.collected[:0]
		if err != nil {
			return 0, err
		}
	}
	return off, nil
}

func needsBody(typeID uint8) bool {
	return typeID == typeSetChunkSize || typeID == typeDataAMF0 || typeID == typeCommandAMF0
}

func (f *Framer) checkSize(typeID uint8, length uint32) error {
	if length == 0 {
		return fmt.Errorf("%w: empty message of type %d", ErrProtocol, typeID)
	}
	switch typeID {
	case typeSetChunkSize, typeAbort, typeAck, typeWinAckSize:
		if length != 4 {
			return fmt.Errorf("%w: control message %d of %d bytes", ErrProtocol, typeID, length)
		}
	case typeSetPeerBW:
		if length != 5 {
			return fmt.Errorf("%w: set peer bandwidth of %d bytes", ErrProtocol, length)
		}
	case typeUserControl:
		if length > 64 {
			return fmt.Errorf("%w: user control of %d bytes", ErrProtocol, length)
		}
	case typeDataAMF0, typeCommandAMF0:
		if length > uint32(f.lim.MaxCommandSize) {
			return fmt.Errorf("%w: command of %d bytes (limit %d)", ErrMessageSize, length, f.lim.MaxCommandSize)
		}
	case typeAudio, typeVideo:
		if length > uint32(f.lim.MaxMessageSize) {
			return fmt.Errorf("%w: media message of %d bytes (limit %d)", ErrMessageSize, length, f.lim.MaxMessageSize)
		}
	default:
		// AMF3 messages, shared objects and aggregates: go-rtmp implements
		// none of them, OBS and ffmpeg send none of them.
		return fmt.Errorf("%w: %d", ErrUnsupported, typeID)
	}
	return nil
}

func (f *Framer) message(cs *chunkStream) error {
	f.Messages[cs.typeID]++
	switch cs.typeID {
	case typeSetChunkSize:
		if cs.streamID != 0 {
			return fmt.Errorf("%w: set chunk size on message stream %d", ErrProtocol, cs.streamID)
		}
		size := binary.BigEndian.Uint32(cs.collected)
		if size == 0 || size > uint32(f.lim.MaxChunkSize) {
			return fmt.Errorf("%w: %d (limit %d)", ErrChunkSize, size, f.lim.MaxChunkSize)
		}
		f.chunkSize = size
	case typeDataAMF0, typeCommandAMF0:
		if err := ValidateAMF0(cs.collected, f.lim.MaxAMFDepth, f.lim.MaxAMFValues); err != nil {
			return err
		}
	}
	return nil
}

// ChunkSize is the chunk size the peer currently uses.
func (f *Framer) ChunkSize() uint32 { return f.chunkSize }
