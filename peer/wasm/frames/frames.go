// Package frames carries the peer protocol's frame stream over a
// message-oriented channel (a WebRTC data channel, a WebSocket): a sender
// cuts the byte stream into pieces of at most PieceSize bytes, a receiver
// appends every message to a Splitter and takes whole frames out of it
// (docs/webrtc.md, "Framing"). Message boundaries mean nothing. The
// Splitter applies the frame limits of wire.Reader: the declared length is
// checked against the type's limit as soon as the type byte is in, and
// bytes are held only as they arrive.
package frames

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// PieceSize is the largest message a sender writes (16 KiB: what every
// SCTP implementation interoperates at).
const PieceSize = 16 << 10

// MaxMessage is the largest message a receiver takes; a larger one is a
// protocol error (docs/webrtc.md).
const MaxMessage = 64 << 10

// DefaultMaxBuffered bounds the bytes a Splitter holds unparsed: a frame
// of the largest size and its successors' first bytes.
const DefaultMaxBuffered = wire.MaxFrameSize + 2*MaxMessage

// Errors of a Splitter; every one closes the connection.
var (
	ErrMessageTooLarge = errors.New("frames: message larger than 64 KiB")
	ErrOverflow        = errors.New("frames: too many bytes held unparsed")
)

// Splitter reassembles frames from messages. It is not safe for
// concurrent use.
type Splitter struct {
	// MaxFrame, when positive, lowers the frame limit (the first frame
	// of a connection, a Hello, is small).
	MaxFrame int
	// MaxBuffered bounds the unparsed bytes [DefaultMaxBuffered].
	MaxBuffered int

	buf []byte
	off int
	err error
}

// Push appends one received message.
func (s *Splitter) Push(msg []byte) error {
	if s.err != nil {
		return s.err
	}
	if len(msg) > MaxMessage {
		s.err = fmt.Errorf("%w: %d bytes", ErrMessageTooLarge, len(msg))
		return s.err
	}
	limit := s.MaxBuffered
	if limit <= 0 {
		limit = DefaultMaxBuffered
	}
	if s.Buffered()+len(msg) > limit {
		s.err = fmt.Errorf("%w: %d bytes", ErrOverflow, s.Buffered()+len(msg))
		return s.err
	}
	if s.off > 0 && s.off >= len(s.buf)/2 {
		n := copy(s.buf, s.buf[s.off:])
		s.buf, s.off = s.buf[:n], 0
	}
	s.buf = append(s.buf, msg...)
	// A bad length is an error at once, not when its bytes have come.
	if _, _, err := s.header(); err != nil {
		s.err = err
	}
	return s.err
}

// Buffered is the number of bytes held unparsed.
func (s *Splitter) Buffered() int { return len(s.buf) - s.off }

// header checks the next frame's length prefix: n is its length (0: not
// yet known), complete tells whether all of it is held.
func (s *Splitter) header() (n int, complete bool, err error) {
	b := s.buf[s.off:]
	if len(b) < 4 {
		return 0, false, nil
	}
	n = int(binary.BigEndian.Uint32(b))
	limit := wire.MaxFrameSize
	if s.MaxFrame > 0 && s.MaxFrame < limit {
		limit = s.MaxFrame
	}
	switch {
	case n == 0:
		return 0, false, wire.ErrEmptyFrame
	case n > limit:
		return 0, false, fmt.Errorf("%w: %d bytes", wire.ErrFrameTooLarge, n)
	}
	if len(b) < 5 {
		return n, false, nil
	}
	if lim := wire.MaxFrameFor(wire.Type(b[4])); n > lim {
		return 0, false, fmt.Errorf("%w: %d bytes for type %d", wire.ErrFrameTooLarge, n, b[4])
	}
	return n, len(b) >= 4+n, nil
}

// Next returns the next whole frame decoded; ok is false when no whole
// frame is held yet. After an error the Splitter keeps failing.
func (s *Splitter) Next() (m wire.Message, ok bool, err error) {
	if s.err != nil {
		return nil, false, s.err
	}
	n, complete, err := s.header()
	if err != nil {
		s.err = err
		return nil, false, err
	}
	if !complete {
		return nil, false, nil
	}
	// Decoded messages alias their frame: give each its own copy, the
	// buffer is reused.
	frame := append([]byte(nil), s.buf[s.off+4:s.off+4+n]...)
	s.off += 4 + n
	if m, err = wire.Unmarshal(frame); err != nil {
		s.err = err
		return nil, false, err
	}
	if s.off == len(s.buf) {
		s.buf, s.off = s.buf[:0], 0
	}
	return m, true, nil
}

// Pieces cuts an encoded frame (or several) into messages of at most
// PieceSize bytes, in order; the pieces share b's memory.
func Pieces(b []byte) [][]byte {
	out := make([][]byte, 0, (len(b)+PieceSize-1)/PieceSize)
	for len(b) > PieceSize {
		out = append(out, b[:PieceSize])
		b = b[PieceSize:]
	}
	if len(b) > 0 {
		out = append(out, b)
	}
	return out
}
