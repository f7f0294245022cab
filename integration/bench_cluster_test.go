package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/cluster/redistest"
)

// Parameters of the cluster benchmark (issue 15: peers per node and
// control traffic per peer with 1, 2 and 3 nodes).
const (
	clusterBenchPerNode = 6
	clusterBenchWindow  = 30 * time.Second
	clusterBenchStream  = "live/cbench"
)

// clusterNodeFigures are one node's figures over the measurement window.
type clusterNodeFigures struct {
	Node     string `json:"node"`
	Role     string `json:"role"`
	CoopPeer int    `json:"coopPeers"` // coop-peers given this node as --server
	// Peers is coop_p2p_peers at the window's end: the coop-peers and,
	// on the origin, the edges' relays.
	Peers int `json:"peers"`
	// EgressBps is the server partner's bytes/s (media + control) to
	// its peers (coop_p2p_server_{media,control}_bytes_total).
	EgressBps float64 `json:"egressBytesPerSec"`
	// Copies is EgressBps over the stream's rate.
	Copies float64 `json:"copies"`
	// ControlBps is the server partner's control bytes/s, and
	// ControlPerPeerBps that divided by Peers.
	ControlBps        float64 `json:"controlBytesPerSec"`
	ControlPerPeerBps float64 `json:"controlBytesPerSecPerPeer"`
}

// clusterRunFigures are one run (one node count).
type clusterRunFigures struct {
	Nodes          int                  `json:"nodes"`
	CoopPeers      int                  `json:"coopPeers"`
	WindowS        float64              `json:"windowSeconds"`
	StreamBps      float64              `json:"streamBytesPerSec"`
	RedisCmdsPerS  float64              `json:"redisCommandsPerSec"`
	RedisInBps     float64              `json:"redisBytesInPerSec"`
	RedisOutBps    float64              `json:"redisBytesOutPerSec"`
	MinContinuity  float64              `json:"minContinuity"`
	MeanContinuity float64              `json:"meanContinuity"`
	PerNode        []clusterNodeFigures `json:"perNode"`
}

// nodeCounters are the /metrics counters the benchmark reads.
type nodeCounters struct{ peers, media, control float64 }

func readNodeCounters(t *testing.T, o *originProc) nodeCounters {
	t.Helper()
	m, err := metricsText(o.httpAddr)
	require.NoError(t, err)
	l := `{stream="` + clusterBenchStream + `"}`
	return nodeCounters{peers: metricValue(m, "coop_p2p_peers"+l),
		media: metricValue(m, "coop_p2p_server_media_bytes_total"+l), control: metricValue(m, "coop_p2p_server_control_bytes_total"+l)}
}

// redisFigures are redis-server's INFO stats counters the benchmark reads.
type redisFigures struct{ commands, in, out float64 }

func readRedisFigures(t *testing.T, rc *redis.Client) redisFigures {
	t.Helper()
	info, err := rc.Info(context.Background(), "stats").Result()
	require.NoError(t, err)
	var f redisFigures
	fields := map[string]*float64{"total_commands_processed:": &f.commands,
		"total_net_input_bytes:": &f.in, "total_net_output_bytes:": &f.out}
	seen := 0
	for _, line := range strings.Split(info, "\n") {
		for prefix, dst := range fields {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
				_, err := fmt.Sscan(v, dst)
				require.NoError(t, err)
				seen++
			}
		}
	}
	require.Equal(t, len(fields), seen, "redis INFO stats: %s", info)
	return f
}

// TestBenchClusterNodes runs, for 1, 2 and 3 nodes (a real redis-server,
// one origin and 0, 1 or 2 edges relaying it, real plugins), ffmpeg
// publishing 320x240 to the origin and clusterBenchPerNode coop-peers on
// each node, and measures over clusterBenchWindow each node's peers,
// server egress and control bytes per peer, and Redis commands/s
// (make bench: COOP_BENCH=1) → bench/results/cluster.{md,json}.
func TestBenchClusterNodes(t *testing.T) {
	if os.Getenv("COOP_BENCH") == "" {
		t.Skip("benchmark: run with make bench (COOP_BENCH=1)")
	}
	requireTool(t, "ffmpeg")
	var runs []clusterRunFigures
	for nodes := 1; nodes <= 3; nodes++ {
		t.Run(fmt.Sprintf("nodes=%d", nodes), func(t *testing.T) { runs = append(runs, clusterBench(t, nodes)) })
	}
	require.Len(t, runs, 3)
	writeClusterBench(t, runs)
}

