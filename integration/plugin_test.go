package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// p2pStatus mirrors the origin's /v1/p2p (the fields tests read).
type p2pStatus struct {
	Up              bool              `json:"up"`
	PID             int               `json:"pid"`
	PeerAddress     string            `json:"peerAddress"`
	Restarts        uint64            `json:"restarts"`
	SegmentsPushed  uint64            `json:"segmentsPushed"`
	BytesPushed     uint64            `json:"bytesPushed"`
	StreamPublicKey string            `json:"streamPublicKey"`
	Streams         []p2pStreamStatus `json:"streams"`
}

// p2pStreamStatus is one stream of /v1/p2p.
type p2pStreamStatus struct {
	Stream              string
	Peers               int
	ServerMediaBytes    uint64
	PeerBytesFromServer uint64
	PeerBytesFromPeers  uint64
	RefusedJoins        uint64
}

// startP2POrigin starts an origin with the plugin on a free peer port.
func startP2POrigin(t *testing.T, env ...string) (*originProc, string) {
	t.Helper()
	return launchOrigin(t, true, env)
}

func (o *originProc) p2p(t *testing.T) p2pStatus {
	t.Helper()
	var st p2pStatus
	getJSON(t, "http://"+o.httpAddr+"/v1/p2p", &st)
	return st
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	require.NoError(t, tryGetJSON(url, v))
}

// peerStats mirrors coop-peer's /stats (the fields tests read).
type peerStats struct {
	State           string  `json:"state"`
	Layers          int     `json:"layers"`
	MaxLayers       int     `json:"maxLayers"`
	ServerConnected bool    `json:"serverConnected"`
	Partners        int     `json:"partners"`
	Started         bool    `json:"started"`
	Due             uint64  `json:"due"`
	BaseOnTime      uint64  `json:"baseOnTime"`
	Continuity      float64 `json:"continuity"`
	Offload         float64 `json:"offload"`
	FromServer      uint64  `json:"usefulFromServer"`
	FromPeers       uint64  `json:"usefulFromPeers"`
	BadData         uint64  `json:"badData"`
	StartupDelayMs  int64   `json:"startupDelayMs"`
	RecentPlays     []struct {
		Seq      uint64 `json:"seq"`
		AtUnixMs int64  `json:"atUnixMs"`
		Layers   int    `json:"layers"`
	} `json:"recentPlays"`
}

type peerProc struct {
	*proc
	http string
}

// startPeer starts a coop-peer on free loopback ports (it binds port 0
// itself and logs the player address, so no port can be taken meanwhile).
// Its local RTSP server is on port 0 too: the default (8555) is one fixed
// port that parallel peers would race for. args come last and win.
func startPeer(t *testing.T, server, stream string, args ...string) *peerProc {
	t.Helper()
	all := append([]string{"-server", server, "-stream", stream, "-listen", "127.0.0.1:0",
		"-http", "127.0.0.1:0", "-rtsp", "127.0.0.1:0", "-status-interval", "5s"}, args...)
	if dir := os.Getenv("COOP_PEER_CPUPROFILE_DIR"); dir != "" {
		// Diagnosis: each coop-peer writes a CPU profile of its run there.
		f, err := os.CreateTemp(dir, "coop-peer-*.prof")
		require.NoError(t, err)
		f.Close()
		all = append(all, "-cpuprofile", f.Name())
	}
	p := &peerProc{proc: startProcess(t, nil, filepath.Join(binDir, "coop-peer"), all...)}
	waitFor(t, 10*time.Second, "coop-peer's player address", func() bool {
		out := p.out.String()
		i := strings.Index(out, "play=http://")
		if i < 0 {
			return false
		}
		rest := out[i+len("play=http://"):]
		if j := strings.Index(rest, "/stream.ts"); j > 0 {
			p.http = rest[:j]
			return true
		}
		return false
	})
	return p
}

func (p *peerProc) stats(t *testing.T) peerStats {
	t.Helper()
	st, err := p.tryStats()
	require.NoError(t, err)
	return st
}

