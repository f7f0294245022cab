package integration

import (
	"encoding/json"
	"net/http"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/cluster/redistest"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// clusterView mirrors /v1/cluster (the fields the test reads).
type clusterView struct {
	Node    string `json:"node"`
	Backend string `json:"backend"`
	Error   string `json:"error"`
	Nodes   []struct {
		ID   string `json:"id"`
		Load struct {
			Peers int `json:"peers"`
		} `json:"load"`
	} `json:"nodes"`
	Streams []struct {
		Name         string   `json:"name"`
		Origin       string   `json:"origin"`
		OtherOrigins []string `json:"otherOrigins"`
		Epoch        uint64   `json:"epoch"`
		PublicKey    []byte   `json:"publicKey"`
	} `json:"streams"`
}

func (o *originProc) cluster() (clusterView, bool) {
	var v clusterView
	resp, err := http.Get("http://" + o.httpAddr + "/v1/cluster")
	if err != nil {
		return v, false
	}
	defer resp.Body.Close()
	return v, resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&v) == nil
}

func (v clusterView) nodeIDs() []string {
	ids := []string{}
	for _, n := range v.Nodes {
		ids = append(ids, n.ID)
	}
	sort.Strings(ids)
	return ids
}

// candidatesOf asks the server for candidates and returns the first answer.
func candidatesOf(t *testing.T, p *rawPeer) []wire.Candidate {
	t.Helper()
	require.NoError(t, p.send(&wire.GetCandidates{Max: 16}))
	_ = p.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer func() { _ = p.c.SetReadDeadline(time.Time{}) }()
	for {
		m, _, err := p.r.Read()
		require.NoError(t, err, "reading the candidates")
		if c, ok := m.(*wire.Candidates); ok {
			return c.List
		}
	}
}

// keepAlive pings a raw peer's server and drops what it sends, until the
// connection closes.
func keepAlive(p *rawPeer) {
	go func() {
		for p.send(&wire.Ping{Nonce: 1}) == nil {
			time.Sleep(300 * time.Millisecond) // keepalive pacing, not a synchronisation
		}
	}()
	go p.discard()
}

// TestClusterTwoOriginsShareRegistryAndTracker runs a real redis-server
// and two origins, each with its real plugin, sharing it: each origin's
// /v1/cluster shows both nodes and the stream both publish; a raw peer
// on node A is handed the peers attached to node B; a Redis restart is
// rebuilt by the next heartbeats and re-syncs; a SIGKILLed node leaves
// the other's view within its TTL, and its peers leave the candidates.
func TestClusterTwoOriginsShareRegistryAndTracker(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	srv := redistest.Start(t)
	const ttl = 2 * time.Second
	node := func(id string) []string {
		return []string{"COOP_CLUSTER_REDIS=" + srv.Addr, "COOP_CLUSTER_NODEID=" + id,
			"COOP_CLUSTER_HEARTBEAT=500ms", "COOP_CLUSTER_TTL=" + ttl.String()}
	}
	a, peerA := startP2POrigin(t, node("node-a")...)
	b, peerB := startP2POrigin(t, node("node-b")...)
	publishRTMP(t, a.rtmpURL("cluster"), 60*time.Second, "320x240")
	publishRTMP(t, b.rtmpURL("cluster"), 60*time.Second, "320x240")
	a.waitPublishing(t, "live/cluster")
	b.waitPublishing(t, "live/cluster")

	bothSeen := func(o *originProc) func() bool {
		return func() bool {
			v, ok := o.cluster()
			return ok && v.Backend == "redis" && len(v.Nodes) == 2 && v.nodeIDs()[0] == "node-a" && v.nodeIDs()[1] == "node-b" &&
				len(v.Streams) == 1 && v.Streams[0].Origin == "node-a" && len(v.Streams[0].OtherOrigins) == 1
		}
	}
	waitFor(t, 20*time.Second, "node-a's view shows both nodes and the stream", bothSeen(a))
	waitFor(t, 20*time.Second, "node-b's view shows both nodes and the stream", bothSeen(b))
	// The epoch comes with the plugin's next stats: wait for it.
	waitFor(t, 20*time.Second, "the stream's epoch and Ed25519 key from the plugin", func() bool {
		v, ok := a.cluster()
		return ok && v.Node == "node-a" && len(v.Streams) == 1 && v.Streams[0].Epoch != 0 && len(v.Streams[0].PublicKey) == 32
	})

	// Three peers on node B, one asker on node A: node A has no other
	// member, so every candidate it hands out is one of node B's.
	for range 3 {
		p, err := dialRawPeer(peerB, "live/cluster", 0)
		require.NoError(t, err)
		t.Cleanup(func() { p.c.Close() })
		keepAlive(p)
	}
	asker, err := dialRawPeer(peerA, "live/cluster", 0)
	require.NoError(t, err)
	t.Cleanup(func() { asker.c.Close() })
	fromB := func() bool { return len(candidatesOf(t, asker)) == 3 }
	waitFor(t, 20*time.Second, "node-a hands out node-b's three peers", fromB)
	waitFor(t, 20*time.Second, "node-b's load reaches node-a's view", func() bool {
		v, ok := a.cluster()
		return ok && len(v.Nodes) == 2 && v.Nodes[1].ID == "node-b" && v.Nodes[1].Load.Peers == 3
	})

	// Redis restarted, empty: the next heartbeats and re-syncs rebuild it.
	srv.Restart()
	waitFor(t, 20*time.Second, "both nodes back in node-a's view after the Redis restart", bothSeen(a))
	waitFor(t, 20*time.Second, "node-b's peers back in node-a's candidates", fromB)

	// node-b dies (origin and plugin, SIGKILL: no goodbye).
	require.NoError(t, syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL))
	killed := time.Now()
	waitFor(t, ttl+5*time.Second, "node-b gone from node-a's view within its TTL (+ heartbeat and polling slack)", func() bool {
		v, ok := a.cluster()
		return ok && len(v.Nodes) == 1 && v.Nodes[0].ID == "node-a" && len(v.Streams[0].OtherOrigins) == 0
	})
	t.Logf("node-b left node-a's view %.1f s after SIGKILL (TTL %v)", time.Since(killed).Seconds(), ttl)
	waitFor(t, ttl+5*time.Second, "node-b's peers gone from node-a's candidates", func() bool { return len(candidatesOf(t, asker)) == 0 })
}
