package httpapi

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/origin/pluginhost"
	"github.com/coopstreaming/coop/origin/rtspserver"
	"github.com/coopstreaming/coop/origin/stream"
	"github.com/coopstreaming/coop/plugin/pluginapi"
)

func TestStatusPageAndP2PSection(t *testing.T) {
	st := pluginhost.Status{Enabled: true, Up: true, PID: 4242, PeerAddress: "127.0.0.1:7070", WebAddress: "[::]:7071", StreamPublicKey: "abcd",
		Streams: []pluginapi.StreamStats{{Stream: "live/x", Peers: 5, PeerBytesFromServer: 1, PeerBytesFromPeers: 3, Continuity: 0.99}}}
	h := Handler(Sources{
		Streams: func() []stream.Info { return []stream.Info{{Path: "live/x", Publishing: true}} }, Readers: func() []rtspserver.Reader { return nil },
		Gatherer: prometheus.NewRegistry(), Extra: map[string]func() any{"p2p": func() any { return st }},
	}, slog.Default())
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path string) string {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	page := get("/")
	require.Contains(t, page, "pid 4242")
	require.Contains(t, page, "<td>live/x</td><td>5</td>")
	require.Contains(t, page, "75.0 %", "lifetime offload as a percentage")
	require.Contains(t, page, `<a href="http://127.0.0.1:7071/watch/live/x">browser peer</a>`,
		"the stream links to the browser peer on the plugin's web port, at the host the page was reached by")
	p2p := get("/v1/p2p")
	require.Contains(t, p2p, `"pid": 4242`)
	require.Contains(t, p2p, `"stream": "live/x"`, "camelCase keys")
	require.Contains(t, p2p, `"peers": 5`)
	require.NotContains(t, p2p, `"Stream"`)
	require.NotContains(t, p2p, `"Peers"`)
	require.Contains(t, get("/v1/status"), `"p2p"`)
}