// tryStats reads /stats; a peer still starting is an error, not a failure.
func (p *peerProc) tryStats() (peerStats, error) {
	var st peerStats
	resp, err := http.Get("http://" + p.http + "/stats")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("stats: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// playing tells whether a peer plays with at least n segments due.
func (p *peerProc) playing(n uint64) bool {
	st, err := p.tryStats()
	return err == nil && st.Started && st.Due >= n
}

func (p *peerProc) url() string { return "http://" + p.http + "/stream.ts" }

// processGone tells whether pid has exited (or is a zombie).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] == "Z"
}

// mediaTimes reads d of media from url's first stream of kind ("v" or
// "a") with ffprobe (opts: its input options) and returns the sorted
// frame timestamps and ffprobe's error lines.
func mediaTimes(ctx context.Context, url, kind string, d time.Duration, opts ...string) ([]float64, []string, error) {
	args := append([]string{"-v", "error"}, opts...)
	args = append(args, "-read_intervals", fmt.Sprintf("%%+%d", int(d.Seconds())), "-select_streams", kind+":0",
		"-show_entries", "frame=best_effort_timestamp_time", "-of", "csv=p=0", url)
	cmd := exec.CommandContext(ctx, "ffprobe", args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ts []float64
	for _, line := range strings.Fields(stdout.String()) {
		if v, perr := strconv.ParseFloat(strings.Trim(line, ","), 64); perr == nil {
			ts = append(ts, v)
		}
	}
	sort.Float64s(ts)
	var errs []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if strings.TrimSpace(l) != "" {
			errs = append(errs, l)
		}
	}
	return ts, errs, err
}

// videoGaps reads url's video frame timestamps for d with ffprobe and
// returns the frame count, the largest gap between consecutive frames
// and ffprobe's error lines.
func videoGaps(ctx context.Context, url string, d time.Duration) (int, time.Duration, []string, error) {
	ts, errs, err := mediaTimes(ctx, url, "v", d, "-rtsp_transport", "tcp")
	var gap float64
	for i := 1; i < len(ts); i++ {
		gap = max(gap, ts[i]-ts[i-1])
	}
	return len(ts), time.Duration(gap * float64(time.Second)), errs, err
}

// TestP2PPeersPlayThroughPlugin is the product end to end: ffmpeg pushes
// RTMP to the origin, the origin launches the real plugin through
// go-plugin, five coop-peer processes join over loopback and one of them
// re-serves the stream to ffprobe/ffmpeg. Then the plugin is killed with
// SIGKILL while an RTSP reader plays from the origin.
func TestP2PPeersPlayThroughPlugin(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg", "ffprobe")
	o, peerAddr := startP2POrigin(t)
	publishRTMP(t, o.rtmpURL("p2p"), 75*time.Second, "640x360", "-b:v", "800k", "-bf", "3", "-g", "60")
	o.waitPublishing(t, "live/p2p")

	var peers []*peerProc
	for range 5 {
		peers = append(peers, startPeer(t, peerAddr, "live/p2p"))
	}
	waitFor(t, 30*time.Second, "5 peers playing", func() bool {
		for _, p := range peers {
			if !p.playing(6) {
				return false
			}
		}
		return true
	})
	before := o.p2p(t)

	// A player on one peer's local output.
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
		peers[0].url()).CombinedOutput()
	require.NoError(t, err, string(out))
	codecs := map[string]bool{} // MPEG-TS lists streams per program too
	for _, c := range strings.Fields(string(out)) {
		codecs[c] = true
	}
	require.Equal(t, map[string]bool{"h264": true, "aac": true}, codecs)
	// One safety bound per reader (readerBound): a 40 s one shared by the
	// three ran out on a loaded machine (the test took 59 s).
	res := play(readerBound(t), peers[0].url(), "", 10*time.Second)
	require.NoError(t, res.err, "ffmpeg on the peer's output: %v", res.errors)
	require.Empty(t, res.errors, "decode errors on the peer's output")
	require.GreaterOrEqual(t, res.frames, 250, "10 s at 30 fps from the peer")

	after := o.p2p(t)
	require.Len(t, after.Streams, 1)
	server := after.Streams[0].ServerMediaBytes - before.Streams[0].ServerMediaBytes
	pushed := after.BytesPushed - before.BytesPushed
	ratio := float64(server) / float64(5*pushed)
	s := after.Streams[0]
	offload := float64(s.PeerBytesFromPeers) / float64(s.PeerBytesFromPeers+s.PeerBytesFromServer)
	t.Logf("server media bytes %d over the play window; 5 direct viewers would cost %d: ratio %.2f; offload reported by peers %.2f",
		server, 5*pushed, ratio, offload)
	require.Less(t, ratio, 1.0, "the server must upload less than 5 direct viewers would take")
	metrics := o.metrics(t)
	for _, m := range []string{"coop_plugin_up 1", `coop_p2p_peers{stream="live/p2p"} 5`, "coop_p2p_server_media_bytes_total"} {
		require.Contains(t, metrics, m)
	}

	// kill -9 the plugin while an RTSP reader plays from the origin.
	type gapResult struct {
		frames int
		gap    time.Duration
		errs   []string
		err    error
	}
	rtsp := make(chan gapResult, 1)
	gapCtx := readerBound(t)
	go func() {
		n, gap, errs, err := videoGaps(gapCtx, o.rtspURL("p2p"), 12*time.Second)
		rtsp <- gapResult{n, gap, errs, err}
	}()
	// The kill comes while the reader plays.
	waitFor(t, 20*time.Second, "the RTSP reader playing", func() bool { return o.readerCount(t) >= 1 })
	due := make([]peerStats, len(peers))
	for i, p := range peers {
		due[i] = p.stats(t)
	}
	oldPID := after.PID
	require.NoError(t, syscall.Kill(oldPID, syscall.SIGKILL))
	killed := time.Now()
	var back time.Duration
	// A safety bound, not the claim: the restart time is logged (0.2-0.3 s
	// here); a loaded CI machine starts a race-built plugin slower.
	waitFor(t, 20*time.Second, "plugin back after kill -9", func() bool {
		st := o.p2p(t)
		if st.Up && st.PID != oldPID && len(st.Streams) == 1 {
			back = time.Since(killed)
			return true
		}
		return false
	})
	t.Logf("plugin back %v after kill -9", back.Round(time.Millisecond))
	r := <-rtsp
	t.Logf("RTSP reader across the kill: %d frames, largest gap %v", r.frames, r.gap)
	require.NoError(t, r.err, "%v", r.errs)
	require.Empty(t, r.errs, "RTSP decode errors across the plugin kill")
	require.GreaterOrEqual(t, r.frames, 300, "12 s at 30 fps")
	require.Less(t, r.gap, 500*time.Millisecond, "RTSP readers see no gap when the plugin dies")

	// Peers reconnect to the new plugin and keep playing.
	waitFor(t, 20*time.Second, "peers resumed", func() bool {
		for i, p := range peers {
			st := p.stats(t)
			if !st.ServerConnected || st.BaseOnTime < due[i].BaseOnTime+10 {
				return false
			}
		}
		return true
	})
	for i, p := range peers {
		st := p.stats(t)
		window := float64(st.BaseOnTime-due[i].BaseOnTime) / float64(max(st.Due-due[i].Due, 1))
		t.Logf("peer %d after the restart: continuity %.3f over %d segments (lifetime %.3f, offload %.2f, partners %d)",
			i, window, st.Due-due[i].Due, st.Continuity, st.Offload, st.Partners)
		require.Zero(t, st.BadData)
	}
	res = play(readerBound(t), peers[1].url(), "", 4*time.Second)
	require.NoError(t, res.err, "%v", res.errors)
	require.Empty(t, res.errors, "decode errors on a peer after the plugin restart")
}

