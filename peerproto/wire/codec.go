package wire

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Marshal returns the frame of m (length prefix included).
func Marshal(m Message) []byte {
	return AppendFrame(make([]byte, 0, FrameSize(m)), m)
}

// AppendFrame appends the frame of m to b.
func AppendFrame(b []byte, m Message) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, byte(m.Type()))
	b = m.appendBody(b)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// FrameSize returns the encoded size of m's frame without encoding data
// payloads (cheap for Data messages).
func FrameSize(m Message) int {
	if d, ok := m.(*Data); ok {
		return 4 + 1 + 8 + 1 + 2 + 4 + len(d.Manifest) + 4 + len(d.Payload)
	}
	return 4 + 1 + len(m.appendBody(nil))
}

// Unmarshal decodes one frame body (type byte + body, no length prefix).
// Byte fields of the message alias frame.
func Unmarshal(frame []byte) (Message, error) {
	if len(frame) == 0 {
		return nil, ErrEmptyFrame
	}
	if len(frame) > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(frame))
	}
	m, err := New(Type(frame[0]))
	if err != nil {
		return nil, err
	}
	r := reader{b: frame, off: 1}
	m.decodeBody(&r)
	if r.err != nil {
		return nil, fmt.Errorf("%v: %w", m.Type(), r.err)
	}
	if r.off != len(frame) {
		return nil, fmt.Errorf("%v: %w (%d)", m.Type(), ErrTrailing, len(frame)-r.off)
	}
	return m, nil
}

// Reader reads frames from a stream.
type Reader struct {
	r   io.Reader
	hdr [4]byte
	buf []byte
	// MaxFrame overrides MaxFrameSize when positive and smaller.
	MaxFrame int
}

// NewReader returns a frame reader over r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// readStep is the most a Reader reads (and allocates) ahead of the bytes
// that arrived: a peer that declares a large frame and trickles it costs
// what it sent, not what it declared.
const readStep = 64 << 10

// MaxFrameFor is the largest frame (type byte + body) a message of type t
// can need: only Data carries up to MaxFrameSize; a Hello or a Request
// declaring more is refused before its body is read.
func MaxFrameFor(t Type) int {
	switch t {
	case TypeData:
		return MaxFrameSize
	case TypeStreamHeader:
		return 1 + 4 + 64<<10
	case TypeCandidates:
		return 1 + 1 + MaxCandidates*(8+2+MaxStringLen+8+4)
	case TypeHave:
		return 1 + 1 + 4 + 2 + MaxHaves*9
	case TypeBufferMap:
		return 1 + 8 + 2 + 1 + MaxLayers*MaxWindow/8
	}
	return 8 << 10 // every other message: a few strings of at most 1 KiB
}

// Read reads and decodes the next message, returning it with its frame
// size. The message does not alias the reader's buffer. The frame's
// buffer grows with the bytes that arrive (readStep at a time), so a
// declared length costs nothing until its bytes come.
func (fr *Reader) Read() (Message, int, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return nil, 0, err
	}
	n := int(binary.BigEndian.Uint32(fr.hdr[:]))
	limit := MaxFrameSize
	if fr.MaxFrame > 0 && fr.MaxFrame < limit {
		limit = fr.MaxFrame
	}
	if n == 0 {
		return nil, 4, ErrEmptyFrame
	}
	if n > limit {
		return nil, 4, fmt.Errorf("%w: %d bytes declared (limit %d)", ErrFrameTooLarge, n, limit)
	}
	var typ [1]byte
	if _, err := io.ReadFull(fr.r, typ[:]); err != nil {
		return nil, 4, fmt.Errorf("%w: %w", ErrTruncated, unexpected(err))
	}
	t := Type(typ[0])
	if t == 0 || t >= typeMax {
		return nil, 5, fmt.Errorf("%w: %d", ErrUnknownType, t)
	}
	if lim := MaxFrameFor(t); n > lim {
		return nil, 5, fmt.Errorf("%w: %v of %d bytes declared (limit %d)", ErrFrameTooLarge, t, n, lim)
	}
	buf := make([]byte, 1, min(n, readStep))
	buf[0] = typ[0]
	for len(buf) < n {
		step := min(n-len(buf), readStep)
		if cap(buf)-len(buf) < step {
			grown := make([]byte, len(buf), min(n, max(2*cap(buf), len(buf)+step)))
			copy(grown, buf)
			buf = grown
		}
		got, err := io.ReadFull(fr.r, buf[len(buf):len(buf)+step])
		buf = buf[:len(buf)+got]
		if err != nil {
			return nil, 4 + len(buf), fmt.Errorf("%w: %w", ErrTruncated, unexpected(err))
		}
	}
	m, err := Unmarshal(buf)
	return m, 4 + n, err
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// --- bodies ---

