package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/cluster/redistest"
)

// edgeStatus mirrors an edge's /v1/edge (the fields tests read).
type edgeStatus struct {
	Stream   string `json:"stream"`
	Origin   string `json:"origin"`
	Upstream string `json:"upstream"`
	State    string `json:"state"`
	Epoch    uint64 `json:"epoch"`
	Segments uint64 `json:"segments"`
	Gaps     uint64 `json:"gaps"`
	Attempts uint64 `json:"attempts"`
}

// edgeP2P mirrors the stream figures of /v1/p2p an edge test reads.
type edgeP2P struct {
	StreamPublicKey string `json:"streamPublicKey"`
	Streams         []struct {
		Stream               string
		Peers                int
		Epoch                uint64
		StreamKey            string
		Upstream             string
		ServerMediaBytes     uint64
		RelayBytesFromServer uint64
		RelayBytesFromPeers  uint64
		RelayConnected       bool
		RelayPartners        int
	} `json:"streams"`
}

// edgePeer mirrors the coop-peer /stats fields an edge test reads.
type edgePeer struct {
	State           string  `json:"state"`
	ServerConnected bool    `json:"serverConnected"`
	Server          string  `json:"server"`
	Epoch           uint64  `json:"epoch"`
	Partners        int     `json:"partners"`
	Due             uint64  `json:"due"`
	BaseOnTime      uint64  `json:"baseOnTime"`
	Continuity      float64 `json:"continuity"`
	FromServer      uint64  `json:"usefulFromServer"`
	FromPeers       uint64  `json:"usefulFromPeers"`
	BadData         uint64  `json:"badData"`
	Banned          uint64  `json:"banned"`
}

// clusterNodeEnv is a cluster node's settings: a short heartbeat and TTL.
func clusterNodeEnv(redis, id, role string) []string {
	return []string{"COOP_CLUSTER_REDIS=" + redis, "COOP_CLUSTER_NODEID=" + id, "COOP_CLUSTER_ROLE=" + role,
		"COOP_CLUSTER_HEARTBEAT=500ms", "COOP_CLUSTER_TTL=2s"}
}

func (o *originProc) edgeRelays() []edgeStatus {
	var st []edgeStatus
	if tryGetJSON("http://"+o.httpAddr+"/v1/edge", &st) != nil {
		return nil
	}
	return st
}

func (o *originProc) edgeP2P() (edgeP2P, bool) {
	var st edgeP2P
	return st, tryGetJSON("http://"+o.httpAddr+"/v1/p2p", &st) == nil
}

// segmentBytes is the bytes of every segment the origin cut for path.
func (o *originProc) segmentBytes(t *testing.T, path string) uint64 {
	t.Helper()
	for _, s := range o.streams(t) {
		if s.Path == path {
			var n uint64
			for _, b := range s.LayerBytes {
				n += b
			}
			return n
		}
	}
	return 0
}

// segmentCount is the segments the origin cut for path.
func (o *originProc) segmentCount(t *testing.T, path string) uint64 {
	t.Helper()
	for _, s := range o.streams(t) {
		if s.Path == path {
			return s.Segments
		}
	}
	return 0
}

func (p *peerProc) edgeStats() (edgePeer, bool) {
	var st edgePeer
	return st, tryGetJSON("http://"+p.http+"/stats", &st) == nil
}

// p2pPort is the port a coop-peer listens on for partners (from its log).
func (p *peerProc) p2pPort(t *testing.T) int {
	t.Helper()
	out := p.out.String()
	i := strings.Index(out, "p2p_listen=")
	require.GreaterOrEqual(t, i, 0, "coop-peer logs its partner port")
	rest := out[i+len("p2p_listen="):]
	rest = rest[:strings.IndexAny(rest, " \n")]
	_, port, ok := strings.Cut(rest, "127.0.0.1:")
	require.True(t, ok, rest)
	n, err := strconv.Atoi(port)
	require.NoError(t, err)
	return n
}

// establishedPeers is the remote ports of pid's established TCP
// connections (from /proc: its socket inodes matched against
// /proc/net/tcp), so a test sees who is connected to whom without
// asking the processes.
func establishedPeers(pid int) map[int]bool {
	inodes := map[string]bool{}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		l, err := os.Readlink(dir + "/" + e.Name())
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	out := map[int]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			// sl local rem st ... inode (field 9)
			if len(fs) < 10 || fs[3] != "01" || !inodes[fs[9]] {
				continue
			}
			if i := strings.LastIndexByte(fs[2], ':'); i > 0 {
				if port, err := strconv.ParseInt(fs[2][i+1:], 16, 32); err == nil {
					out[int(port)] = true
				}
			}
		}
		fh.Close()
	}
	return out
}

