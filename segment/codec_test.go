package segment

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func sampleSegment() Segment {
	return Segment{
		Seq: 42, Start: 90000, Duration: 90000, RandomAccess: true,
		Layers: [][]Frame{
			{
				{Index: 0, Track: 0, Key: true, PTS: 93000, DTS: 90000, Payload: []byte{0, 0, 0, 2, 0x65, 1}},
				{Index: 1, Track: 1, PTS: 90100, DTS: 90100, Payload: []byte{0x21, 0x10}},
				{Index: 3, Track: 0, PTS: 99000, DTS: 93000, Payload: []byte{0, 0, 0, 1, 0x41}},
			},
			{{Index: 2, Track: 0, PTS: 96000, DTS: 91500, Payload: []byte{0, 0, 0, 1, 0x01}}},
		},
	}
}

func TestChunkRoundTripKeepsEveryField(t *testing.T) {
	s := sampleSegment()
	chunks, err := s.Marshal()
	require.NoError(t, err)
	require.Len(t, chunks, 2)
	var layers [][]Frame
	for l, c := range chunks {
		info, frames, err := UnmarshalChunk(c)
		require.NoError(t, err)
		require.Equal(t, ChunkInfo{Seq: 42, Layer: uint8(l), Start: 90000, Duration: 90000, RandomAccess: true}, info)
		require.Equal(t, s.Layers[l], frames)
		layers = append(layers, frames)
	}
	merged := Merge(layers...)
	for i, f := range merged {
		require.Equal(t, uint32(i), f.Index)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Tracks: []Track{
		{ID: 0, Codec: CodecH264, Params: [][]byte{{0x67, 1, 2}, {0x68, 3}}},
		{ID: 1, Codec: CodecAAC, Params: [][]byte{{0x12, 0x10}}},
	}}
	b, err := MarshalHeader(h)
	require.NoError(t, err)
	got, err := UnmarshalHeader(b)
	require.NoError(t, err)
	require.Equal(t, h, got)
}

// badInputs is shared by the unit tests and the fuzz seed corpus.
func badInputs(t testing.TB) []struct {
	name  string
	data  []byte
	want  error
	isHdr bool
} {
	s := sampleSegment()
	chunks, err := s.Marshal()
	require.NoError(t, err)
	good := chunks[0]
	hdr, err := MarshalHeader(Header{Tracks: []Track{{ID: 0, Codec: CodecH264, Params: [][]byte{{1}}}}})
	require.NoError(t, err)
	hugeCount := append([]byte{}, good[:39]...)
	copy(hugeCount[35:39], []byte{0xff, 0xff, 0xff, 0xff})
	return []struct {
		name  string
		data  []byte
		want  error
		isHdr bool
	}{
		{"empty chunk", nil, ErrTruncated, false},
		{"truncated chunk", good[:len(good)-1], ErrTruncated, false},
		{"trailing byte", append(append([]byte{}, good...), 0), ErrTrailing, false},
		{"bad magic", append([]byte("XXXX"), good[4:]...), ErrBadMagic, false},
		{"bad version", append(append([]byte{}, good[:4]...), append([]byte{9}, good[5:]...)...), ErrBadVersion, false},
		{"frame count beyond the bytes present", hugeCount, ErrTooLarge, false},
		{"truncated header", hdr[:len(hdr)-1], ErrTruncated, true},
		{"header trailing", append(append([]byte{}, hdr...), 1), ErrTrailing, true},
		{"header unknown codec", []byte{'C', 'S', 'H', 'D', 1, 1, 0, 9, 0}, ErrUnknownType, true},
		{"header zero tracks", []byte{'C', 'S', 'H', 'D', 1, 0}, ErrInvalid, true},
	}
}

func TestDecodersRejectBadInputWithTypedErrors(t *testing.T) {
	for _, c := range badInputs(t) {
		t.Run(c.name, func(t *testing.T) {
			var err error
			if c.isHdr {
				_, err = UnmarshalHeader(c.data)
			} else {
				_, _, err = UnmarshalChunk(c.data)
			}
			require.Error(t, err)
			require.True(t, errors.Is(err, c.want), "got %v, want %v", err, c.want)
		})
	}
}

func TestOversizedInputIsRejectedBeforeParsing(t *testing.T) {
	_, _, err := UnmarshalChunk(make([]byte, MaxChunkSize+1))
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = UnmarshalHeader(make([]byte, MaxHeaderSize+1))
	require.ErrorIs(t, err, ErrTooLarge)
}

func FuzzUnmarshalChunk(f *testing.F) {
	s := sampleSegment()
	chunks, _ := s.Marshal()
	for _, c := range chunks {
		f.Add(c)
	}
	for _, c := range badInputs(f) {
		if !c.isHdr {
			f.Add(c.data)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		info, frames, err := UnmarshalChunk(b)
		if err != nil {
			return
		}
		// A chunk that decodes must re-encode to the same bytes.
		again, err := MarshalChunk(info, frames)
		require.NoError(t, err)
		require.Equal(t, b, again)
	})
}

func FuzzUnmarshalHeader(f *testing.F) {
	for _, c := range badInputs(f) {
		if c.isHdr {
			f.Add(c.data)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := UnmarshalHeader(b)
		if err != nil {
			return
		}
		again, err := MarshalHeader(h)
		require.NoError(t, err)
		require.Equal(t, b, again)
	})
}
