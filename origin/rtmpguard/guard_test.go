package rtmpguard

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// chunkify encodes one message as format-0 + format-3 chunks.
func chunkify(csid byte, typeID byte, streamID uint32, payload []byte, chunkSize int) []byte {
	var b bytes.Buffer
	h := []byte{csid & 0x3f, 0, 0, 0, byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typeID, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(h[8:], streamID)
	b.Write(h)
	for i := 0; i < len(payload); i += chunkSize {
		if i > 0 {
			b.WriteByte(0xc0 | csid)
		}
		b.Write(payload[i:min(i+chunkSize, len(payload))])
	}
	return b.Bytes()
}

func handshake() []byte {
	b := make([]byte, handshakeSize)
	b[0] = rtmpVersion
	return b
}

func amfString(s string) []byte {
	b := []byte{amf0String, byte(len(s) >> 8), byte(len(s))}
	return append(b, s...)
}

func amfNumber(n float64) []byte {
	return binary.BigEndian.AppendUint64([]byte{amf0Number}, math.Float64bits(n))
}

func connectCommand() []byte {
	var p []byte
	p = append(p, amfString("connect")...)
	p = append(p, amfNumber(1)...)
	p = append(p, amf0Object)
	p = append(p, 0, 3, 'a', 'p', 'p')
	p = append(p, amfString("live")...)
	p = append(p, 0, 0, amf0ObjectEnd)
	return p
}

// hostileStrictArray is the 23-byte-payload attack: a strict array that
// declares 2^31-1 entries.
func hostileStrictArray() []byte {
	p := amfString("connect")
	p = append(p, amfNumber(1)...)
	p = append(p, amf0StrictArray, 0x7f, 0xff, 0xff, 0xff)
	return p
}

func nestedArrays(depth int) []byte {
	p := amfString("connect")
	for i := 0; i < depth; i++ {
		p = append(p, amf0StrictArray, 0, 0, 0, 1)
	}
	return append(p, amf0Null)
}

type guardCase struct {
	name    string
	limits  Limits
	stream  []byte
	wantErr error
}

func guardCases() []guardCase {
	hs := handshake()
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	manyStreams := hs
	for i := 0; i < 40; i++ {
		manyStreams = append(manyStreams, chunkify(byte(3+i%60), typeAudio, 1, []byte{0xaf, 1, 2}, 128)...)
	}
	return []guardCase{
		{"a well-formed connect passes", Limits{}, cat(hs, chunkify(3, typeCommandAMF0, 0, connectCommand(), 128)), nil},
		{"a connect split over chunks passes", Limits{}, cat(hs, chunkify(2, typeSetChunkSize, 0, []byte{0, 0, 0, 8}, 128), chunkify(3, typeCommandAMF0, 0, connectCommand(), 8)), nil},
		{"a strict array of 2^31-1 entries is refused", Limits{}, cat(hs, chunkify(3, typeCommandAMF0, 0, hostileStrictArray(), 128)), ErrAMFLimit},
		{"a data message with the same array is refused", Limits{}, cat(hs, chunkify(4, typeDataAMF0, 1, hostileStrictArray(), 128)), ErrAMFLimit},
		{"a million nested arrays exceed the command size", Limits{}, cat(hs, chunkify(3, typeCommandAMF0, 0, nestedArrays(1_000_000), 128)), ErrMessageSize},
		{"deep nesting within the size limit is refused", Limits{}, cat(hs, chunkify(3, typeCommandAMF0, 0, nestedArrays(1000), 128)), ErrAMFLimit},
		{"a bad handshake version is refused", Limits{}, append([]byte{9}, make([]byte, 3000)...), ErrBadHandshake},
		{"too many chunk streams are refused", Limits{}, manyStreams, ErrChunkStreams},
		{"an oversized media message is refused", Limits{MaxMessageSize: 1000}, cat(hs, []byte{4, 0, 0, 0, 0, 0x10, 0, typeVideo, 1, 0, 0, 0}), ErrMessageSize},
		{"a continuation chunk without a header is refused", Limits{}, cat(hs, []byte{0xc5, 1, 2, 3}), ErrProtocol},
		{"a zero chunk size is refused", Limits{}, cat(hs, chunkify(2, typeSetChunkSize, 0, []byte{0, 0, 0, 0}, 128)), ErrChunkSize},
		{"a huge chunk size is refused", Limits{}, cat(hs, chunkify(2, typeSetChunkSize, 0, []byte{0x7f, 0xff, 0xff, 0xff}, 128)), ErrChunkSize},
		{"AMF3 commands are refused", Limits{}, cat(hs, chunkify(3, typeCommandAMF3, 0, []byte{0, 1, 2}, 128)), ErrUnsupported},
		{"an unsupported AMF0 marker is refused", Limits{}, cat(hs, chunkify(3, typeCommandAMF0, 0, []byte{0x11, 0}, 128)), ErrMalformedAMF},
		{"a truncated string is refused", Limits{}, cat(hs, chunkify(3, typeCommandAMF0, 0, []byte{amf0String, 0, 50, 'a'}, 128)), ErrMalformedAMF},
		{"an empty message is refused", Limits{}, cat(hs, []byte{3, 0, 0, 0, 0, 0, 0, typeCommandAMF0, 0, 0, 0, 0}), ErrProtocol},
	}
}

func TestFramerRejectsHostileInputAndPassesValidInput(t *testing.T) {
	for _, c := range guardCases() {
		t.Run(c.name, func(t *testing.T) {
			f := NewFramer(c.limits)
			n, err := f.Feed(c.stream)
			if c.wantErr == nil {
				require.NoError(t, err)
				require.Equal(t, len(c.stream), n)
				return
			}
			require.ErrorIs(t, err, c.wantErr)
			require.Less(t, n, len(c.stream), "the offending bytes must be held back")
		})
	}
}

func TestFramerReleasesNothingUntilAChunkIsComplete(t *testing.T) {
	stream := append(handshake(), chunkify(3, typeCommandAMF0, 0, connectCommand(), 128)...)
	f := NewFramer(Limits{})
	var pending []byte
	released := 0
	for i, b := range stream {
		pending = append(pending, b)
		n, err := f.Feed(pending)
		require.NoError(t, err)
		pending = pending[n:]
		released += n
		if i >= handshakeSize && i < len(stream)-1 {
			require.Equal(t, handshakeSize, released, "byte %d released early", i)
		}
	}
	require.Equal(t, len(stream), released)
}

func TestFramerFollowsSetChunkSize(t *testing.T) {
	var s []byte
	s = append(s, handshake()...)
	s = append(s, chunkify(2, typeSetChunkSize, 0, []byte{0, 0, 0x10, 0}, 128)...)
	s = append(s, chunkify(3, typeCommandAMF0, 0, connectCommand(), 4096)...)
	big := make([]byte, 10000)
	s = append(s, chunkify(6, typeVideo, 1, big, 4096)...)
	f := NewFramer(Limits{})
	n, err := f.Feed(s)
	require.NoError(t, err)
	require.Equal(t, len(s), n)
	require.Equal(t, uint32(4096), f.ChunkSize())
	require.Equal(t, 1, f.Messages[typeVideo])
}

func FuzzFramer(f *testing.F) {
	// Seeds and inputs are chunk streams; the fixed handshake is prepended.
	for _, c := range guardCases() {
		if len(c.stream) < 1<<12+handshakeSize && len(c.stream) > handshakeSize {
			f.Add(c.stream[handshakeSize:])
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr := NewFramer(Limits{})
		_, err := fr.Feed(handshake())
		require.NoError(t, err)
		n, err := fr.Feed(b)
		require.LessOrEqual(t, n, len(b))
		if err == nil && n < len(b) {
			// The rest must be an incomplete unit: feeding it alone
			// again must not release more.
			m, _ := fr.Feed(b[n:])
			require.Zero(t, m)
		}
	})
}

func FuzzValidateAMF0(f *testing.F) {
	f.Add(connectCommand())
	f.Add(hostileStrictArray())
	f.Add(nestedArrays(50))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = ValidateAMF0(b, 16, 1024)
	})
}
