// Package manifest signs and verifies segment manifests: for each segment,
// the size of every layer chunk and the SHA-256 of each fixed-size piece of
// it, signed by the stream's Ed25519 key. Peers accept a piece only if its
// hash matches a manifest that verifies against the stream key, so bad data
// is never stored, forwarded or played — and a piece can be verified and
// forwarded the moment it arrives (cut-through), before its chunk is whole.
//
// A hash list, not a Merkle tree: a segment has at most MaxPieces pieces
// (64 × 32 bytes of hashes, ~2 KB, under 1% of a 500 ms segment at
// 1 Mbit/s), every receiver needs the whole list anyway to check every
// piece it holds, and a list needs no per-piece proof on the wire. A Merkle
// root per layer (PPSPP's live "signed munro") pays off when one signature
// covers an unbounded stream; here each segment is signed on its own.
package manifest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Errors returned by Decode and Verify.
var (
	ErrTruncated = errors.New("manifest: truncated")
	ErrTooLarge  = errors.New("manifest: too large")
	ErrInvalid   = errors.New("manifest: invalid field")
	ErrSignature = errors.New("manifest: bad signature")
	ErrMismatch  = errors.New("manifest: chunk hash mismatch")
)

// MaxSize bounds an encoded manifest.
const MaxSize = 4096

// magic names the manifest format: "CSM3" lists piece hashes per layer
// ("CSM2" had one hash per layer chunk and the epoch).
const magic = "CSM3"

// MaxLayers bounds the layers of a manifest.
const MaxLayers = 8

// DefaultPieceSize is the transfer unit a segment's chunks are cut into
// (the last piece of a chunk is shorter): a hop forwards a piece as soon
// as it has it, so it costs one piece, not one chunk.
const DefaultPieceSize = 16 << 10

// MaxPieces bounds the pieces of one segment, all layers together: a
// larger segment gets larger pieces (PieceSizeFor).
const MaxPieces = 64

// Chunk describes one layer chunk of a segment.
type Chunk struct {
	// Size is the chunk's length in bytes.
	Size uint32
	// Pieces holds the SHA-256 of each piece: max(1, ⌈Size/PieceSize⌉)
	// of them (an empty chunk is one empty piece).
	Pieces [][32]byte
}

// Manifest describes one segment.
type Manifest struct {
	Stream string
	// Epoch names the stream instance (docs/peerproto.md): a stream that
	// restarts numbers its segments from zero again under a new epoch, so
	// a manifest of an earlier instance never verifies a later segment.
	Epoch uint64
	Seq   uint64
	// DurationMs is the segment's duration in milliseconds.
	DurationMs uint32
	// Flags are opaque segment flags (bit 0: starts with a key frame).
	Flags uint8
	// PieceSize is the size of every piece but the last of each chunk.
	PieceSize uint32
	// Chunks describes each layer chunk.
	Chunks []Chunk
}

// Layers is the number of layers of the segment.
func (m *Manifest) Layers() int { return len(m.Chunks) }

// Hash returns the hash of a piece.
func Hash(piece []byte) [32]byte { return sha256.Sum256(piece) }

// pieceCount is the number of pieces of a chunk of size bytes.
func pieceCount(size, pieceSize uint32) int {
	if size == 0 {
		return 1
	}
	return int((uint64(size) + uint64(pieceSize) - 1) / uint64(pieceSize))
}

// PieceSizeFor is the piece size for a segment of these chunk sizes:
// want (DefaultPieceSize when 0), grown until the segment has at most
// MaxPieces pieces.
func PieceSizeFor(want int, sizes []int) uint32 {
	ps := uint32(DefaultPieceSize)
	if want > 0 {
		ps = uint32(want)
	}
	for {
		n := 0
		for _, s := range sizes {
			n += pieceCount(uint32(s), ps)
		}
		if n <= MaxPieces {
			return ps
		}
		ps *= 2
	}
}