func (m *Hello) appendBody(b []byte) []byte {
	b = appendString(b, m.Protocol)
	b = append(b, m.Version)
	b = binary.BigEndian.AppendUint32(b, m.Features)
	b = append(b, byte(m.Role))
	b = appendString(b, m.Stream)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Peer))
	b = appendString(b, m.ListenAddr)
	b = appendString(b, m.Token)
	return binary.BigEndian.AppendUint64(b, m.UploadCap)
}

func (m *Hello) decodeBody(r *reader) {
	m.Protocol = r.str()
	m.Version = r.u8()
	m.Features = r.u32()
	m.Role = Role(r.u8())
	m.Stream = r.str()
	m.Peer = PeerID(r.u64())
	m.ListenAddr = r.str()
	m.Token = r.str()
	m.UploadCap = r.u64()
	if r.err == nil && m.Role != RolePeer && m.Role != RoleServer {
		r.fail(fmt.Errorf("%w: role %d", ErrInvalid, m.Role))
	}
}

func (m *Welcome) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(m.Peer))
	b = binary.BigEndian.AppendUint32(b, m.SegmentDurationMs)
	b = binary.BigEndian.AppendUint64(b, m.LiveEdge)
	b = binary.BigEndian.AppendUint16(b, m.Partners)
	b = append(b, uint8(len(m.StreamKey)))
	b = append(b, m.StreamKey...)
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	return append(b, m.Layers)
}

func (m *Welcome) decodeBody(r *reader) {
	m.Peer = PeerID(r.u64())
	m.SegmentDurationMs = r.u32()
	m.LiveEdge = r.u64()
	m.Partners = r.u16()
	n := int(r.u8())
	if r.err == nil && n != 0 && n != StreamKeySize {
		r.fail(fmt.Errorf("%w: stream key of %d bytes", ErrInvalid, n))
		return
	}
	if n > 0 {
		m.StreamKey = r.bytes(n)
	}
	m.Epoch = r.u64()
	m.Layers = r.u8()
	if r.err == nil && m.Layers > MaxLayers {
		r.fail(fmt.Errorf("%w: %d layers", ErrInvalid, m.Layers))
	}
}

func bitmapLen(window int) int { return (window + 7) / 8 }

func (m *BufferMap) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Base)
	b = binary.BigEndian.AppendUint16(b, m.Window)
	b = append(b, byte(len(m.Bits)))
	for _, bits := range m.Bits {
		b = append(b, bits...)
	}
	return b
}

func (m *BufferMap) decodeBody(r *reader) {
	m.Base = r.u64()
	m.Window = r.u16()
	layers := int(r.u8())
	if r.err != nil {
		return
	}
	if m.Window > MaxWindow || layers > MaxLayers {
		r.fail(fmt.Errorf("%w: buffer map window %d layers %d", ErrInvalid, m.Window, layers))
		return
	}
	n := bitmapLen(int(m.Window))
	m.Bits = make([][]byte, 0, layers)
	for l := 0; l < layers && r.err == nil; l++ {
		m.Bits = append(m.Bits, r.bytes(n))
	}
	// Bits past Window must be zero so every map has one encoding.
	if r.err == nil && m.Window%8 != 0 {
		mask := byte(0xff >> (m.Window % 8))
		for _, bits := range m.Bits {
			if bits[n-1]&mask != 0 {
				r.fail(fmt.Errorf("%w: bits past the window", ErrInvalid))
				return
			}
		}
	}
}

