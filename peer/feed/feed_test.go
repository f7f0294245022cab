package feed

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/segment"
)

type recorder struct {
	headers int
	segs    chan []segment.Frame
}

func (r *recorder) SetHeader(segment.Header)           { r.headers++ }
func (r *recorder) WriteFrames(frames []segment.Frame) { r.segs <- frames }

func chunks(t *testing.T, seq uint64, rap bool) [][]byte {
	t.Helper()
	s := &segment.Segment{Seq: seq, RandomAccess: rap, Layers: [][]segment.Frame{
		{{Index: 0, Key: rap, PTS: int64(seq) * 100, DTS: int64(seq) * 100, Payload: []byte{0, 0, 0, 1, 0x65}}},
		{{Index: 1, PTS: int64(seq)*100 + 50, DTS: int64(seq)*100 + 50, Payload: []byte{0, 0, 0, 1, 0x01}}},
	}}
	c, err := s.Marshal()
	require.NoError(t, err)
	return c
}

func TestFeedStartsAtRandomAccessAndWaitsAgainAfterAMiss(t *testing.T) {
	f := New(nil)
	r := &recorder{segs: make(chan []segment.Frame, 16)}
	f.Add(r)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.Run(ctx)
	h, err := segment.MarshalHeader(segment.Header{Tracks: []segment.Track{{ID: 0, Codec: segment.CodecH264, Params: [][]byte{{0x67}, {0x68}}}}})
	require.NoError(t, err)
	f.SetHeader(h)
	f.Play(1, chunks(t, 1, false)) // not a random-access point: skipped
	f.Play(2, chunks(t, 2, true))
	f.Play(3, chunks(t, 3, false))
	f.Play(4, nil)                 // missed
	f.Play(5, chunks(t, 5, false)) // must wait for a key frame again
	f.Play(6, chunks(t, 6, true)[:1])
	var got [][]segment.Frame
	for len(got) < 3 {
		select {
		case fr := <-r.segs:
			got = append(got, fr)
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d segments delivered", len(got))
		}
	}
	require.Len(t, got[0], 2, "both layers merged")
	require.True(t, got[0][0].Key)
	require.Equal(t, int64(200), got[0][0].PTS)
	require.Equal(t, int64(300), got[1][0].PTS)
	require.Equal(t, int64(600), got[2][0].PTS, "segment 5 was held back after the miss")
	require.Len(t, got[2], 1, "the base layer alone plays")
	st := f.Stats()
	require.Equal(t, Stats{Segments: 3, Skipped: 2, Missed: 1}, st)
	require.Equal(t, 1, r.headers)
}

func TestDecodeStopsAtTheFirstBadLayer(t *testing.T) {
	c := chunks(t, 7, true)
	frames, rap, ok := Decode(7, [][]byte{c[0], []byte("garbage")})
	require.True(t, ok)
	require.True(t, rap)
	require.Len(t, frames, 1)
	_, _, ok = Decode(8, c) // wrong sequence number
	require.False(t, ok)
}
