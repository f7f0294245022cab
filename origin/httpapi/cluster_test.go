package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/cluster/registry"
	"github.com/coopstreaming/coop/origin/rtspserver"
	"github.com/coopstreaming/coop/origin/stream"
)

func TestClusterEndpointAndStatusSection(t *testing.T) {
	reg := registry.NewMemory(registry.Options{})
	ctx := context.Background()
	require.NoError(t, reg.Heartbeat(ctx, registry.Node{ID: "node-a", Role: registry.RoleOrigin,
		Addr: registry.Addresses{RTSP: ":8554", Peer: ":7070"}, Load: registry.Load{Peers: 4, EgressBytesPerSec: 125_000},
		Streams: []registry.Claim{{Stream: "live/x", Epoch: 3, Peers: 4}}}))
	require.NoError(t, reg.Heartbeat(ctx, registry.Node{ID: "node-b", Role: registry.RoleOrigin, Load: registry.Load{Peers: 2}}))
	view := func() any { v, err := reg.View(ctx); require.NoError(t, err); return Cluster{Node: "node-a", View: v} }
	h := Handler(Sources{
		Streams: func() []stream.Info { return nil }, Readers: func() []rtspserver.Reader { return nil },
		Gatherer: prometheus.NewRegistry(), Extra: map[string]func() any{"cluster": view},
	}, slog.Default())
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path string) []byte {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return b
	}
	var c Cluster
	require.NoError(t, json.Unmarshal(get("/v1/cluster"), &c))
	require.Equal(t, "node-a", c.Node)
	require.Equal(t, "memory", c.Backend)
	require.Len(t, c.Nodes, 2)
	require.Equal(t, registry.Totals{Nodes: 2, Streams: 1, Peers: 6, EgressBytesPerSec: 125_000}, c.Totals)
	require.Equal(t, "live/x", c.Streams[0].Name)
	require.Equal(t, "node-a", c.Streams[0].Origin)

	page := string(get("/"))
	require.Contains(t, page, "<h2>Cluster</h2>")
	require.Contains(t, page, "node-b")
	require.Contains(t, page, "2 nodes, 1 streams, 6 peers")
}
