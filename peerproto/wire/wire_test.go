package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// samples is one message of every type; shared by the tests and the fuzz
// seed corpus.
func samples() []Message {
	return []Message{
		&Hello{Protocol: ProtocolID, Version: Version, Features: FeatureManifest | FeatureLayers, Role: RolePeer,
			Stream: "live/demo", Peer: 42, ListenAddr: "127.0.0.1:7071", Token: "tok", UploadCap: 250000},
		&Welcome{Peer: 1, SegmentDurationMs: 1000, LiveEdge: 99, Partners: 5},
		&Welcome{Peer: 1, SegmentDurationMs: 500, StreamKey: bytes.Repeat([]byte{7}, StreamKeySize),
			Epoch: 0x1122334455667788, Layers: 1},
		&BufferMap{Base: 90, Window: 12, Bits: [][]byte{{0xff, 0xf0}, {0x80, 0x10}}},
		&Have{Flags: HaveSeed, AgeMs: 20, Entries: []HaveEntry{{Seq: 100, Layer: 0}, {Seq: 100, Layer: 2}}},
		&Request{Seq: 100, Layer: 1, Flags: RequestManifest, Held: 0b101},
		&Cancel{Seq: 100, Layer: 1},
		&Data{Seq: 100, Layer: 1, Piece: 5, Manifest: []byte{1, 2, 3}, Payload: []byte("chunk")},
		&Reject{Seq: 100, Layer: 1, Reason: RejectBusy},
		&Reject{Reason: RejectRedirect, Addr: "10.0.0.2:7070"},
		&GetCandidates{Max: 8},
		&Candidates{List: []Candidate{{Peer: 7, Addr: "127.0.0.2:7000", UploadRate: 1e6, RTTMicros: 1500}}},
		&Ping{Nonce: 9}, &Pong{Nonce: 9},
		&Goodbye{Reason: "leaving"},
		&StreamHeader{Header: []byte("CSHD")},
		&Report{UploadRate: 1, DownloadRate: 2, Partners: 3, ContinuityPermille: 999, MaxLayer: 2, FromServer: 10, FromPeers: 90},
		&Accuse{Peer: 5, Reason: "hash mismatch"},
		&Subscribe{Substream: 2, Substreams: 4, Layers: 3}, &Subscribe{Substream: 0, Substreams: 1, Layers: 0},
		&Subscribed{Substream: 3, Layers: 1},
		&Hops{Hops: []uint8{0, 3, NoHops, 1}},
	}
}

func TestEveryMessageRoundTrips(t *testing.T) {
	for _, m := range samples() {
		t.Run(m.Type().String(), func(t *testing.T) {
			frame := Marshal(m)
			require.Equal(t, FrameSize(m), len(frame))
			got, n, err := NewReader(bytes.NewReader(frame)).Read()
			require.NoError(t, err)
			require.Equal(t, len(frame), n)
			require.Equal(t, m, got)
		})
	}
}

func badFrames() map[string]struct {
	frame []byte // without length prefix
	want  error
} {
	req := Marshal(&Request{Seq: 1, Layer: 0})[4:]
	return map[string]struct {
		frame []byte
		want  error
	}{
		"empty":                        {nil, ErrEmptyFrame},
		"unknown type":                 {[]byte{200}, ErrUnknownType},
		"truncated request":            {req[:len(req)-1], ErrTruncated},
		"trailing byte":                {append(append([]byte{}, req...), 0), ErrTrailing},
		"layer out of range":           {[]byte{byte(TypeRequest), 0, 0, 0, 0, 0, 0, 0, 1, 9, 0}, ErrInvalid},
		"huge have count":              {[]byte{byte(TypeHave), 0, 0, 0, 0, 0, 0xff, 0xff}, ErrInvalid},
		"window too large":             {[]byte{byte(TypeBufferMap), 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1}, ErrInvalid},
		"bits past the window":         {[]byte{byte(TypeBufferMap), 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0x01}, ErrInvalid},
		"bad role":                     {append([]byte{byte(TypeHello)}, Marshal(&Hello{Role: 9})[5:]...), ErrInvalid},
		"redirect without its address": {[]byte{byte(TypeReject), 0, 0, 0, 0, 0, 0, 0, 0, 0, RejectRedirect}, ErrTruncated},
		"manifest too large":           {[]byte{byte(TypeData), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}, ErrInvalid},
		"piece past the maximum":       {[]byte{byte(TypeData), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, MaxPieces, 0, 0, 0, 0, 0, 0, 0, 0}, ErrInvalid},
		"sub-stream past the count":    {[]byte{byte(TypeSubscribe), 4, 4, 1}, ErrInvalid},
		"no sub-streams":               {[]byte{byte(TypeSubscribe), 0, 0, 1}, ErrInvalid},
		"too many sub-streams":         {[]byte{byte(TypeSubscribe), 0, MaxSubstreams + 1, 1}, ErrInvalid},
		"subscribed too many layers":   {[]byte{byte(TypeSubscribed), 0, MaxLayers + 1}, ErrInvalid},
		"hops past the maximum":        {append([]byte{byte(TypeHops), MaxSubstreams + 1}, make([]byte, MaxSubstreams+1)...), ErrInvalid},
		"truncated hops":               {[]byte{byte(TypeHops), 4, 0, 1}, ErrTruncated},
	}
}

