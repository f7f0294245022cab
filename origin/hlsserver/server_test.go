package hlsserver

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/segment"
)

// The SPS/PPS of a 320x240 x264 ultrafast stream (from ffmpeg 5.1) and an
// AAC-LC 44.1 kHz stereo AudioSpecificConfig.
var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x0a, 0xa8}
	testPPS = []byte{0x68, 0xce, 0x0f, 0xc8}
	tracks  = []segment.Track{
		{ID: 0, Codec: segment.CodecH264, Params: [][]byte{testSPS, testPPS}},
		{ID: 1, Codec: segment.CodecAAC, Params: [][]byte{{0x12, 0x10}}},
	}
)

func newTestServer(t *testing.T, mod func(*Server)) *Server {
	t.Helper()
	s := &Server{QueueSize: 16}
	if mod != nil {
		mod(s)
	}
	require.NoError(t, s.Initialize())
	t.Cleanup(s.Close)
	return s
}

func TestAFullQueueDropsAndCountsWithoutBlockingThePublisher(t *testing.T) {
	s := newTestServer(t, nil)
	s.TapStart("live/a", tracks)
	sm := s.get("live/a")
	require.NotNil(t, sm)
	// Stop the muxer's goroutine so nothing drains the queue.
	sm.stopFeeding()

	key := &media.Unit{Track: 0, Key: true, NALUs: [][]byte{{0x65, 1, 2, 3}}}
	delta := &media.Unit{Track: 0, NALUs: [][]byte{{0x41, 1, 2, 3}}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.TapUnit("live/a", key)
		for range 100 {
			s.TapUnit("live/a", delta)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("TapUnit blocked on a full queue")
	}
	require.Len(t, sm.queue, 16, "the queue holds its bound")
	require.Equal(t, uint64(1), s.Stats()[0].DroppedUnits, "one drop, then video waits for a key frame")
	require.True(t, sm.waitKey)
	s.TapUnit("live/a", delta)
	require.Equal(t, uint64(1), s.Stats()[0].DroppedUnits, "delta frames after a loss are skipped, not counted as drops")
}

func TestUnitsBeforeTheFirstKeyFrameAreSkipped(t *testing.T) {
	s := newTestServer(t, nil)
	s.TapStart("live/a", tracks)
	sm := s.get("live/a")
	sm.stopFeeding()
	s.TapUnit("live/a", &media.Unit{Track: 1, AU: []byte{1, 2}})
	s.TapUnit("live/a", &media.Unit{Track: 0, NALUs: [][]byte{{0x41, 1}}})
	require.Empty(t, sm.queue)
	s.TapUnit("live/a", &media.Unit{Track: 0, Key: true, NALUs: [][]byte{{0x65, 1}}})
	s.TapUnit("live/a", &media.Unit{Track: 1, AU: []byte{1, 2}})
	require.Len(t, sm.queue, 2)
}

func TestAResumedPublisherKeepsTheMuxerUnlessTracksChange(t *testing.T) {
	s := newTestServer(t, nil)
	s.TapStart("live/a", tracks)
	first := s.get("live/a")
	s.TapStart("live/a", tracks)
	require.Same(t, first, s.get("live/a"), "same tracks: the playlist continues")
	other := []segment.Track{tracks[0]}
	s.TapStart("live/a", other)
	require.NotSame(t, first, s.get("live/a"), "new tracks: a new muxer")
	s.TapEnd("live/a")
	require.Nil(t, s.get("live/a"))
	require.Empty(t, s.Stats())
}

func TestKeyFramesGetTheParameterSetsInBand(t *testing.T) {
	got := withParams(tracks[0], true, [][]byte{{0x65, 1}})
	require.Equal(t, [][]byte{testSPS, testPPS, {0x65, 1}}, got)
	inBand := [][]byte{testSPS, testPPS, {0x65, 1}}
	require.Equal(t, inBand, withParams(tracks[0], true, inBand))
	require.Equal(t, [][]byte{{0x41, 1}}, withParams(tracks[0], false, [][]byte{{0x41, 1}}))
}

func TestHTTPRefusals(t *testing.T) {
	s := newTestServer(t, func(s *Server) { s.ReadUser, s.ReadPass = "viewer", "secret" })
	s.TapStart("live/a", tracks)
	cases := []struct {
		name, method, path string
		user, pass         string
		want               int
	}{
		{"no credentials", "GET", "/live/a/index.m3u8", "", "", http.StatusUnauthorized},
		{"wrong password", "GET", "/live/a/index.m3u8", "viewer", "nope", http.StatusUnauthorized},
		{"unknown stream", "GET", "/live/b/index.m3u8", "viewer", "secret", http.StatusNotFound},
		{"unknown file of a live stream", "GET", "/live/a/nothing.mp4", "viewer", "secret", http.StatusNotFound},
		{"no player page without Page", "GET", "/live/a", "viewer", "secret", http.StatusNotFound},
		{"a POST", "POST", "/live/a/index.m3u8", "viewer", "secret", http.StatusMethodNotAllowed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, c.path, nil)
			if c.user != "" {
				req.SetBasicAuth(c.user, c.pass)
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			require.Equal(t, c.want, rec.Code)
		})
	}
}

func TestRequestsAboveTheBoundGet503(t *testing.T) {
	s := newTestServer(t, func(s *Server) { s.MaxRequests = 1 })
	s.sem <- struct{}{} // one request in flight
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/live/a/index.m3u8", nil))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
}

func TestBadSettingsAreRefused(t *testing.T) {
	for _, s := range []*Server{
		{Variant: "dash"},
		{Variant: VariantLowLatency, SegmentCount: 3},
		{Variant: VariantFMP4, SegmentCount: 2},
	} {
		require.Error(t, s.Initialize(), "%+v", s)
	}
}