// partnered tells whether a and b hold a connection to each other's
// partner port.
func partnered(a, b *peerProc, portA, portB int) bool {
	return establishedPeers(a.cmd.Process.Pid)[portB] || establishedPeers(b.cmd.Process.Pid)[portA]
}

// TestEdgesRelayTheOriginsSwarm runs a real redis-server, one origin and
// two edges (cluster.role: edge), each with its real plugin; ffmpeg
// publishes to the origin only. Each edge's plugin relays the origin's
// swarm as a high-capacity peer and re-serves the origin's signed
// segments; then an ffmpeg RTSP reader on each edge and an HLS reader on
// one decode the relayed stream with no error; coop-peers attached to the edges play it under
// the origin's epoch and key with no bad data; the origin's server
// partner sends about one copy of each segment per edge; a peer attached
// to edge A partners with one attached to edge B, and the two edges'
// relays partner each other (seen in /proc); and
// when edge A is SIGKILLed its peers fail over to edge B (same key, same
// epoch: no restart) and play on. A Redis restart meanwhile stops no
// relay, and the registry is rebuilt. Last the origin dies: edge B shows
// its relay disconnected, then stops relaying.
//
// Serial: it runs 3 origins, 3 plugins, 4 peers and 3 ffmpeg processes,
// and measures how soon the killed edge's peers play again.
func TestEdgesRelayTheOriginsSwarm(t *testing.T) { edgeScenario(t, 2) }

// TestBenchEdgesTwelvePeers is the scenario of issue 15 with 12
// coop-peers, 6 per edge (make bench: COOP_BENCH=1).
func TestBenchEdgesTwelvePeers(t *testing.T) {
	if os.Getenv("COOP_BENCH") == "" {
		t.Skip("benchmark: run with make bench (COOP_BENCH=1)")
	}
	edgeScenario(t, 6)
}

