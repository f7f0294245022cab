package integration

import (
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/cluster/redistest"
	"github.com/coopstreaming/coop/peerproto/tcpnode"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// helloRedirect sends a peer's Hello for stream to addr and returns the
// address of a redirect answer ("" for any other answer).
func helloRedirect(addr, stream string) string {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	h := &wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Features: wire.FeatureManifest | wire.FeatureLayers,
		Role: wire.RolePeer, Stream: stream, Peer: wire.PeerID(time.Now().UnixNano() | 1)}
	if _, err := c.Write(wire.Marshal(h)); err != nil {
		return ""
	}
	_, _, err = tcpnode.ReadHello(c)
	var rej *tcpnode.RejectedError
	if errors.As(err, &rej) && rej.Reason == wire.RejectRedirect {
		return rej.Addr
	}
	return ""
}

// TestPlacementRedirectsPeersByLoad runs a real redis-server and two
// origins with their real plugins, both publishing live/ppl, with
// cluster.placement.maxPeers 2. Two coop-peers fill node A; a third
// coop-peer told only node A's address is answered with a peer-protocol
// redirect to node B, follows it and plays from node B.
func TestPlacementRedirectsPeersByLoad(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	srv := redistest.Start(t)
	node := func(id string) []string {
		return append(clusterNodeEnv(srv.Addr, id, "origin"), "COOP_CLUSTER_PLACEMENT_MAXPEERS=2")
	}
	var nodes [2]*originProc
	var peerAddrs [2]string
	for i, id := range []string{"node-a", "node-b"} {
		nodes[i], peerAddrs[i] = startP2POrigin(t, node(id)...)
		publishRTMP(t, nodes[i].rtmpURL("ppl"), 75*time.Second, "320x240")
	}
	for _, o := range nodes {
		o.waitPublishing(t, "live/ppl")
	}
	a, b, peerA, peerB := nodes[0], nodes[1], peerAddrs[0], peerAddrs[1]
	waitFor(t, 20*time.Second, "node-a's view shows both nodes serving live/ppl", func() bool {
		v, ok := a.cluster()
		return ok && len(v.Nodes) == 2 && len(v.Streams) == 1 && len(v.Streams[0].OtherOrigins) == 1
	})

	first := []*peerProc{startPeer(t, peerA, "live/ppl"), startPeer(t, peerA, "live/ppl")}
	waitFor(t, 40*time.Second, "two peers playing from node-a", func() bool {
		for _, p := range first {
			if st, ok := p.failoverStats(); !ok || st.State != "playing" || st.Server != peerA {
				return false
			}
		}
		return true
	})
	waitFor(t, 20*time.Second, "node-a at its limit redirects a new peer to node-b", func() bool {
		return helloRedirect(peerA, "live/ppl") == peerB
	})
	third := startPeer(t, peerA, "live/ppl")
	waitFor(t, 40*time.Second, "the third peer redirected to node-b and playing there", func() bool {
		st, ok := third.failoverStats()
		return ok && st.State == "playing" && st.Server == peerB && st.ServerRedirects == 1 && st.Due >= 6
	})
	// Two origins publishing one name sign with two keys, and the shared
	// tracker hands the third peer node-a's peers as candidates: it
	// refuses their segments (bad data) and plays node-b's. With edges
	// (one key and epoch cluster-wide) partners cross nodes.
	st, _ := third.failoverStats()
	t.Logf("redirected peer: server %s, continuity %.3f, bad data from node-a's peers %d", st.Server, st.Continuity, st.BadData)
	waitFor(t, 20*time.Second, "node-b's plugin counts the redirected peer", func() bool {
		st := b.p2p(t)
		return len(st.Streams) == 1 && st.Streams[0].Peers == 1
	})
	m, err := metricsText(a.httpAddr)
	require.NoError(t, err)
	require.GreaterOrEqual(t, metricValue(m, `coop_p2p_rejected_total{reason="redirected"}`), 2.0,
		"node-a counts its redirects (the probe's and the third peer's)")
	for _, p := range first {
		if st, _ := p.failoverStats(); st.Server != peerA || st.ServerRedirects != 0 {
			t.Fatalf("a peer admitted by node-a moved: %+v", st)
		}
	}
}

// TestPlacementKeepsAnEdgesRelay runs a real redis-server, an origin
// with cluster.placement.maxPeers 1 and two edges started one after the
// other. Edge A's relay fills the origin; edge B's relay, a super-peer
// (its declared upload), is admitted by the origin anyway instead of
// being redirected to edge A: the origin serves both relays.
func TestPlacementKeepsAnEdgesRelay(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	srv := redistest.Start(t)
	const stream = "live/pkr"
	origin, _ := startP2POrigin(t, append(clusterNodeEnv(srv.Addr, "origin", "origin"), "COOP_CLUSTER_PLACEMENT_MAXPEERS=1")...)
	publishRTMP(t, origin.rtmpURL("pkr"), 60*time.Second, "320x240", "-preset", "ultrafast", "-g", "30")
	origin.waitPublishing(t, stream)
	relaying := func(e *originProc) bool {
		r := e.edgeRelays()
		return len(r) == 1 && r[0].Stream == stream && r[0].State == "relaying" && r[0].Segments >= 2
	}
	edgeA, _ := startP2POrigin(t, clusterNodeEnv(srv.Addr, "edge-a", "edge")...)
	waitFor(t, 30*time.Second, "edge A relays the origin's stream", func() bool { return relaying(edgeA) })
	waitFor(t, 20*time.Second, "the registry lists edge A serving the stream", func() bool {
		var v struct {
			Streams []struct {
				Name  string   `json:"name"`
				Edges []string `json:"edges"`
			} `json:"streams"`
		}
		return tryGetJSON("http://"+origin.httpAddr+"/v1/cluster", &v) == nil && len(v.Streams) == 1 &&
			slices.Equal(v.Streams[0].Edges, []string{"edge-a"})
	})
	edgeB, _ := startP2POrigin(t, clusterNodeEnv(srv.Addr, "edge-b", "edge")...)
	waitFor(t, 30*time.Second, "edge B relays the origin's stream", func() bool { return relaying(edgeB) })
	waitFor(t, 20*time.Second, "the origin serves both relays", func() bool {
		st, ok := origin.edgeP2P()
		return ok && len(st.Streams) == 1 && st.Streams[0].Peers == 2
	})
	for _, e := range []*originProc{edgeA, edgeB} {
		st, ok := e.edgeP2P()
		require.True(t, ok)
		require.Len(t, st.Streams, 1)
		require.True(t, st.Streams[0].RelayConnected, "the relay of %s is connected", e.httpAddr)
	}
	m, err := metricsText(origin.httpAddr)
	require.NoError(t, err)
	require.Zero(t, metricValue(m, `coop_p2p_rejected_total{reason="redirected"}`), "the origin redirected no relay")
}
