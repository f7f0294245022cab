package integration

import (
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/tcpnode"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// failoverStats mirrors the fields of coop-peer's /stats this file reads.
type failoverStats struct {
	State           string  `json:"state"`
	ServerConnected bool    `json:"serverConnected"`
	Server          string  `json:"server"`
	ServerConnects  uint64  `json:"serverConnects"`
	ServerRedirects uint64  `json:"serverRedirects"`
	Partners        int     `json:"partners"`
	Due             uint64  `json:"due"`
	BaseOnTime      uint64  `json:"baseOnTime"`
	Continuity      float64 `json:"continuity"`
	FromPeers       uint64  `json:"usefulFromPeers"`
	BadData         uint64  `json:"badData"`
}

func (p *peerProc) failoverStats() (failoverStats, bool) {
	var st failoverStats
	return st, tryGetJSON("http://"+p.http+"/stats", &st) == nil
}

// startRedirector is a hostile-free fake node on a raw socket: it reads
// each connection's Hello and answers with a peer-protocol redirect to
// target (what a node at its load limit sends). It returns its address
// and the count of connections it redirected.
func startRedirector(t *testing.T, target string) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := tcpnode.ReadHello(nc); err != nil {
					return
				}
				if _, err := nc.Write(wire.Marshal(&wire.Reject{Reason: wire.RejectRedirect, Addr: target})); err == nil {
					n.Add(1)
				}
			}()
		}
	}()
	return ln.Addr().String(), &n
}

// TestCoopPeerFailsOverBetweenServerAddresses runs the real origin and
// plugin and three real coop-peers given several --server addresses: one
// whose first address is dead (comma-separated list), one with the
// flag repeated, one whose only address is a node that redirects it to
// the plugin. All three play from the plugin. Then the plugin dies
// (SIGKILL: every server connection drops at once) and the origin
// restarts it on the same port under the same epoch: the peers keep
// their peer partners while they have no server, go round their address
// lists with backoff, and are playing again from the restarted server,
// with base continuity over the run and no bad data.
func TestCoopPeerFailsOverBetweenServerAddresses(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	o, peerAddr := startP2POrigin(t)
	publishRTMP(t, o.rtmpURL("failover"), 75*time.Second, "320x240")
	o.waitPublishing(t, "live/failover")
	dead := freeAddr(t) // nobody listens there
	redir, redirected := startRedirector(t, peerAddr)

	peers := []*peerProc{
		startPeer(t, dead+","+peerAddr, "live/failover"),
		startPeer(t, dead, "live/failover", "-server", peerAddr),
		startPeer(t, redir, "live/failover"),
	}
	waitFor(t, 40*time.Second, "3 peers playing from the plugin", func() bool {
		for _, p := range peers {
			st, ok := p.failoverStats()
			if !ok || st.State != "playing" || st.Server != peerAddr || st.Due < 6 {
				return false
			}
		}
		return true
	})
	for i, p := range peers {
		st, _ := p.failoverStats()
		require.Equal(t, uint64(1), st.ServerConnects, "peer %d: one server connection so far", i)
	}
	st, _ := peers[2].failoverStats()
	require.Equal(t, uint64(1), st.ServerRedirects, "the redirected peer followed one redirect")
	require.Equal(t, int64(1), redirected.Load())
	waitFor(t, 30*time.Second, "peers partnered with each other", func() bool {
		for _, p := range peers {
			if st, ok := p.failoverStats(); !ok || st.Partners < 1 {
				return false
			}
		}
		return true
	})

	before := make([]failoverStats, len(peers))
	for i, p := range peers {
		before[i], _ = p.failoverStats()
	}
	pid := o.p2p(t).PID
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	lost := time.Now()

	// While a peer has no server it keeps its peer partners (the engine
	// and the partner connections are not torn down).
	keptPartners := make([]bool, len(peers))
	var back time.Duration
	waitFor(t, 40*time.Second, "every peer connected to the restarted server and playing again", func() bool {
		all := true
		for i, p := range peers {
			st, ok := p.failoverStats()
			if !ok {
				all = false
				continue
			}
			if !st.ServerConnected && st.Partners > 0 {
				keptPartners[i] = true
			}
			if !st.ServerConnected || st.ServerConnects < 2 || st.State != "playing" || st.Due < before[i].Due+6 {
				all = false
			}
		}
		if all {
			back = time.Since(lost)
		}
		return all
	})
	t.Logf("all 3 peers playing from the restarted server %.1f s after the plugin's SIGKILL", back.Seconds())
	// Keep playing a little, then judge the whole run.
	waitFor(t, 30*time.Second, "10 more segments played", func() bool {
		for i, p := range peers {
			if st, ok := p.failoverStats(); !ok || st.Due < before[i].Due+20 {
				return false
			}
		}
		return true
	})
	for i, p := range peers {
		st, ok := p.failoverStats()
		require.True(t, ok)
		window := float64(st.BaseOnTime-before[i].BaseOnTime) / float64(max(st.Due-before[i].Due, 1))
		t.Logf("peer %d: base continuity %.3f over the %d segments since the kill (run %.3f), server %s, connects %d, partners kept while serverless: %v",
			i, window, st.Due-before[i].Due, st.Continuity, st.Server, st.ServerConnects, keptPartners[i])
		require.Equal(t, peerAddr, st.Server)
		require.Zero(t, st.BadData)
		require.GreaterOrEqual(t, st.Continuity, 0.9, "peer %d: base continuity over the run", i)
	}
	sawKept := false
	for _, k := range keptPartners {
		sawKept = sawKept || k
	}
	require.True(t, sawKept, "a peer without its server still had its peer partners (sampled)")
	for _, p := range peers {
		require.NotContains(t, p.out.String(), "panic")
		require.True(t, strings.Contains(p.out.String(), "server partner lost"), "the peer logged the loss")
	}
}
