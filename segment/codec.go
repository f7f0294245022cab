package segment

import (
	"encoding/binary"
	"fmt"
	"sort"
)

var (
	headerMagic = [4]byte{'C', 'S', 'H', 'D'}
	chunkMagic  = [4]byte{'C', 'S', 'L', 'C'}
)

// MarshalHeader encodes a stream header.
func MarshalHeader(h Header) ([]byte, error) {
	if len(h.Tracks) == 0 || len(h.Tracks) > MaxTracks {
		return nil, fmt.Errorf("%w: %d tracks", ErrInvalid, len(h.Tracks))
	}
	b := append([]byte{}, headerMagic[:]...)
	b = append(b, Version, byte(len(h.Tracks)))
	for _, t := range h.Tracks {
		if len(t.Params) > MaxParams {
			return nil, fmt.Errorf("%w: %d params", ErrInvalid, len(t.Params))
		}
		b = append(b, t.ID, byte(t.Codec), byte(len(t.Params)))
		for _, p := range t.Params {
			if len(p) > 0xffff {
				return nil, fmt.Errorf("%w: param of %d bytes", ErrTooLarge, len(p))
			}
			b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
			b = append(b, p...)
		}
	}
	if len(b) > MaxHeaderSize {
		return nil, ErrTooLarge
	}
	return b, nil
}

