package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/wire"
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
	t.Parallel()
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
	t.Parallel()
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
	// While the flood holds its connections, handshakes from another
	// address are admitted at once (before the per-IP cap, the flood held
	// every pending slot and each was closed unanswered).
	for i := range 5 {
		p, err := dialRawPeer(peerAddr, "live/flood", 0)
		require.NoError(t, err, "handshake %d during the flood", i)
		p.c.Close()
	}
	joinAt := time.Now()
	peer := startPeer(t, peerAddr, "live/flood")
	waitFor(t, 20*time.Second, "a real peer joining during the flood", func() bool { return peer.playing(2) })
	mu.Lock()
	n := opened
	mu.Unlock()
	t.Logf("the real peer played %v after it started, during the flood (%d connections opened)", time.Since(joinAt).Round(100*time.Millisecond), n)
	require.Contains(t, o.metrics(t), `coop_p2p_rejected_total{reason="pending_per_ip"}`)
}

// Publisher video settings: small, and the chaos harness's stream (whose
// larger chunks an attacker can make the server queue faster).
var (
	smallVideo = []string{"320x240", "-b:v", "300k", "-g", "30", "-preset", "ultrafast"}
	chaosVideo = []string{"640x360", "-b:v", "800k", "-bf", "3", "-g", "60", "-preset", "ultrafast"}
)

// hardeningEnv starts an origin with the real plugin, a publisher of video
// (segments of 500 ms) that outlives the test, and n canary coop-peers
// playing; the attacks of chaos_attacks_test.go take it as their env.
// originEnv goes to the origin, and so to the plugin it launches.
func hardeningEnv(t *testing.T, key string, canaries int, video []string, originEnv ...string) *chaosEnv {
	t.Helper()
	o, peerAddr := startP2POrigin(t, originEnv...)
	publishRTMP(t, o.rtmpURL(key), 90*time.Second, video[0], video[1:]...)
	o.waitPublishing(t, "live/"+key)
	env := &chaosEnv{t: t, o: o, peerAddr: peerAddr, stream: "live/" + key}
	for range canaries {
		env.canaries = append(env.canaries, startPeer(t, peerAddr, env.stream))
	}
	for _, c := range env.canaries {
		waitFor(t, 30*time.Second, "canary playing", func() bool { return c.playing(6) })
	}
	return env
}

// canaryCounts is one canary's due / on-time base-layer counters.
type canaryCounts struct{ due, onTime uint64 }

// underAttack runs attack for window against env and returns each
// canary's base continuity over the attack and the segments due up to
// settle segments after it (those were fetched during the attack). A
// canary that stopped answering (exited) fails the test.
func underAttack(t *testing.T, env *chaosEnv, window time.Duration, settle uint64, attack func(ctx context.Context, env *chaosEnv) attackReport) []float64 {
	t.Helper()
	snap := func() []canaryCounts {
		var cs []canaryCounts
		for i, c := range env.canaries {
			st, err := c.tryStats()
			require.NoError(t, err, "canary %d stopped answering (exited?): %s", i, tail(c.out.String(), 2000))
			cs = append(cs, canaryCounts{st.Due, st.BaseOnTime})
		}
		return cs
	}
	start := snap()
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), window)
	rep := attack(ctx, env)
	cancel()
	lasted := time.Since(began)
	t.Logf("attack over after %v: %+v", lasted.Round(100*time.Millisecond), rep)
	atEnd := snap()
	waitFor(t, 40*time.Second, "canaries' playout past the attack", func() bool {
		for i, c := range env.canaries {
			st, err := c.tryStats()
			if err != nil {
				return true // reported by snap below
			}
			if st.Due < atEnd[i].due+settle {
				return false
			}
		}
		return true
	})
	end := snap()
	var cont []float64
	for i := range end {
		due := end[i].due - start[i].due
		// At least half the 500 ms segments of the attack, or the canary's
		// playout restarted.
		require.GreaterOrEqual(t, due, settle+uint64(lasted/time.Second), "canary %d: segments due over the attack", i)
		c := float64(end[i].onTime-start[i].onTime) / float64(due)
		t.Logf("canary %d: base continuity %.3f over %d segments during and after the attack", i, c, due)
		cont = append(cont, c)
	}
	return cont
}