func (m *Have) appendBody(b []byte) []byte {
	b = append(b, m.Flags)
	b = binary.BigEndian.AppendUint32(b, m.AgeMs)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Entries)))
	for _, e := range m.Entries {
		b = binary.BigEndian.AppendUint64(b, e.Seq)
		b = append(b, e.Layer)
	}
	return b
}

func (m *Have) decodeBody(r *reader) {
	m.Flags = r.u8()
	m.AgeMs = r.u32()
	n := int(r.u16())
	if r.err != nil {
		return
	}
	if n > MaxHaves || n*9 > r.left() {
		r.fail(fmt.Errorf("%w: %d have entries", ErrInvalid, n))
		return
	}
	m.Entries = make([]HaveEntry, n)
	for i := range m.Entries {
		m.Entries[i] = HaveEntry{Seq: r.u64(), Layer: r.layer()}
	}
}

func (m *Request) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = append(b, m.Layer, m.Flags)
	return binary.BigEndian.AppendUint64(b, m.Held)
}

func (m *Request) decodeBody(r *reader) {
	m.Seq, m.Layer, m.Flags, m.Held = r.u64(), r.layer(), r.u8(), r.u64()
}

func (m *Cancel) appendBody(b []byte) []byte {
	return append(binary.BigEndian.AppendUint64(b, m.Seq), m.Layer)
}

func (m *Cancel) decodeBody(r *reader) { m.Seq, m.Layer = r.u64(), r.layer() }

func (m *Data) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = append(b, m.Layer)
	b = binary.BigEndian.AppendUint16(b, m.Piece)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Manifest)))
	b = append(b, m.Manifest...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Payload)))
	return append(b, m.Payload...)
}

func (m *Data) decodeBody(r *reader) {
	m.Seq, m.Layer, m.Piece = r.u64(), r.layer(), r.u16()
	if r.err == nil && m.Piece >= MaxPieces {
		r.fail(fmt.Errorf("%w: piece %d", ErrInvalid, m.Piece))
		return
	}
	n := int(r.u32())
	if r.err == nil && n > MaxManifestLen {
		r.fail(fmt.Errorf("%w: manifest of %d bytes", ErrInvalid, n))
		return
	}
	m.Manifest = r.bytes(n)
	m.Payload = r.bytes(int(r.u32()))
}

func (m *Reject) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = append(b, m.Layer, m.Reason)
	if m.Reason == RejectRedirect {
		b = appendString(b, m.Addr)
	}
	return b
}

func (m *Reject) decodeBody(r *reader) {
	m.Seq, m.Layer, m.Reason = r.u64(), r.layer(), r.u8()
	if r.err == nil && m.Reason == RejectRedirect {
		m.Addr = r.str()
	}
}

func (m *GetCandidates) appendBody(b []byte) []byte { return append(b, m.Max) }
func (m *GetCandidates) decodeBody(r *reader)       { m.Max = r.u8() }

func (m *Candidates) appendBody(b []byte) []byte {
	b = append(b, byte(len(m.List)))
	for _, c := range m.List {
		b = binary.BigEndian.AppendUint64(b, uint64(c.Peer))
		b = appendString(b, c.Addr)
		b = binary.BigEndian.AppendUint64(b, c.UploadRate)
		b = binary.BigEndian.AppendUint32(b, c.RTTMicros)
	}
	return b
}

func (m *Candidates) decodeBody(r *reader) {
	n := int(r.u8())
	if r.err == nil && n > MaxCandidates {
		r.fail(fmt.Errorf("%w: %d candidates", ErrInvalid, n))
		return
	}
	for i := 0; i < n && r.err == nil; i++ {
		m.List = append(m.List, Candidate{Peer: PeerID(r.u64()), Addr: r.str(), UploadRate: r.u64(), RTTMicros: r.u32()})
	}
}

func (m *Ping) appendBody(b []byte) []byte { return binary.BigEndian.AppendUint64(b, m.Nonce) }
func (m *Ping) decodeBody(r *reader)       { m.Nonce = r.u64() }
func (m *Pong) appendBody(b []byte) []byte { return binary.BigEndian.AppendUint64(b, m.Nonce) }
func (m *Pong) decodeBody(r *reader)       { m.Nonce = r.u64() }

