package playout

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/segment"
)

func chunk(t *testing.T, seq uint64, ra bool, n int) []byte {
	t.Helper()
	frames := make([]segment.Frame, n)
	for i := range frames {
		ts := int64(seq)*45000 + int64(i)*2090
		frames[i] = segment.Frame{Index: uint32(i), Track: 0, PTS: ts, DTS: ts, Payload: []byte{0x21, 0x10, 0x05, byte(i)}}
	}
	b, err := segment.MarshalChunk(segment.ChunkInfo{Seq: seq, Duration: 45000, RandomAccess: ra}, frames)
	require.NoError(t, err)
	return b
}

func TestPlayersStartAtRandomAccessAndSurviveMisses(t *testing.T) {
	p := New(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)

	srv := httptest.NewServer(p)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "no header yet")
	resp.Body.Close()

	h, err := segment.MarshalHeader(segment.Header{Tracks: []segment.Track{{ID: 0, Codec: segment.CodecAAC, Params: [][]byte{{0x12, 0x10}}}}})
	require.NoError(t, err)
	p.SetHeader(h)
	resp, err = http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, "video/mp2t", resp.Header.Get("Content-Type"))
	require.Eventually(t, func() bool { return p.Stats().Clients == 1 }, 5*time.Second, 10*time.Millisecond)

	p.Play(1, [][]byte{chunk(t, 1, false, 5)}) // not a random-access point: skipped for the new player
	p.Play(2, nil)                             // missed
	p.Play(3, [][]byte{[]byte("garbage")})     // undecodable base: counted, played as missed
	p.Play(4, [][]byte{chunk(t, 4, true, 20), []byte("bad layer")})
	buf := make([]byte, 188)
	_, err = io.ReadFull(resp.Body, buf)
	require.NoError(t, err)
	require.Equal(t, byte(0x47), buf[0], "MPEG-TS sync byte")
	require.Eventually(t, func() bool {
		st := p.Stats()
		return st.Played == 2 && st.Missed == 2 && st.BadChunks == 2
	}, 5*time.Second, 10*time.Millisecond, "%+v", p.Stats())
	require.Equal(t, uint64(2), p.Stats().LayersPlayed, "the bad enhancement layer is not played")
}

func TestPlayNeverBlocks(t *testing.T) {
	p := New(nil) // Run is not running: the queue fills, then Play drops
	done := make(chan struct{})
	go func() {
		for i := range 1000 {
			p.Play(uint64(i), nil)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Play blocked")
	}
	require.Positive(t, p.Stats().Missed)
}