// edgeScenario runs one origin, two edges and perEdge coop-peers on each.
func edgeScenario(t *testing.T, perEdge int) {
	requireTool(t, "ffmpeg")
	srv := redistest.Start(t)
	const stream = "live/edge"
	origin, _ := startP2POrigin(t, clusterNodeEnv(srv.Addr, "origin", "origin")...)
	edgeA, peerA := startP2POrigin(t, clusterNodeEnv(srv.Addr, "edge-a", "edge")...)
	edgeB, peerB := startP2POrigin(t, clusterNodeEnv(srv.Addr, "edge-b", "edge")...)
	publishRTMP(t, origin.rtmpURL("edge"), 60*time.Second, "320x240", "-preset", "ultrafast", "-g", "30")
	origin.waitPublishing(t, stream)

	for _, e := range []*originProc{edgeA, edgeB} {
		waitFor(t, 30*time.Second, "the edge relays the origin's stream", func() bool {
			r := e.edgeRelays()
			return len(r) == 1 && r[0].Stream == stream && r[0].Origin == "origin" && r[0].State == "relaying" && r[0].Segments >= 2
		})
		e.waitPublishing(t, stream)
	}
	originKey := origin.p2p(t).StreamPublicKey
	var epoch uint64
	t.Cleanup(func() {
		if t.Failed() {
			for _, o := range []*originProc{origin, edgeA, edgeB} {
				st, _ := o.edgeP2P()
				t.Logf("/v1/p2p of %s: %+v; /v1/edge: %+v", o.httpAddr, st, o.edgeRelays())
			}
		}
	})
	waitFor(t, 20*time.Second, "the edges' swarms serve the origin's key and epoch", func() bool {
		o, ok := origin.edgeP2P()
		if !ok || len(o.Streams) != 1 || o.Streams[0].Epoch == 0 {
			return false
		}
		epoch = o.Streams[0].Epoch
		for _, e := range []*originProc{edgeA, edgeB} {
			st, ok := e.edgeP2P()
			if !ok || len(st.Streams) != 1 || st.Streams[0].Epoch != epoch || st.Streams[0].StreamKey != originKey ||
				!st.Streams[0].RelayConnected || st.StreamPublicKey == originKey {
				return false
			}
		}
		return true
	})
	waitFor(t, 10*time.Second, "the edge's relay metrics", func() bool {
		m, err := metricsText(edgeB.httpAddr)
		return err == nil && strings.Contains(m, "coop_edge_relays 1") &&
			strings.Contains(m, `coop_p2p_relay_connected{stream="live/edge"} 1`) &&
			strings.Contains(m, `coop_edge_relay_segments_total{stream="live/edge"}`)
	})
	registryLists := func() bool {
		var v struct {
			Streams []struct {
				Name   string   `json:"name"`
				Origin string   `json:"origin"`
				Edges  []string `json:"edges"`
			} `json:"streams"`
		}
		return tryGetJSON("http://"+edgeA.httpAddr+"/v1/cluster", &v) == nil && len(v.Streams) == 1 &&
			v.Streams[0].Origin == "origin" && strings.Join(v.Streams[0].Edges, ",") == "edge-a,edge-b"
	}
	waitFor(t, 20*time.Second, "the registry lists both edges for the stream", registryLists)

	// RTSP readers on both edges and an HLS reader on edge B while the
	// peers start.
	var wg sync.WaitGroup
	results := make([]playResult, 2)
	for i, e := range []*originProc{edgeA, edgeB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			results[i] = play(ctx, e.rtspURL("edge"), "tcp", 6*time.Second)
		}()
	}
	var hls playResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		hls = playWith(ctx, edgeB.hlsURL("edge"), 6*time.Second, nil)
	}()
	// Two peers per edge, each given the other edge as its second server.
	var onA, onB []*peerProc
	for range perEdge {
		onA = append(onA, startPeer(t, peerA+","+peerB, stream, "-rtsp", ""))
		onB = append(onB, startPeer(t, peerB+","+peerA, stream, "-rtsp", ""))
	}
	all := append(append([]*peerProc{}, onA...), onB...)
	wg.Wait()
	for i, r := range results {
		require.NoError(t, r.err, "RTSP reader on edge %d: %v", i, r.errors)
		require.Empty(t, r.errors, "RTSP reader on edge %d decodes the relayed stream with no error", i)
		require.Greater(t, r.frames, 60, "RTSP reader on edge %d", i)
		t.Logf("RTSP reader on edge %d: %d frames in 6 s, 0 errors", i, r.frames)
	}
	requireCleanPlay(t, hls, 120)
	t.Logf("HLS reader on edge 1: %d frames, 0 errors", hls.frames)
	waitFor(t, 60*time.Second, "every peer playing from its edge", func() bool {
		for _, p := range all {
			st, ok := p.edgeStats()
			if !ok || st.State != "playing" || st.Due < 6 {
				return false
			}
		}
		return true
	})
	for i, p := range all {
		st, _ := p.edgeStats()
		want := peerA
		if i >= perEdge {
			want = peerB
		}
		require.Equal(t, want, st.Server, "peer %d plays from its own edge", i)
		require.Equal(t, epoch, st.Epoch, "peer %d follows the origin's epoch", i)
		require.Zero(t, st.BadData, "peer %d", i)
		require.Zero(t, st.Banned, "peer %d", i)
	}

	// Copies the origin's server partner sends, over a window after
	// warm-up: about one per edge.
	ports := make([]int, len(all))
	for i, p := range all {
		ports[i] = p.p2pPort(t)
	}
	crossed := ""
	waitFor(t, 30*time.Second, "a peer on edge A partnered with a peer on edge B", func() bool {
		for i, a := range onA {
			for j, b := range onB {
				if partnered(a, b, ports[i], ports[perEdge+j]) {
					crossed = fmt.Sprintf("peer A%d <-> peer B%d", i, j)
					return true
				}
			}
		}
		return false
	})
	t.Logf("cross-edge partnership: %s", crossed)
	// The edges' relays are high-capacity peers of the origin's swarm:
	// they partner each other.
	relayPort := func(e *originProc) int {
		out := e.out.String()
		i := strings.Index(out, "relaying the upstream's swarm")
		require.GreaterOrEqual(t, i, 0)
		rest := out[i:]
		j := strings.Index(rest, "listen=")
		require.GreaterOrEqual(t, j, 0)
		addr := rest[j+len("listen="):]
		addr = addr[:strings.IndexAny(addr, " \n")]
		_, port, _ := strings.Cut(addr, "127.0.0.1:")
		n, err := strconv.Atoi(port)
		require.NoError(t, err, addr)
		return n
	}
	rA, rB := relayPort(edgeA), relayPort(edgeB)
	pluginA, pluginB := edgeA.p2p(t).PID, edgeB.p2p(t).PID
	waitFor(t, 30*time.Second, "the two edges' relays partner each other", func() bool {
		return establishedPeers(pluginA)[rB] || establishedPeers(pluginB)[rA]
	})
	o0, _ := origin.edgeP2P()
	seg0 := origin.segmentBytes(t, stream)
	var relay0 [2]uint64
	for i, e := range []*originProc{edgeA, edgeB} {
		st, _ := e.edgeP2P()
		relay0[i] = st.Streams[0].RelayBytesFromServer
	}
	n0 := origin.segmentCount(t, stream)
	waitFor(t, 30*time.Second, "a measuring window of 8 segments", func() bool { return origin.segmentCount(t, stream) >= n0+8 })
	o1, _ := origin.edgeP2P()
	seg1 := origin.segmentBytes(t, stream)
	cut := float64(seg1 - seg0)
	copies := float64(o1.Streams[0].ServerMediaBytes-o0.Streams[0].ServerMediaBytes) / cut
	t.Logf("origin server partner: %.2f copies per segment for 2 edges (%d bytes of segments cut in the window)", copies, seg1-seg0)
	for i, e := range []*originProc{edgeA, edgeB} {
		st, _ := e.edgeP2P()
		s := st.Streams[0]
		t.Logf("edge %d: relay got %.2f copies from the origin's server, %d bytes from peers, %d peer partners there; %d peers attached",
			i, float64(s.RelayBytesFromServer-relay0[i])/cut, s.RelayBytesFromPeers, s.RelayPartners, s.Peers)
	}
	require.LessOrEqual(t, copies, 2.6, "the origin sends each edge about one copy per segment")

	// Redis restarts, empty: the relays go on (no new attempt) and the
	// next heartbeats rebuild the registry.
	relaysBefore := [][]edgeStatus{edgeA.edgeRelays(), edgeB.edgeRelays()}
	srv.Restart()
	waitFor(t, 20*time.Second, "the registry rebuilt after the Redis restart", registryLists)
	for i, e := range []*originProc{edgeA, edgeB} {
		waitFor(t, 20*time.Second, "the edge's relay goes on across the Redis restart", func() bool {
			r := e.edgeRelays()
			return len(r) == 1 && r[0].State == "relaying" && r[0].Segments >= relaysBefore[i][0].Segments+4
		})
		require.Equal(t, relaysBefore[i][0].Attempts, e.edgeRelays()[0].Attempts, "edge %d: the relay was not restarted", i)
	}

	// Edge A dies (origin and plugin, SIGKILL): its peers fail over to edge B.
	before := make([]edgePeer, len(onA))
	for i, p := range onA {
		before[i], _ = p.edgeStats()
	}
	require.NoError(t, syscall.Kill(-edgeA.cmd.Process.Pid, syscall.SIGKILL))
	killed := time.Now()
	waitFor(t, 30*time.Second, "edge A's peers playing again from edge B", func() bool {
		for i, p := range onA {
			st, ok := p.edgeStats()
			if !ok || !st.ServerConnected || st.Server != peerB || st.State != "playing" || st.Due < before[i].Due+4 {
				return false
			}
		}
		return true
	})
	t.Logf("edge A's peers play from edge B %.1f s after its SIGKILL", time.Since(killed).Seconds())
	var due, onTime uint64
	for i, p := range all {
		st, _ := p.edgeStats()
		require.Equal(t, epoch, st.Epoch, "peer %d: the same stream instance on every node (no restart)", i)
		require.Zero(t, st.BadData, "peer %d", i)
		t.Logf("peer %d: base continuity %.3f (%d/%d), %d bytes from peers, %d from servers", i, st.Continuity, st.BaseOnTime, st.Due, st.FromPeers, st.FromServer)
		due, onTime = due+st.Due, onTime+st.BaseOnTime
	}
	t.Logf("base continuity over the run, all peers: %.3f (%d/%d)", float64(onTime)/float64(due), onTime, due)
	require.GreaterOrEqual(t, float64(onTime)/float64(due), 0.98, "base continuity over the run, the edge's SIGKILL included")

	// The origin dies: edge B reports its relay disconnected at once, and
	// stops relaying once the stream has left the registry (TTL) and the
	// grace (TTL) has passed.
	require.NoError(t, syscall.Kill(-origin.cmd.Process.Pid, syscall.SIGKILL))
	waitFor(t, 20*time.Second, "edge B reports the relay's upstream lost", func() bool {
		st, ok := edgeB.edgeP2P()
		return ok && len(st.Streams) == 1 && !st.Streams[0].RelayConnected
	})
	waitFor(t, 30*time.Second, "edge B stops relaying the stream no origin serves", func() bool {
		r := edgeB.edgeRelays()
		return r != nil && len(r) == 0
	})
	require.Contains(t, edgeB.out.String(), "no origin serves the stream any more: relay stopped")
}

// TestAnEdgeWithoutThePluginRefusesToStart: the relay runs in the plugin,
// so an edge with the plugin off exits with a clear error instead of
// serving nothing.
func TestAnEdgeWithoutThePluginRefusesToStart(t *testing.T) {
	t.Parallel()
	env := append([]string{"COOP_RTMP_ADDRESS=" + freeAddr(t), "COOP_RTSP_ADDRESS=" + freeAddr(t), "COOP_HTTP_ADDRESS=" + freeAddr(t),
		"COOP_HLS_ADDRESS=" + freeAddr(t), "COOP_PLUGIN_ENABLED=false"}, clusterNodeEnv("127.0.0.1:1", "edge-x", "edge")...)
	p := startProcess(t, env, binDir+"/coop-origin")
	require.Error(t, p.wait(t, 20*time.Second), "the edge exits")
	require.Contains(t, p.out.String(), "cluster.role: edge needs the P2P plugin")
}
