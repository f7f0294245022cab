package hlsserver

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestTheEntryPlaylistRedirectsWhenAnotherNodeShouldServe(t *testing.T) {
	var asked []RedirectRequest
	target := "10.0.0.2:8888"
	s := newTestServer(t, func(s *Server) {
		s.Redirect = func(r RedirectRequest) string { asked = append(asked, r); return target }
	})
	s.TapStart("live/a", tracks)

	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "http://node-a:8888/live/a/index.m3u8?token=x", nil)
	s.ServeHTTP(rec, req)
	require.Equal(t, http.StatusFound, rec.Code)
	require.Equal(t, "http://10.0.0.2:8888/live/a/index.m3u8?token=x", rec.Header().Get("Location"))
	require.Equal(t, "*", rec.Header().Get("Access-Control-Allow-Origin"))
	require.Equal(t, []RedirectRequest{{Path: "live/a", Host: "node-a"}}, asked)

	// Only the entry point: a client already served here stays here.
	require.False(t, s.redirect(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet,
		"http://node-a:8888/live/a/main_stream.m3u8", nil), "live/a", "main_stream.m3u8"))
	require.Len(t, asked, 1, "the hook is not asked about other files")
	// An unknown stream is a 404, not a redirect.
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://node-a:8888/live/none/index.m3u8", nil))
	require.Equal(t, http.StatusNotFound, rec.Code)
	require.Len(t, asked, 1)
	// "" serves here.
	target = ""
	require.False(t, s.redirect(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet,
		"http://node-a:8888/live/a/index.m3u8", nil), "live/a", "index.m3u8"))
	require.Len(t, asked, 2)
}

func TestViewersAreAddressesAndPlayersThatReloadAPlaylist(t *testing.T) {
	require.Equal(t, viewerKey("10.0.0.1:5000", "hls.js"), viewerKey("10.0.0.1:5001", "hls.js"),
		"a browser's several connections are one viewer")
	require.NotEqual(t, viewerKey("10.0.0.1:5000", "hls.js"), viewerKey("10.0.0.1:5000", "Lavf/59"))
	require.NotEqual(t, viewerKey("10.0.0.1:5000", "x"), viewerKey("10.0.0.2:5000", "x"))
	require.Len(t, viewerKey("[::1]:1", strings.Repeat("a", 10000)), len("::1 ")+maxAgentLen, "the key is bounded")

	var v viewers
	now := time.Now()
	v.touch("1.1.1.1:1000", now)
	v.touch("1.1.1.1:1000", now.Add(time.Second))
	v.touch("2.2.2.2:2000", now)
	require.Equal(t, 2, v.count(now.Add(2*time.Second)))
	require.Equal(t, 1, v.count(now.Add(viewerWindow+500*time.Millisecond)), "the silent one is gone")
	require.Equal(t, 0, v.count(now.Add(time.Hour)))

	for i := range maxViewers + 10 {
		v.touch(strconv.Itoa(i)+":1", now)
	}
	require.Equal(t, maxViewers, v.count(now), "the count saturates at its bound")
	require.LessOrEqual(t, len(v.seen), maxViewers)
}