// New describes a segment from its chunks with the default piece size.
func New(stream string, seq uint64, durationMs uint32, flags uint8, chunks [][]byte) *Manifest {
	return NewPieces(stream, seq, durationMs, flags, 0, chunks)
}

// NewPieces describes a segment from its chunks cut into pieces of about
// pieceSize bytes (0: DefaultPieceSize; see PieceSizeFor).
func NewPieces(stream string, seq uint64, durationMs uint32, flags uint8, pieceSize int, chunks [][]byte) *Manifest {
	sizes := make([]int, len(chunks))
	for i, c := range chunks {
		sizes[i] = len(c)
	}
	m := &Manifest{Stream: stream, Seq: seq, DurationMs: durationMs, Flags: flags, PieceSize: PieceSizeFor(pieceSize, sizes)}
	for _, c := range chunks {
		ch := Chunk{Size: uint32(len(c))}
		for i := range pieceCount(ch.Size, m.PieceSize) {
			ch.Pieces = append(ch.Pieces, Hash(m.cut(c, i)))
		}
		m.Chunks = append(m.Chunks, ch)
	}
	return m
}

// cut returns piece i of chunk.
func (m *Manifest) cut(chunk []byte, i int) []byte {
	from := min(len(chunk), i*int(m.PieceSize))
	return chunk[from:min(len(chunk), from+int(m.PieceSize))]
}

// Pieces is the number of pieces of a layer's chunk (0 for no such layer).
func (m *Manifest) Pieces(layer int) int {
	if layer < 0 || layer >= len(m.Chunks) {
		return 0
	}
	return len(m.Chunks[layer].Pieces)
}

// Piece returns piece i of a layer's chunk.
func (m *Manifest) Piece(chunk []byte, i int) []byte { return m.cut(chunk, i) }

// PieceLen is the length of piece i of a layer's chunk.
func (m *Manifest) PieceLen(layer, i int) int {
	size := int(m.Chunks[layer].Size)
	from := min(size, i*int(m.PieceSize))
	return min(size, from+int(m.PieceSize)) - from
}

func (m *Manifest) body() []byte {
	b := append([]byte(magic), byte(len(m.Stream)))
	b = append(b, m.Stream...)
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint32(b, m.DurationMs)
	b = append(b, m.Flags, byte(len(m.Chunks)))
	b = binary.BigEndian.AppendUint32(b, m.PieceSize)
	for _, c := range m.Chunks {
		b = binary.BigEndian.AppendUint32(b, c.Size)
	}
	for _, c := range m.Chunks {
		for _, h := range c.Pieces {
			b = append(b, h[:]...)
		}
	}
	return b
}

// Sign encodes m followed by its Ed25519 signature.
func Sign(key ed25519.PrivateKey, m *Manifest) ([]byte, error) {
	if len(m.Stream) > 255 || len(m.Chunks) == 0 || len(m.Chunks) > MaxLayers || m.PieceSize == 0 {
		return nil, fmt.Errorf("%w: stream %q, %d layers, piece size %d", ErrInvalid, m.Stream, len(m.Chunks), m.PieceSize)
	}
	n := 0
	for _, c := range m.Chunks {
		if len(c.Pieces) != pieceCount(c.Size, m.PieceSize) {
			return nil, fmt.Errorf("%w: %d pieces for %d bytes", ErrInvalid, len(c.Pieces), c.Size)
		}
		n += len(c.Pieces)
	}
	if n > MaxPieces {
		return nil, fmt.Errorf("%w: %d pieces (at most %d)", ErrInvalid, n, MaxPieces)
	}
	b := m.body()
	return append(b, ed25519.Sign(key, b)...), nil
}

