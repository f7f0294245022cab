package hlsserver

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/segment"
)

// lockedBuffer is a log sink safe for the muxer's goroutines.
type lockedBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

func TestAPublisherThatKeepsReconnectingWithBadTracksLogsOncePerInterval(t *testing.T) {
	out := &lockedBuffer{mu: make(chan struct{}, 1)}
	s := newTestServer(t, func(s *Server) { s.Log = slog.New(slog.NewTextHandler(out, nil)) })
	bad := []segment.Track{tracks[0], {ID: 1, Codec: segment.CodecAAC, Params: [][]byte{{}}}}
	noHLS := []segment.Track{{ID: 0, Codec: segment.CodecAAC, Params: [][]byte{{}}}}
	for range 50 {
		s.TapStart("live/a", bad)
		s.TapEnd("live/a")
		s.TapStart("live/b", noHLS)
		s.TapEnd("live/b")
	}
	logs := out.String()
	for _, msg := range []string{"HLS: AAC track left out", "HLS: track left out", "HLS unavailable for stream"} {
		require.Equal(t, 1, strings.Count(logs, `msg="`+msg), "%q: one line per interval, not one per publish:\n%s", msg, logs)
	}
}

func TestBadCredentialsLogOncePerInterval(t *testing.T) {
	out := &lockedBuffer{mu: make(chan struct{}, 1)}
	s := newTestServer(t, func(s *Server) {
		s.Log = slog.New(slog.NewTextHandler(out, nil))
		s.ReadUser, s.ReadPass = "viewer", "secret"
	})
	s.TapStart("live/a", tracks)
	for range 100 {
		req := httptest.NewRequest("GET", "/live/a/index.m3u8", nil)
		req.SetBasicAuth("viewer", "guess")
		s.ServeHTTP(httptest.NewRecorder(), req)
	}
	require.Equal(t, 1, strings.Count(out.String(), "bad credentials"), out.String())
}