func clusterBench(t *testing.T, nodes int) clusterRunFigures {
	srv := redistest.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rc.Close() })
	// The cluster's default heartbeat and TTL (the Redis figures depend
	// on them), not the tests' short ones.
	env := func(id, role string) []string {
		return []string{"COOP_CLUSTER_REDIS=" + srv.Addr, "COOP_CLUSTER_NODEID=" + id, "COOP_CLUSTER_ROLE=" + role}
	}
	origin, originPeer := startP2POrigin(t, env("origin", "origin")...)
	publishRTMP(t, origin.rtmpURL("cbench"), clusterBenchWindow+120*time.Second, "320x240", "-preset", "ultrafast", "-g", "30")
	origin.waitPublishing(t, clusterBenchStream)
	procs, ids, addrs := []*originProc{origin}, []string{"origin"}, []string{originPeer}
	for i := 1; i < nodes; i++ {
		id := fmt.Sprintf("edge-%c", 'a'+i-1)
		e, peer := startP2POrigin(t, env(id, "edge")...)
		procs, ids, addrs = append(procs, e), append(ids, id), append(addrs, peer)
	}
	for _, e := range procs[1:] {
		waitFor(t, 40*time.Second, "the edge relays the origin's stream", func() bool {
			r := e.edgeRelays()
			return len(r) == 1 && r[0].Stream == clusterBenchStream && r[0].State == "relaying" && r[0].Segments >= 2
		})
	}
	var peers []*peerProc
	for _, a := range addrs {
		for range clusterBenchPerNode {
			peers = append(peers, startPeer(t, a, clusterBenchStream, "-rtsp", ""))
		}
	}
	waitFor(t, 90*time.Second, "every coop-peer playing", func() bool {
		for _, p := range peers {
			if st, ok := p.edgeStats(); !ok || st.State != "playing" || st.Due < 6 {
				return false
			}
		}
		return true
	})
	before := make([]nodeCounters, len(procs))
	for i, o := range procs {
		before[i] = readNodeCounters(t, o)
	}
	redis0, bytes0, t0 := readRedisFigures(t, rc), origin.segmentBytes(t, clusterBenchStream), time.Now()
	// The measurement window (not a synchronisation).
	time.Sleep(clusterBenchWindow)
	after := make([]nodeCounters, len(procs))
	for i, o := range procs {
		after[i] = readNodeCounters(t, o)
	}
	redis1, bytes1 := readRedisFigures(t, rc), origin.segmentBytes(t, clusterBenchStream)
	dt := time.Since(t0).Seconds()
	run := clusterRunFigures{Nodes: nodes, CoopPeers: len(peers), WindowS: dt, MinContinuity: 1,
		StreamBps: float64(bytes1-bytes0) / dt, RedisCmdsPerS: (redis1.commands - redis0.commands) / dt,
		RedisInBps: (redis1.in - redis0.in) / dt, RedisOutBps: (redis1.out - redis0.out) / dt}
	require.Positive(t, run.StreamBps)
	for i, o := range procs {
		f := clusterNodeFigures{Node: ids[i], Role: "edge", CoopPeer: clusterBenchPerNode, Peers: int(after[i].peers),
			EgressBps:  (after[i].media + after[i].control - before[i].media - before[i].control) / dt,
			ControlBps: (after[i].control - before[i].control) / dt}
		f.Copies = f.EgressBps / run.StreamBps
		if i == 0 {
			f.Role = "origin"
		}
		if f.Peers > 0 {
			f.ControlPerPeerBps = f.ControlBps / float64(f.Peers)
		}
		require.GreaterOrEqual(t, f.Peers, clusterBenchPerNode, "node %s: %+v (%s)", ids[i], f, o.httpAddr)
		run.PerNode = append(run.PerNode, f)
	}
	for _, p := range peers {
		st, ok := p.edgeStats()
		require.True(t, ok)
		require.Zero(t, st.BadData)
		run.MeanContinuity += st.Continuity / float64(len(peers))
		run.MinContinuity = min(run.MinContinuity, st.Continuity)
	}
	t.Logf("cluster bench: %+v", run)
	return run
}

func writeClusterBench(t *testing.T, runs []clusterRunFigures) {
	dir := resultsDir(t)
	js, err := json.MarshalIndent(map[string]any{
		"parameters": map[string]any{"coopPeersPerNode": clusterBenchPerNode, "windowSeconds": clusterBenchWindow.Seconds(),
			"video": "ffmpeg testsrc 320x240 x264 ultrafast -g 30, RTMP to the origin", "host": "loopback, 2 shared cores",
			"cluster": "default heartbeat and TTL"},
		"runs": runs,
	}, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cluster.json"), append(js, '\n'), 0o644))
	var md strings.Builder
	fmt.Fprintf(&md, "# Cluster: peers per node and control traffic per peer (1, 2, 3 nodes)\n\n")
	fmt.Fprintf(&md, "Real processes on loopback (`TestBenchClusterNodes`, `make bench`): a redis-server, one origin and "+
		"0/1/2 edges relaying it (real plugins), ffmpeg publishing 320x240 ultrafast to the origin, %d coop-peers per node, "+
		"the default cluster.heartbeat and cluster.ttl; figures over a %.0f s window once every peer plays. "+
		"Peers = coop_p2p_peers (on the origin: its coop-peers and the edges' relays). "+
		"Egress and control = the node's server partner (coop_p2p_server_{media,control}_bytes_total); "+
		"copies = egress over the stream's rate (the origin's segment bytes); Redis figures from INFO, cluster-wide.\n\n",
		clusterBenchPerNode, clusterBenchWindow.Seconds())
	fmt.Fprintf(&md, "| nodes | node | peers | egress kB/s | copies | control B/s | control B/s per peer |\n|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		for _, n := range r.PerNode {
			fmt.Fprintf(&md, "| %d | %s (%s) | %d | %.1f | %.2f | %.0f | %.0f |\n", r.Nodes, n.Node, n.Role,
				n.Peers, n.EgressBps/1000, n.Copies, n.ControlBps, n.ControlPerPeerBps)
		}
	}
	fmt.Fprintf(&md, "\n| nodes | coop-peers | stream kB/s | Redis cmds/s | Redis in B/s | Redis out B/s | continuity min / mean |\n|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		fmt.Fprintf(&md, "| %d | %d | %.1f | %.1f | %.0f | %.0f | %.3f / %.3f |\n", r.Nodes, r.CoopPeers, r.StreamBps/1000,
			r.RedisCmdsPerS, r.RedisInBps, r.RedisOutBps, r.MinContinuity, r.MeanContinuity)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cluster.md"), []byte(md.String()), 0o644))
	t.Logf("\n%s", md.String())
}
