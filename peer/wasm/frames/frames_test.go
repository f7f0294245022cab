package frames

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/wire"
)

func stream(t *testing.T, ms ...wire.Message) []byte {
	t.Helper()
	var b []byte
	for _, m := range ms {
		b = wire.AppendFrame(b, m)
	}
	return b
}

// TestSplitterReassemblesAcrossPieces: frames cut into 16 KiB pieces (a
// Data frame spans several, small frames share one) come out whole and
// equal, and each decoded payload keeps its bytes after the buffer is reused.
func TestSplitterReassemblesAcrossPieces(t *testing.T) {
	payload := bytes.Repeat([]byte{7, 1, 9}, 30000) // 90 000 bytes: 6 pieces
	msgs := []wire.Message{
		&wire.Ping{Nonce: 1},
		&wire.Data{Seq: 5, Layer: 1, Payload: payload},
		&wire.Pong{Nonce: 2},
		&wire.Data{Seq: 6, Payload: []byte("x")},
	}
	b := stream(t, msgs...)
	pieces := Pieces(b)
	require.Greater(t, len(pieces), 5)
	for _, p := range pieces {
		require.LessOrEqual(t, len(p), PieceSize)
		require.NotEmpty(t, p)
	}
	var s Splitter
	var got []wire.Message
	for _, p := range pieces {
		require.NoError(t, s.Push(append([]byte(nil), p...)))
		for {
			m, ok, err := s.Next()
			require.NoError(t, err)
			if !ok {
				break
			}
			got = append(got, m)
		}
	}
	require.Equal(t, 0, s.Buffered())
	require.Len(t, got, len(msgs))
	for i := range msgs {
		require.Equal(t, wire.Marshal(msgs[i]), wire.Marshal(got[i]), "frame %d", i)
	}
	require.Equal(t, payload, got[1].(*wire.Data).Payload)
}

// TestSplitterRejectsBadLengthsAtOnce: an empty frame, a length past the
// limit and a small type declaring a large frame fail on their first
// bytes, before the body comes; so does an oversized message.
func TestSplitterRejectsBadLengthsAtOnce(t *testing.T) {
	hdr := func(n uint32, typ byte) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), typ)
	}
	cases := map[string]struct {
		msg  []byte
		want error
		max  int
	}{
		"empty frame":         {hdr(0, 0)[:4], wire.ErrEmptyFrame, 0},
		"over 8 MiB":          {hdr(wire.MaxFrameSize+1, byte(wire.TypeData))[:4], wire.ErrFrameTooLarge, 0},
		"ping of 1 MiB":       {hdr(1<<20, byte(wire.TypePing)), wire.ErrFrameTooLarge, 0},
		"first frame limit":   {hdr(64<<10, byte(wire.TypeData)), wire.ErrFrameTooLarge, 8 << 10},
		"message over 64 KiB": {make([]byte, MaxMessage+1), ErrMessageTooLarge, 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s := Splitter{MaxFrame: c.max}
			require.ErrorIs(t, s.Push(c.msg), c.want)
			_, _, err := s.Next()
			require.ErrorIs(t, err, c.want, "the splitter keeps failing")
		})
	}
	// A bad body is an error once it is whole.
	var s Splitter
	require.NoError(t, s.Push(append(hdr(3, byte(wire.TypePing)), 1, 2)))
	_, _, err := s.Next()
	require.ErrorIs(t, err, wire.ErrTruncated)
}

// TestSplitterBoundsWhatItHolds: bytes that never complete a frame stop
// at MaxBuffered.
func TestSplitterBoundsWhatItHolds(t *testing.T) {
	s := Splitter{MaxBuffered: 100 << 10}
	require.NoError(t, s.Push(binary.BigEndian.AppendUint32(nil, 1<<20)))
	require.NoError(t, s.Push([]byte{byte(wire.TypeData)}))
	var err error
	for range 10 {
		if err = s.Push(make([]byte, 16<<10)); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, ErrOverflow)
}

// FuzzSplitter: any byte stream cut anywhere either fails or yields
// frames that re-encode to the bytes they came from.
func FuzzSplitter(f *testing.F) {
	f.Add(stream(&testing.T{}, &wire.Ping{Nonce: 3}, &wire.Data{Seq: 1, Payload: []byte("abc")}), uint16(5))
	f.Add([]byte{0, 0, 0, 0}, uint16(1))
	f.Add([]byte{0, 0, 0, 9, byte(wire.TypeHave), 1}, uint16(3))
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		if len(b) > 1<<20 {
			return
		}
		step := int(cut)%PieceSize + 1
		s := Splitter{MaxBuffered: 2 << 20}
		var out []byte
		for off := 0; off < len(b); off += step {
			if s.Push(b[off:min(off+step, len(b))]) != nil {
				return
			}
			for {
				m, ok, err := s.Next()
				if err != nil {
					return
				}
				if !ok {
					break
				}
				out = wire.AppendFrame(out, m)
			}
		}
		require.True(t, bytes.Equal(b[:len(out)], out), "frames re-encode to their bytes")
	})
}