// Decode parses a signed manifest without verifying the signature.
func Decode(b []byte) (*Manifest, []byte, error) {
	if len(b) > MaxSize {
		return nil, nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	if len(b) < len(magic)+1 || string(b[:4]) != magic {
		return nil, nil, fmt.Errorf("%w: bad magic", ErrInvalid)
	}
	off := 4
	n := int(b[off])
	off++
	if len(b) < off+n+8+8+4+2+4 {
		return nil, nil, ErrTruncated
	}
	m := &Manifest{Stream: string(b[off : off+n])}
	off += n
	m.Epoch = binary.BigEndian.Uint64(b[off:])
	off += 8
	m.Seq = binary.BigEndian.Uint64(b[off:])
	m.DurationMs = binary.BigEndian.Uint32(b[off+8:])
	m.Flags = b[off+12]
	layers := int(b[off+13])
	m.PieceSize = binary.BigEndian.Uint32(b[off+14:])
	off += 18
	if layers == 0 || layers > MaxLayers {
		return nil, nil, fmt.Errorf("%w: %d layers", ErrInvalid, layers)
	}
	if m.PieceSize == 0 {
		return nil, nil, fmt.Errorf("%w: piece size 0", ErrInvalid)
	}
	if len(b) < off+4*layers {
		return nil, nil, ErrTruncated
	}
	m.Chunks = make([]Chunk, layers)
	total := 0
	for i := range m.Chunks {
		m.Chunks[i].Size = binary.BigEndian.Uint32(b[off:])
		off += 4
		total += pieceCount(m.Chunks[i].Size, m.PieceSize)
		if total > MaxPieces {
			return nil, nil, fmt.Errorf("%w: more than %d pieces", ErrInvalid, MaxPieces)
		}
	}
	if len(b) < off+32*total+ed25519.SignatureSize {
		return nil, nil, ErrTruncated
	}
	for i := range m.Chunks {
		c := &m.Chunks[i]
		c.Pieces = make([][32]byte, pieceCount(c.Size, m.PieceSize))
		for j := range c.Pieces {
			copy(c.Pieces[j][:], b[off:])
			off += 32
		}
	}
	if len(b) != off+ed25519.SignatureSize {
		return nil, nil, fmt.Errorf("%w: %d trailing bytes", ErrInvalid, len(b)-off-ed25519.SignatureSize)
	}
	return m, b[off:], nil
}

// Verify decodes b and checks its signature against the stream key.
func Verify(key ed25519.PublicKey, b []byte) (*Manifest, error) {
	m, sig, err := Decode(b)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(key, b[:len(b)-len(sig)], sig) {
		return nil, ErrSignature
	}
	return m, nil
}

// Check tells whether chunk is layer layer of the segment m describes
// (its size and every piece).
func (m *Manifest) Check(layer int, chunk []byte) error {
	if layer < 0 || layer >= len(m.Chunks) {
		return fmt.Errorf("%w: layer %d of %d", ErrInvalid, layer, len(m.Chunks))
	}
	if len(chunk) != int(m.Chunks[layer].Size) {
		return fmt.Errorf("%w: segment %d layer %d: %d bytes, manifest says %d", ErrMismatch, m.Seq, layer, len(chunk), m.Chunks[layer].Size)
	}
	for i := range m.Chunks[layer].Pieces {
		if err := m.CheckPiece(layer, i, m.cut(chunk, i)); err != nil {
			return err
		}
	}
	return nil
}

// CheckPiece tells whether data is piece i of layer layer of the segment.
func (m *Manifest) CheckPiece(layer, i int, data []byte) error {
	if layer < 0 || layer >= len(m.Chunks) || i < 0 || i >= len(m.Chunks[layer].Pieces) {
		return fmt.Errorf("%w: layer %d piece %d of segment %d", ErrInvalid, layer, i, m.Seq)
	}
	if len(data) != m.PieceLen(layer, i) {
		return fmt.Errorf("%w: segment %d layer %d piece %d: %d bytes, want %d", ErrMismatch, m.Seq, layer, i, len(data), m.PieceLen(layer, i))
	}
	if Hash(data) != m.Chunks[layer].Pieces[i] {
		return fmt.Errorf("%w: segment %d layer %d piece %d", ErrMismatch, m.Seq, layer, i)
	}
	return nil
}
