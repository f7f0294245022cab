// Package manifest signs and verifies segment manifests: for each segment,
// the SHA-256 of every layer chunk, signed by the stream's Ed25519 key.
// Peers accept a chunk only if its hash matches a manifest that verifies
// against the stream key, so bad data is never stored, forwarded or played.
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

// magic names the manifest format: "CSM2" carries the stream epoch.
const magic = "CSM2"

// MaxLayers bounds the layers of a manifest.
const MaxLayers = 8

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
	// Hashes holds the SHA-256 of each layer chunk.
	Hashes [][32]byte
}

// Layers is the number of layers of the segment.
func (m *Manifest) Layers() int { return len(m.Hashes) }

// Hash returns the hash of a chunk.
func Hash(chunk []byte) [32]byte { return sha256.Sum256(chunk) }

// New describes a segment from its chunks.
func New(stream string, seq uint64, durationMs uint32, flags uint8, chunks [][]byte) *Manifest {
	m := &Manifest{Stream: stream, Seq: seq, DurationMs: durationMs, Flags: flags}
	for _, c := range chunks {
		m.Hashes = append(m.Hashes, Hash(c))
	}
	return m
}

func (m *Manifest) body() []byte {
	b := append([]byte(magic), byte(len(m.Stream)))
	b = append(b, m.Stream...)
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint32(b, m.DurationMs)
	b = append(b, m.Flags, byte(len(m.Hashes)))
	for _, h := range m.Hashes {
		b = append(b, h[:]...)
	}
	return b
}

// Sign encodes m followed by its Ed25519 signature.
func Sign(key ed25519.PrivateKey, m *Manifest) ([]byte, error) {
	if len(m.Stream) > 255 || len(m.Hashes) == 0 || len(m.Hashes) > MaxLayers {
		return nil, fmt.Errorf("%w: stream %q, %d layers", ErrInvalid, m.Stream, len(m.Hashes))
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
	if len(b) < off+n+8+8+4+2 {
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
	off += 14
	if layers == 0 || layers > MaxLayers {
		return nil, nil, fmt.Errorf("%w: %d layers", ErrInvalid, layers)
	}
	if len(b) < off+32*layers+ed25519.SignatureSize {
		return nil, nil, ErrTruncated
	}
	m.Hashes = make([][32]byte, layers)
	for i := range m.Hashes {
		copy(m.Hashes[i][:], b[off:])
		off += 32
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

// Check tells whether chunk is layer layer of the segment m describes.
func (m *Manifest) Check(layer int, chunk []byte) error {
	if layer < 0 || layer >= len(m.Hashes) {
		return fmt.Errorf("%w: layer %d of %d", ErrInvalid, layer, len(m.Hashes))
	}
	if Hash(chunk) != m.Hashes[layer] {
		return fmt.Errorf("%w: segment %d layer %d", ErrMismatch, m.Seq, layer)
	}
	return nil
}