func (m *Goodbye) appendBody(b []byte) []byte { return appendString(b, m.Reason) }
func (m *Goodbye) decodeBody(r *reader)       { m.Reason = r.str() }

func (m *StreamHeader) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Header)))
	return append(b, m.Header...)
}

func (m *StreamHeader) decodeBody(r *reader) {
	n := int(r.u32())
	if r.err == nil && n > 64<<10 {
		r.fail(fmt.Errorf("%w: header of %d bytes", ErrInvalid, n))
		return
	}
	m.Header = r.bytes(n)
}

func (m *Report) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, m.UploadRate)
	b = binary.BigEndian.AppendUint64(b, m.DownloadRate)
	b = binary.BigEndian.AppendUint16(b, m.Partners)
	b = binary.BigEndian.AppendUint16(b, m.ContinuityPermille)
	b = append(b, m.MaxLayer)
	b = binary.BigEndian.AppendUint64(b, m.FromServer)
	return binary.BigEndian.AppendUint64(b, m.FromPeers)
}

func (m *Report) decodeBody(r *reader) {
	m.UploadRate, m.DownloadRate = r.u64(), r.u64()
	m.Partners, m.ContinuityPermille, m.MaxLayer = r.u16(), r.u16(), r.u8()
	m.FromServer, m.FromPeers = r.u64(), r.u64()
}

// --- primitives ---

func appendString(b []byte, s string) []byte {
	if len(s) > MaxStringLen {
		s = s[:MaxStringLen]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) left() int { return len(r.b) - r.off }

func (r *reader) need(n int) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || r.left() < n {
		r.err = ErrTruncated
		return false
	}
	return true
}

func (r *reader) u8() uint8 {
	if !r.need(1) {
		return 0
	}
	r.off++
	return r.b[r.off-1]
}

func (r *reader) layer() uint8 {
	l := r.u8()
	if r.err == nil && l >= MaxLayers {
		r.fail(fmt.Errorf("%w: layer %d", ErrInvalid, l))
	}
	return l
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

func (r *reader) str() string {
	n := int(r.u16())
	if r.err == nil && n > MaxStringLen {
		r.fail(fmt.Errorf("%w: string of %d bytes", ErrInvalid, n))
		return ""
	}
	return string(r.bytes(n))
}

func (m *Accuse) appendBody(b []byte) []byte {
	return appendString(binary.BigEndian.AppendUint64(b, uint64(m.Peer)), m.Reason)
}

func (m *Accuse) decodeBody(r *reader) { m.Peer, m.Reason = PeerID(r.u64()), r.str() }

func (m *Subscribe) appendBody(b []byte) []byte {
	return append(b, m.Substream, m.Substreams, m.Layers)
}

func (m *Subscribe) decodeBody(r *reader) {
	m.Substream, m.Substreams, m.Layers = r.u8(), r.u8(), r.u8()
	if r.err == nil && (m.Substreams == 0 || m.Substreams > MaxSubstreams || m.Substream >= m.Substreams || m.Layers > MaxLayers) {
		r.fail(fmt.Errorf("%w: sub-stream %d of %d, %d layers", ErrInvalid, m.Substream, m.Substreams, m.Layers))
	}
}

func (m *Subscribed) appendBody(b []byte) []byte { return append(b, m.Substream, m.Layers) }

func (m *Subscribed) decodeBody(r *reader) {
	m.Substream, m.Layers = r.u8(), r.u8()
	if r.err == nil && (m.Substream >= MaxSubstreams || m.Layers > MaxLayers) {
		r.fail(fmt.Errorf("%w: sub-stream %d, %d layers", ErrInvalid, m.Substream, m.Layers))
	}
}

func (m *Hops) appendBody(b []byte) []byte {
	b = append(b, uint8(len(m.Hops)))
	return append(b, m.Hops...)
}

func (m *Hops) decodeBody(r *reader) {
	n := int(r.u8())
	if r.err == nil && n > MaxSubstreams {
		r.fail(fmt.Errorf("%w: %d sub-streams", ErrInvalid, n))
		return
	}
	m.Hops = append([]uint8(nil), r.bytes(n)...)
}