// UnmarshalHeader decodes a stream header, rejecting oversized, truncated
// and trailing input.
func UnmarshalHeader(b []byte) (Header, error) {
	var h Header
	if len(b) > MaxHeaderSize {
		return h, fmt.Errorf("%w: header of %d bytes", ErrTooLarge, len(b))
	}
	r := reader{b: b}
	if err := r.magic(headerMagic); err != nil {
		return h, err
	}
	n := int(r.u8())
	if r.err == nil && (n == 0 || n > MaxTracks) {
		return h, fmt.Errorf("%w: %d tracks", ErrInvalid, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		t := Track{ID: r.u8(), Codec: Codec(r.u8())}
		np := int(r.u8())
		if r.err != nil {
			break
		}
		if t.Codec < CodecH264 || t.Codec > CodecAAC {
			return h, fmt.Errorf("%w: %d", ErrUnknownType, t.Codec)
		}
		if np > MaxParams || t.ID >= MaxTracks {
			return h, fmt.Errorf("%w: track %d with %d params", ErrInvalid, t.ID, np)
		}
		for j := 0; j < np && r.err == nil; j++ {
			t.Params = append(t.Params, r.bytes(int(r.u16())))
		}
		h.Tracks = append(h.Tracks, t)
	}
	if r.err != nil {
		return Header{}, r.err
	}
	if r.off != len(b) {
		return Header{}, ErrTrailing
	}
	return h, nil
}

// ChunkInfo is the fixed part of a layer chunk.
type ChunkInfo struct {
	Seq          uint64
	Layer        uint8
	Start        int64
	Duration     int64
	RandomAccess bool
}

const (
	frameFlagKey  = 1 << 0
	chunkFlagRAP  = 1 << 0
	frameOverhead = 4 + 1 + 1 + 8 + 8 + 4
)

// MarshalChunk encodes the frames of one layer of a segment.
func MarshalChunk(info ChunkInfo, frames []Frame) ([]byte, error) {
	if len(frames) > MaxFramesPerChunk {
		return nil, fmt.Errorf("%w: %d frames", ErrTooLarge, len(frames))
	}
	size := 4 + 1 + 8 + 1 + 8 + 8 + 1 + 4
	for _, f := range frames {
		size += frameOverhead + len(f.Payload)
	}
	if size > MaxChunkSize {
		return nil, fmt.Errorf("%w: chunk of %d bytes", ErrTooLarge, size)
	}
	b := make([]byte, 0, size)
	b = append(b, chunkMagic[:]...)
	b = append(b, Version)
	b = binary.BigEndian.AppendUint64(b, info.Seq)
	b = append(b, info.Layer)
	b = binary.BigEndian.AppendUint64(b, uint64(info.Start))
	b = binary.BigEndian.AppendUint64(b, uint64(info.Duration))
	var flags byte
	if info.RandomAccess {
		flags |= chunkFlagRAP
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint32(b, uint32(len(frames)))
	for _, f := range frames {
		b = binary.BigEndian.AppendUint32(b, f.Index)
		b = append(b, f.Track)
		var ff byte
		if f.Key {
			ff |= frameFlagKey
		}
		b = append(b, ff)
		b = binary.BigEndian.AppendUint64(b, uint64(f.PTS))
		b = binary.BigEndian.AppendUint64(b, uint64(f.DTS))
		b = binary.BigEndian.AppendUint32(b, uint32(len(f.Payload)))
		b = append(b, f.Payload...)
	}
	return b, nil
}

// UnmarshalChunk decodes a layer chunk, rejecting oversized, truncated and
// trailing input. Frame payloads alias b.
func UnmarshalChunk(b []byte) (ChunkInfo, []Frame, error) {
	var info ChunkInfo
	if len(b) > MaxChunkSize {
		return info, nil, fmt.Errorf("%w: chunk of %d bytes", ErrTooLarge, len(b))
	}
	r := reader{b: b}
	if err := r.magic(chunkMagic); err != nil {
		return info, nil, err
	}
	info.Seq = r.u64()
	info.Layer = r.u8()
	info.Start = int64(r.u64())
	info.Duration = int64(r.u64())
	flags := r.u8()
	info.RandomAccess = flags&chunkFlagRAP != 0
	n := r.u32()
	if r.err != nil {
		return ChunkInfo{}, nil, r.err
	}
	if info.Layer >= MaxLayers || info.Duration < 0 || flags&^chunkFlagRAP != 0 {
		return ChunkInfo{}, nil, fmt.Errorf("%w: layer %d duration %d", ErrInvalid, info.Layer, info.Duration)
	}
	if n > MaxFramesPerChunk || int(n)*frameOverhead > len(b)-r.off {
		return ChunkInfo{}, nil, fmt.Errorf("%w: %d frames declared in %d bytes", ErrTooLarge, n, len(b)-r.off)
	}
	frames := make([]Frame, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		f := Frame{Index: r.u32(), Track: r.u8()}
		ff := r.u8()
		if ff&^frameFlagKey != 0 && r.err == nil {
			return ChunkInfo{}, nil, fmt.Errorf("%w: frame flags %#x", ErrInvalid, ff)
		}
		f.Key = ff&frameFlagKey != 0
		f.PTS = int64(r.u64())
		f.DTS = int64(r.u64())
		f.Payload = r.bytes(int(r.u32()))
		frames = append(frames, f)
	}
	if r.err != nil {
		return ChunkInfo{}, nil, r.err
	}
	if r.off != len(b) {
		return ChunkInfo{}, nil, ErrTrailing
	}
	return info, frames, nil
}

// Merge returns the frames of several layers in decode order.
func Merge(layers ...[]Frame) []Frame {
	var n int
	for _, l := range layers {
		n += len(l)
	}
	out := make([]Frame, 0, n)
	for _, l := range layers {
		out = append(out, l...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

// Marshal encodes every layer of a segment into its chunks.
func (s *Segment) Marshal() ([][]byte, error) {
	chunks := make([][]byte, len(s.Layers))
	for l, frames := range s.Layers {
		c, err := MarshalChunk(ChunkInfo{
			Seq: s.Seq, Layer: uint8(l), Start: s.Start, Duration: s.Duration, RandomAccess: s.RandomAccess,
		}, frames)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", l, err)
		}
		chunks[l] = c
	}
	return chunks, nil
}

type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) need(n int) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || len(r.b)-r.off < n {
		r.err = ErrTruncated
		return false
	}
	return true
}

func (r *reader) magic(m [4]byte) error {
	if !r.need(5) {
		return r.err
	}
	if [4]byte(r.b[:4]) != m {
		return ErrBadMagic
	}
	if r.b[4] != Version {
		return fmt.Errorf("%w: %d", ErrBadVersion, r.b[4])
	}
	r.off = 5
	return nil
}

func (r *reader) u8() uint8 {
	if !r.need(1) {
		return 0
	}
	r.off++
	return r.b[r.off-1]
}

func (r *reader) u16() uint16 {
	if !r.need(2) {
		return 0
	}
	r.off += 2
	return binary.BigEndian.Uint16(r.b[r.off-2:])
}

func (r *reader) u32() uint32 {
	if !r.need(4) {
		return 0
	}
	r.off += 4
	return binary.BigEndian.Uint32(r.b[r.off-4:])
}

func (r *reader) u64() uint64 {
	if !r.need(8) {
		return 0
	}
	r.off += 8
	return binary.BigEndian.Uint64(r.b[r.off-8:])
}

func (r *reader) bytes(n int) []byte {
	if !r.need(n) {
		return nil
	}
	r.off += n
	return r.b[r.off-n : r.off : r.off]
}
