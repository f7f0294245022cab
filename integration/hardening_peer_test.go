package integration

import (
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// peerState is the part of coop-peer's /stats these tests read.
type peerState struct {
	State      string `json:"state"`
	Restarts   uint64 `json:"streamRestarts"`
	Due        uint64 `json:"due"`
	BaseOnTime uint64 `json:"baseOnTime"`
}

func (p *peerProc) state() (peerState, error) {
	var st peerState
	resp, err := http.Get("http://" + p.http + "/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// A publisher that comes back after the grace period starts a new
// instance of the stream (segments from 0, new epoch): a connected
// coop-peer follows it and plays again without being restarted.
func TestP2PPeerPlaysAgainAfterTheStreamRestarts(t *testing.T) {
	requireTool(t, "ffmpeg")
	o, peerAddr := startP2POrigin(t, "COOP_PUBLISH_GRACEPERIOD=1s")
	pub := publishRTMP(t, o.rtmpURL("again"), 10*time.Second, "320x240", "-b:v", "300k", "-g", "30")
	o.waitPublishing(t, "live/again")
	peer := startPeer(t, peerAddr, "live/again")
	waitFor(t, 30*time.Second, "the peer playing", func() bool {
		st, err := peer.state()
		return err == nil && st.State == "playing"
	})
	_ = pub.wait(t, 30*time.Second)
	waitFor(t, 20*time.Second, "the peer noticing the stream stopped", func() bool {
		st, err := peer.state()
		return err == nil && st.State != "playing"
	})
	publishRTMP(t, o.rtmpURL("again"), 25*time.Second, "320x240", "-b:v", "300k", "-g", "30")
	o.waitPublishing(t, "live/again")
	waitFor(t, 30*time.Second, "the same peer playing the new instance", func() bool {
		st, err := peer.state()
		return err == nil && st.State == "playing" && st.Due >= 4
	})
	st, err := peer.state()
	require.NoError(t, err)
	t.Logf("after the restart: state %q, %d restarts seen, %d/%d on time", st.State, st.Restarts, st.BaseOnTime, st.Due)
	require.Nil(t, peer.cmd.ProcessState, "the peer was not restarted")
}

// Connections that never send a Hello, from one address, cannot hold the
// plugin's pending-handshake slots: a real coop-peer joins meanwhile.
func TestP2PHandshakeFloodLeavesRoomForARealPeer(t *testing.T) {
	requireTool(t, "ffmpeg")
	o, peerAddr := startP2POrigin(t)
	publishRTMP(t, o.rtmpURL("flood"), 40*time.Second, "320x240", "-b:v", "300k", "-g", "30")
	o.waitPublishing(t, "live/flood")

	// The flood: keep up to 300 silent connections open from 127.0.0.2,
	// replacing those the plugin drops; at most 1500 over 12 s.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	opened := 0
	for w := 0; w < 300; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 2 * time.Second}
			for {
				mu.Lock()
				if opened >= 1500 {
					mu.Unlock()
					return
				}
				opened++
				mu.Unlock()
				c, err := d.Dial("tcp", peerAddr)
				if err == nil {
					_ = c.SetReadDeadline(time.Now().Add(12 * time.Second))
					buf := make([]byte, 16)
					_, _ = c.Read(buf) // held until the plugin drops it
					c.Close()
				}
				select { // pacing of the attack (~150 connections/s), not synchronisation
				case <-stop:
					return
				case <-time.After(2 * time.Second):
				}
			}
		}()
	}
	t.Cleanup(func() { close(stop); wg.Wait() })
	waitFor(t, 10*time.Second, "the flood holding connections", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return opened >= 300
	})
	joinAt := time.Now()
	peer := startPeer(t, peerAddr, "live/flood")
	waitFor(t, 20*time.Second, "a real peer joining during the flood", func() bool { return peer.playing(2) })
	t.Logf("the real peer played %v after it started, during the flood (%d connections opened)", time.Since(joinAt).Round(100*time.Millisecond), opened)
	require.Contains(t, o.metrics(t), `coop_p2p_rejected_total{reason="pending_per_ip"}`)
}