func TestDecoderRejectsBadFramesWithTypedErrors(t *testing.T) {
	for name, c := range badFrames() {
		t.Run(name, func(t *testing.T) {
			_, err := Unmarshal(c.frame)
			require.True(t, errors.Is(err, c.want), "got %v want %v", err, c.want)
		})
	}
}

func TestReaderRejectsOversizedAndTruncatedFrames(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrameSize+1)
	_, _, err := NewReader(bytes.NewReader(hdr[:])).Read()
	require.ErrorIs(t, err, ErrFrameTooLarge)

	frame := Marshal(&Ping{Nonce: 1})
	_, _, err = NewReader(bytes.NewReader(frame[:len(frame)-2])).Read()
	require.ErrorIs(t, err, ErrTruncated)

	r := NewReader(bytes.NewReader(Marshal(&Data{Payload: make([]byte, 100)})))
	r.MaxFrame = 50
	_, _, err = r.Read()
	require.ErrorIs(t, err, ErrFrameTooLarge)

	_, _, err = NewReader(bytes.NewReader(nil)).Read()
	require.ErrorIs(t, err, io.EOF)
}

// trickle yields the first n bytes of b, then blocks the caller's view
// by reporting a broken connection: what a peer that declared a frame and
// stopped sending leaves behind.
type trickle struct {
	b []byte
	n int
}

func (t *trickle) Read(p []byte) (int, error) {
	if t.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	k := copy(p[:min(len(p), t.n)], t.b)
	t.b, t.n = t.b[k:], t.n-k
	return k, nil
}

func TestReaderAllocatesWhatArrivedNotWhatWasDeclared(t *testing.T) {
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrameSize)
	hdr[4] = byte(TypeData)
	src := append(hdr[:], make([]byte, 4<<10)...) // 4 KiB of an 8 MiB frame arrive
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, _, err := NewReader(&trickle{b: src, n: len(src)}).Read()
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, ErrTruncated)
	alloc := after.TotalAlloc - before.TotalAlloc
	require.Less(t, alloc, uint64(256<<10), "allocated %d bytes for 4 KiB that arrived", alloc)
}

func TestReaderCapsEachMessageTypeBeforeReadingItsBody(t *testing.T) {
	for _, typ := range []Type{TypeHello, TypeRequest, TypePing, TypeAccuse, TypeHave, TypeCandidates, TypeStreamHeader} {
		t.Run(typ.String(), func(t *testing.T) {
			var hdr [5]byte
			binary.BigEndian.PutUint32(hdr[:], uint32(MaxFrameFor(typ)+1))
			hdr[4] = byte(typ)
			_, _, err := NewReader(bytes.NewReader(hdr[:])).Read()
			require.ErrorIs(t, err, ErrFrameTooLarge)
		})
	}
	// The largest message of each capped type fits its cap.
	cands := &Candidates{}
	for i := 0; i < MaxCandidates; i++ {
		cands.List = append(cands.List, Candidate{Addr: string(bytes.Repeat([]byte{'a'}, MaxStringLen))})
	}
	have := &Have{Entries: make([]HaveEntry, MaxHaves)}
	bm := &BufferMap{Window: MaxWindow, Bits: make([][]byte, MaxLayers)}
	for l := range bm.Bits {
		bm.Bits[l] = make([]byte, MaxWindow/8)
	}
	long := string(bytes.Repeat([]byte{'s'}, MaxStringLen))
	hello := &Hello{Protocol: long, Role: RolePeer, Stream: long, ListenAddr: long, Token: long}
	for _, m := range []Message{cands, have, bm, hello, &StreamHeader{Header: make([]byte, 64<<10)}, &Accuse{Reason: long}} {
		frame := Marshal(m)
		require.LessOrEqual(t, len(frame)-4, MaxFrameFor(m.Type()), "%v", m.Type())
		_, _, err := NewReader(bytes.NewReader(frame)).Read()
		require.NoError(t, err, "%v", m.Type())
	}
	// An unknown type is refused from its type byte.
	_, _, err := NewReader(bytes.NewReader([]byte{0, 0, 0, 9, 200})).Read()
	require.ErrorIs(t, err, ErrUnknownType)
}

func FuzzUnmarshal(f *testing.F) {
	for _, m := range samples() {
		f.Add(Marshal(m)[4:])
	}
	for _, c := range badFrames() {
		f.Add(c.frame)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := Unmarshal(frame)
		if err != nil {
			return
		}
		// Anything accepted re-encodes to the same bytes (one encoding).
		require.Equal(t, frame, Marshal(m)[4:])
	})
}

func BenchmarkMarshalBufferMap(b *testing.B) {
	m := &BufferMap{Base: 1000, Window: 64, Bits: [][]byte{make([]byte, 8), make([]byte, 8), make([]byte, 8)}}
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = AppendFrame(buf[:0], m)
	}
}

func BenchmarkUnmarshalBufferMap(b *testing.B) {
	frame := Marshal(&BufferMap{Base: 1000, Window: 64, Bits: [][]byte{make([]byte, 8), make([]byte, 8), make([]byte, 8)}})[4:]
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Unmarshal(frame); err != nil {
			b.Fatal(err)
		}
	}
}
