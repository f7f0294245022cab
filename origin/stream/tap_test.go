package stream

import (
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/segment"
)

// recordingTap records what a Tap is handed.
type recordingTap struct {
	// mu guards the fields below.
	mu     sync.Mutex
	starts int
	units  []time.Duration
	ended  bool
}

func (r *recordingTap) TapStart(string, []segment.Track) { r.mu.Lock(); r.starts++; r.mu.Unlock() }
func (r *recordingTap) TapUnit(_ string, u *media.Unit) {
	r.mu.Lock()
	r.units = append(r.units, u.DTS)
	r.mu.Unlock()
}
func (r *recordingTap) TapEnd(string) { r.mu.Lock(); r.ended = true; r.mu.Unlock() }

// TestTheTapGetsEveryUnitOnTheReadersTimeline guards the HLS muxer's feed:
// start, every unit (continuing the timeline across a resumed publisher),
// and the end of the stream.
func TestTheTapGetsEveryUnitOnTheReadersTimeline(t *testing.T) {
	srv := &gortsplib.Server{RTSPAddress: "127.0.0.1:0"}
	require.NoError(t, srv.Start())
	t.Cleanup(srv.Close)
	tap := &recordingTap{}
	m := &Manager{Config: Config{GracePeriod: time.Hour}, RTSP: srv, Tap: tap}
	tracks := []segment.Track{{ID: 0, Codec: segment.CodecAAC, Params: [][]byte{{0x12, 0x10}}}}

	p, err := m.Publish("live/t", PublisherInfo{Protocol: "rtmp"})
	require.NoError(t, err)
	require.NoError(t, p.SetTracks(tracks))
	for i := range 3 {
		d := time.Duration(i) * 20 * time.Millisecond
		require.NoError(t, p.Write(&media.Unit{Track: 0, PTS: d, DTS: d, AU: []byte{1, 2, 3}}))
	}
	p.Close()
	// The publisher comes back within the grace period: the timeline goes on.
	p2, err := m.Publish("live/t", PublisherInfo{Protocol: "rtmp"})
	require.NoError(t, err)
	require.NoError(t, p2.SetTracks(tracks))
	require.NoError(t, p2.Write(&media.Unit{Track: 0, AU: []byte{1}}))
	p2.Close()
	m.Close()

	tap.mu.Lock()
	defer tap.mu.Unlock()
	require.Equal(t, 2, tap.starts)
	require.Len(t, tap.units, 4, "every unit reaches the tap")
	require.Greater(t, tap.units[3], tap.units[2], "a resumed publisher continues the timeline")
	require.True(t, tap.ended)
}
