package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// rtcStats mirrors coop-peer's /stats "rtc" object.
type rtcStats struct {
	BytesIn      uint64  `json:"bytesIn"`
	BytesOut     uint64  `json:"bytesOut"`
	Conns        int64   `json:"conns"`
	Dials        uint64  `json:"dials"`
	DialFailures uint64  `json:"dialFailures"`
	Accepted     uint64  `json:"accepted"`
	SetupMeanMs  float64 `json:"setupMeanMs"`
}

// rtcPeerStats is /stats with its rtc part.
func (p *peerProc) rtcStats() (peerStats, rtcStats, error) {
	var body struct {
		RTC *rtcStats `json:"rtc"`
	}
	st, err := p.tryStats()
	if err != nil {
		return st, rtcStats{}, err
	}
	resp, err := http.Get("http://" + p.http + "/stats")
	if err != nil {
		return st, rtcStats{}, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return st, rtcStats{}, err
	}
	if body.RTC == nil {
		return st, rtcStats{}, fmt.Errorf("no rtc figures")
	}
	return st, *body.RTC, nil
}

// startRTCOrigin starts an origin with the plugin and its web port on
// free loopback ports; it returns the peer port and the signalling URL.
func startRTCOrigin(t *testing.T, env ...string) (*originProc, string, string) {
	t.Helper()
	web := freeAddr(t)
	o, peerAddr := startP2POrigin(t, append([]string{"COOP_PLUGIN_WEBADDRESS=" + web}, env...)...)
	waitFor(t, 20*time.Second, "the plugin's web port", func() bool {
		resp, err := http.Get("http://" + web + "/rtc/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return o, peerAddr, "ws://" + web + "/rtc/signal"
}

// cpuTicks is a process's user+system CPU time in clock ticks (/proc).
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return ut + st, nil
}

// rtcSwarm publishes a ~1 Mbit/s clip through an origin with the plugin
// and its web port, and starts two coop-peers speaking WebRTC to peers
// (with listen as their -listen: "" for WebRTC only) and one TCP-only
// coop-peer; it returns once all three play and the pair has a data
// channel open.
func rtcSwarm(t *testing.T, listen string, env ...string) (o *originProc, a, b, c *peerProc) {
	t.Helper()
	requireTool(t, "ffmpeg")
	// CBR with filler: the simple test pattern would take far less.
	clip := encodedClip(t, "320x240", 90, "-preset", "ultrafast", "-b:v", "900k", "-minrate", "900k",
		"-maxrate", "900k", "-bufsize", "450k", "-x264-params", "nal-hrd=cbr", "-g", "30")
	o, peerAddr, signalURL := startRTCOrigin(t, env...)
	publishClipRTMP(t, clip, o.rtmpURL("rtc"))
	o.waitPublishing(t, "live/rtc")
	rtcArgs := []string{"-rtc", signalURL, "-rtc-loopback", "-listen", listen}
	a = startPeer(t, peerAddr, "live/rtc", rtcArgs...)
	b = startPeer(t, peerAddr, "live/rtc", rtcArgs...)
	c = startPeer(t, peerAddr, "live/rtc") // TCP only
	waitFor(t, 40*time.Second, "3 peers playing, the WebRTC pair connected over a data channel", func() bool {
		for _, p := range []*peerProc{a, b, c} {
			if !p.playing(6) {
				return false
			}
		}
		for _, p := range []*peerProc{a, b} {
			_, r, err := p.rtcStats()
			if err != nil || r.Conns < 1 {
				return false
			}
		}
		return true
	})
	return o, a, b, c
}

var rtcNames = []string{"rtc A", "rtc B", "tcp C"}

// TestWebRTCPeersPlayAndSurviveAKilledPartner: two coop-peers speaking
// WebRTC to peers (also listening on TCP: "rtc:host:port", so the
// TCP-only third peer can dial them) join a stream published by ffmpeg
// through the origin and its real plugin; the pair partners over a data
// channel set up through the plugin's signalling on loopback host
// candidates, all three play (media over the channel is logged); then one of
// the pair is killed (SIGKILL: no goodbye, no SCTP abort) mid-stream, and
// its WebRTC partner and the TCP peer keep playing. The server's upload
// cap (2000 kbit/s, 2 copies for 3 peers) makes the peers feed each other.
func TestWebRTCPeersPlayAndSurviveAKilledPartner(t *testing.T) {
	t.Parallel()
	o, a, b, c := rtcSwarm(t, "127.0.0.1:0", "COOP_PLUGIN_UPLOADKBPS=2000")
	peers := []*peerProc{a, b, c}
	p2pBefore := o.p2p(t)
	before := make([]peerStats, 3)
	var cpuBefore [3]uint64
	for i, p := range peers {
		before[i] = p.stats(t)
		cpuBefore[i], _ = cpuTicks(p.cmd.Process.Pid)
	}
	window := time.Now()
	// 20 more segments (10 s) due at every peer. How much media crosses
	// the data channel depends on the parents the engine picks (the pair
	// may both take the TCP peer as parent): it is logged, not asserted;
	// control traffic alone (maps, pings, haves) is ~100 bytes/s.
	waitFor(t, 60*time.Second, "20 more segments at every peer", func() bool {
		for i, p := range peers {
			st, err := p.tryStats()
			if err != nil || st.Due < before[i].Due+20 {
				return false
			}
		}
		return true
	})
	elapsed := time.Since(window)
	p2pAfter := o.p2p(t)
	t.Logf("stream rate %.0f kbit/s pushed to the plugin over the %v window",
		float64(p2pAfter.BytesPushed-p2pBefore.BytesPushed)*8/1000/elapsed.Seconds(), elapsed.Round(time.Second))
	for i, p := range peers {
		st := p.stats(t)
		cont := float64(st.BaseOnTime-before[i].BaseOnTime) / float64(max(st.Due-before[i].Due, 1))
		cpu, _ := cpuTicks(p.cmd.Process.Pid)
		t.Logf("%s: continuity %.3f over %d segments, partners %d, from server %d B, from peers %d B, CPU %.1f%% of a core",
			rtcNames[i], cont, st.Due-before[i].Due, st.Partners, st.FromServer-before[i].FromServer,
			st.FromPeers-before[i].FromPeers, float64(cpu-cpuBefore[i])/elapsed.Seconds()) // USER_HZ 100
		require.GreaterOrEqual(t, cont, 0.95, "%s continuity over the window", rtcNames[i])
		require.Zero(t, st.BadData)
	}
	for _, p := range []*peerProc{a, b} {
		_, r, err := p.rtcStats()
		require.NoError(t, err)
		t.Logf("data channels: %d bytes in / %d out, %d conns, setup (offer to open channel) mean %.0f ms over %d dials (%d failed), %d accepted",
			r.BytesIn, r.BytesOut, r.Conns, r.SetupMeanMs, r.Dials, r.DialFailures, r.Accepted)
	}
	mid := []peerStats{b.stats(t), c.stats(t)}
	require.NoError(t, syscall.Kill(a.cmd.Process.Pid, syscall.SIGKILL))
	waitFor(t, 60*time.Second, "20 more segments due at B and C after A was killed", func() bool {
		for i, p := range []*peerProc{b, c} {
			st, err := p.tryStats()
			if err != nil || st.Due < mid[i].Due+20 {
				return false
			}
		}
		return true
	})
	for i, p := range []*peerProc{b, c} {
		st := p.stats(t)
		cont := float64(st.BaseOnTime-mid[i].BaseOnTime) / float64(max(st.Due-mid[i].Due, 1))
		t.Logf("%s after A was killed: continuity %.3f over %d segments, partners %d", rtcNames[i+1], cont,
			st.Due-mid[i].Due, st.Partners)
		require.GreaterOrEqual(t, cont, 0.9, "%s keeps playing after its WebRTC partner vanished", rtcNames[i+1])
	}
	_, r, err := b.rtcStats()
	require.NoError(t, err)
	t.Logf("rtc B after the kill: %d data channel conns, %d bytes in", r.Conns, r.BytesIn)
}
