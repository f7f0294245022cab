package webassets

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func get(t *testing.T, h http.Handler, path string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestWatchServesThePageAndItsFiles(t *testing.T) {
	h := Watch()
	w := get(t, h, "/watch/live/demo")
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), `<video id="video"`)
	require.Contains(t, w.Body.String(), `../_/watch.js`)

	w = get(t, h, "/watch/_/watch.js")
	require.Equal(t, http.StatusOK, w.Code)
	require.Contains(t, w.Body.String(), "coopPeer.open")

	for _, bad := range []string{"/watch/", "/watch/live", "/watch/a/b/c", "/watch/_/../index.html", "/watch/_/dist/README.md", "/other"} {
		require.Equal(t, http.StatusNotFound, get(t, h, bad).Code, bad)
	}

	w = get(t, h, "/watch/_/peer.wasm", "Accept-Encoding", "gzip, deflate")
	if !WatchBuilt() {
		require.Equal(t, http.StatusServiceUnavailable, w.Code)
		require.Contains(t, w.Body.String(), "make wasm")
		t.Skip("peer.wasm not built into this test binary (make wasm)")
	}
	require.Equal(t, http.StatusOK, w.Code)
	require.Equal(t, "gzip", w.Header().Get("Content-Encoding"))
	require.Equal(t, "application/wasm", w.Header().Get("Content-Type"))
	plain := get(t, h, "/watch/_/peer.wasm")
	require.Equal(t, http.StatusOK, plain.Code)
	require.Empty(t, plain.Header().Get("Content-Encoding"))
	require.True(t, bytes.HasPrefix(plain.Body.Bytes(), []byte("\x00asm")), "inflated for a client without gzip")
	require.Greater(t, plain.Body.Len(), w.Body.Len())
	require.Equal(t, http.StatusOK, get(t, h, "/watch/_/wasm_exec.js").Code)
}