// TestP2POriginSignalsLeaveNoPlugin stops the origin with SIGTERM and with
// SIGINT (a clean exit), and kills it with SIGKILL (no cleanup possible in
// the origin: the plugin notices it was orphaned): the plugin process must
// be gone too.
func TestP2POriginSignalsLeaveNoPlugin(t *testing.T) {
	t.Parallel()
	requireTool(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			o, _ := startP2POrigin(t)
			pid := o.p2p(t).PID
			require.Positive(t, pid)
			require.False(t, processGone(pid))
			require.NoError(t, o.cmd.Process.Signal(sig))
			err := o.proc.wait(t, 10*time.Second)
			if sig != syscall.SIGKILL {
				require.NoError(t, err, "a clean exit")
			}
			waitFor(t, 5*time.Second, "plugin process gone", func() bool { return processGone(pid) })
		})
	}
}

// TestP2PTokensAndGarbage: with a token secret, a peer with a wrong token
// is refused with a clear error and one with a minted token plays; a
// client sending garbage to the plugin port is dropped without harm.
func TestP2PTokensAndGarbage(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	const secret = "integration-secret"
	o, peerAddr := startP2POrigin(t, "COOP_PLUGIN_TOKENSECRET="+secret)
	publishRTMP(t, o.rtmpURL("tok"), 40*time.Second, "320x240", "-b:v", "300k", "-g", "60")
	o.waitPublishing(t, "live/tok")

	bad := startPeer(t, peerAddr, "live/tok", "-token", "v1.9999999999.AAAA")
	err := bad.wait(t, 15*time.Second)
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "the refused peer exits with an error: %v", err)
	require.Equal(t, 3, exit.ExitCode())
	require.Contains(t, bad.out.String(), "bad join token")

	mint := exec.Command(filepath.Join(binDir, "coop-plugin"), "token", "-stream", "live/tok", "-ttl", "1h")
	mint.Env = append(os.Environ(), "COOP_PLUGIN_TOKENSECRET="+secret)
	tok, err := mint.Output()
	require.NoError(t, err)
	good := startPeer(t, peerAddr, "live/tok", "-token", strings.TrimSpace(string(tok)))
	waitFor(t, 30*time.Second, "peer with a minted token playing", func() bool { return good.playing(4) })
	pid := o.p2p(t).PID

	for _, garbage := range [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		{0xff, 0xff, 0xff, 0xff, 1, 2, 3}, // a 4 GiB frame
		{0, 0, 0, 1, 200},                 // unknown message type
		{0, 0, 0, 40, 1, 0, 0},            // a truncated Hello
	} {
		c, err := net.Dial("tcp", peerAddr)
		require.NoError(t, err)
		_, _ = c.Write(garbage)
		_ = c.SetReadDeadline(time.Now().Add(8 * time.Second))
		buf := make([]byte, 256)
		var rerr error
		for rerr == nil {
			_, rerr = c.Read(buf)
		}
		c.Close()
		var ne net.Error
		require.False(t, errors.As(rerr, &ne) && ne.Timeout(), "garbage %x must be dropped, not left hanging", garbage[:4])
	}
	before := good.stats(t)
	waitFor(t, 10*time.Second, "the good peer keeps playing", func() bool {
		return good.stats(t).BaseOnTime >= before.BaseOnTime+6
	})
	st := o.p2p(t)
	require.Equal(t, pid, st.PID, "the plugin did not restart")
	require.Len(t, st.Streams, 1)
	require.GreaterOrEqual(t, st.Streams[0].RefusedJoins, uint64(1))
}