// attackStalledReader: one peer with a tiny receive buffer that never
// reads asks, every 100 ms, for the last 30 segments (all layers), so the
// server's socket buffer fills within a second or two and its answers
// pile up in user space; when the server drops it, it reconnects (at most
// 20 times) and does it again.
func attackStalledReader(ctx context.Context, env *chaosEnv) attackReport {
	dials, batches := 0, 0
	edge := uint64(0)
	var p *rawPeer
	defer func() {
		if p != nil {
			p.c.Close()
		}
	}()
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		if p == nil && dials < 20 {
			dials++
			var err error
			if p, err = dialRawPeer(env.peerAddr, env.stream, 2048); err != nil {
				p = nil
			} else if edge == 0 {
				edge, start = p.welcome.LiveEdge, time.Now()
			}
		}
		if p != nil {
			if p.send(requests(edge+uint64(time.Since(start)/(500*time.Millisecond)), 30)...) == nil {
				batches++
			} else {
				p.c.Close()
				p = nil
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	return attackReport{Notes: fmt.Sprintf("%d connections, %d request batches written", dials, batches)}
}

// A handshaken peer that requests media and never reads it (tiny
// SO_RCVBUF, its receive window stays full) loses its own data or its
// connection; the server keeps serving everyone else.
func TestP2PStalledReaderDoesNotStallTheServerPartner(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	env := hardeningEnv(t, "stalled", 2, chaosVideo)
	for i, c := range underAttack(t, env, 12*time.Second, 14, attackStalledReader) {
		require.GreaterOrEqual(t, c, 0.99, "canary %d's base continuity while peers stall", i)
	}
}

// attackSustainedFlood: one handshaken peer (reading everything it gets)
// writes requests for the 5 newest segments (those the canaries need
// now, following the live edge) as fast as the connection takes them
// until ctx ends (at most 20 M requests): a server that reads it slowly
// only slows it down, unlike attackRequestFlood, whose 2 s write deadline
// ends the flood as soon as the server stops reading.
func attackSustainedFlood(ctx context.Context, env *chaosEnv) attackReport {
	p, err := dialRawPeer(env.peerAddr, env.stream, 0)
	if err != nil {
		return attackReport{Notes: "dial: " + err.Error()}
	}
	defer p.c.Close()
	go p.discard()
	deadline, _ := ctx.Deadline()
	_ = p.c.SetWriteDeadline(deadline)
	start, n := time.Now(), 0
	var frames []byte
	batchLen, edge := 0, uint64(0)
	for ctx.Err() == nil && n < 20_000_000 {
		if e := p.welcome.LiveEdge + uint64(time.Since(start)/(500*time.Millisecond)); e != edge || frames == nil {
			edge, frames = e, frames[:0]
			batch := requests(edge, 4)
			for _, m := range batch {
				frames = wire.AppendFrame(frames, m)
			}
			batchLen = len(batch)
		}
		if _, err := p.c.Write(frames); err != nil {
			break
		}
		n += batchLen
	}
	return attackReport{Notes: fmt.Sprintf("%d requests written (%.0f/s)", n, float64(n)/time.Since(start).Seconds())}
}

// One handshaken peer requesting as fast as it can gets its fair share of
// the server partner, not everyone's. The plugin runs on one core
// (GOMAXPROCS=1, a small server or a loaded one), where a flood that
// monopolises the event loop shows at once.
//
// Serial (helpers_test.go): the flood takes a core by design.
func TestP2PRequestFloodLeavesTheCanariesPlaying(t *testing.T) {
	requireTool(t, "ffmpeg")
	env := hardeningEnv(t, "reqflood", 3, chaosVideo, "GOMAXPROCS=1")
	for i, c := range underAttack(t, env, 12*time.Second, 14, attackSustainedFlood) {
		require.GreaterOrEqual(t, c, 0.99, "canary %d's base continuity during a request flood", i)
	}
	require.Zero(t, env.o.p2p(t).Restarts, "the plugin did not restart")
}

// Two sybils accuse the canaries (whose ids GetCandidates hands out) and
// flood accusations of random ids: no canary is banned, all keep playing.
func TestP2PSybilAccusationsBanNobody(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	env := hardeningEnv(t, "sybil", 2, smallVideo)
	for i, c := range underAttack(t, env, 10*time.Second, 10, attackAccuse) {
		require.GreaterOrEqual(t, c, 0.99, "canary %d's base continuity while accused", i)
	}
	for i, c := range env.canaries {
		select {
		case <-c.done:
			t.Fatalf("canary %d exited: %s", i, tail(c.out.String(), 2000))
		default:
		}
		require.NotContains(t, c.out.String(), "banned", "canary %d", i)
		st, err := c.state()
		require.NoError(t, err)
		require.Equal(t, "playing", st.State, "canary %d", i)
	}
}

// pluginMemory reads the plugin's Go heap from the origin's /metrics
// (-1 when absent) and its VmData (heap mappings in use, MiB) from /proc.
func pluginMemory(t *testing.T, o *originProc) (heapMiB, dataMiB float64) {
	t.Helper()
	heapMiB = -1
	for _, line := range strings.Split(o.metrics(t), "\n") {
		if v, ok := strings.CutPrefix(line, "coop_plugin_heap_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			require.NoError(t, err, line)
			heapMiB = f / (1 << 20)
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", o.p2p(t).PID))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmData:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				dataMiB = kb / 1024
			}
		}
	}
	return heapMiB, dataMiB
}

// 150 handshaken connections that each declare an 8 MiB Data frame and
// trickle its bytes cannot make the plugin allocate what they declared
// (1.2 GiB): its Go heap stays bounded while the canaries play.
func TestP2PFrameSizeBombsLeaveThePluginHeapBounded(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	env := hardeningEnv(t, "bombs", 1, smallVideo)
	heap0, data0 := pluginMemory(t, env.o)
	t.Logf("before: plugin heap %.0f MiB, VmData %.0f MiB", heap0, data0)
	var mu sync.Mutex
	peakHeap, peakData := heap0, data0
	cont := underAttack(t, env, 12*time.Second, 4, func(ctx context.Context, env *chaosEnv) attackReport {
		done := make(chan attackReport, 1)
		go func() { done <- attackFrameBombs(ctx, env) }()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case rep := <-done:
				return rep
			case <-tick.C:
				h, d := pluginMemory(t, env.o)
				mu.Lock()
				peakHeap, peakData = max(peakHeap, h), max(peakData, d)
				mu.Unlock()
			}
		}
	})
	mu.Lock()
	defer mu.Unlock()
	t.Logf("during the attack: plugin heap peak %.0f MiB, VmData peak %.0f MiB", peakHeap, peakData)
	require.GreaterOrEqual(t, cont[0], 0.99, "the canary's base continuity during the attack")
	require.Less(t, peakData-data0, 300.0, "the plugin's heap mappings (VmData, MiB) grew by less than 300 MiB")
	require.Positive(t, peakHeap, "coop_plugin_heap_bytes in the origin's /metrics")
	require.Less(t, peakHeap, 150.0, "the plugin's Go heap (MiB) under 150 connections declaring 8 MiB each")
	require.Zero(t, env.o.p2p(t).Restarts, "the plugin did not restart")
}
