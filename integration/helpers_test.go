// Parallel tests (the rule for every file of this package). The tests
// wait on media in real time far more than they compute, so most call t.Parallel() and `make test` runs them with a
// bounded -parallel (see the Makefile) so ffmpeg encodes do not pile up on
// a 2-core machine. A test may call t.Parallel() when it:
//   - takes every port from freeAddr/freeUDPPair (never a fixed port; the
//     children bind port 0 themselves where they can) and starts origins
//     through startOrigin/startP2POrigin/startEdge, which retry on new ports
//     when another process took one meanwhile;
//   - changes no process-wide state: no t.Setenv or os.Setenv (pass env to
//     the child instead), no os.Chdir, no package-level variables written;
//   - uses the binaries TestMain built once (binDir), never rebuilds them;
//   - writes files only under t.TempDir() (or artefacts with its own name).
//
// A test stays serial (no t.Parallel(); Go runs the serial tests first, one
// at a time, before the parallel ones) when it:
//   - asserts how soon something happens where a neighbour's load could
//     eat the margin (idle connections closed within 2 x timeout, a read
//     deadline of 500 ms deciding closed versus open);
//   - exhausts a resource on purpose (descriptors via prlimit) or counts
//     rate-limited warnings over the time that takes;
//   - is a CPU hog by design that would starve its neighbours' real-time
//     encodes (a request flood as fast as the socket takes it).
//
// A test that needs a large picture's bit rate delivered in real time
// publishes a clip encoded beforehand (encodedClip, publishClipRTMP): a
// real-time encode of it takes more than a core and falls behind on a
// loaded machine.
// Each serial test says why in a comment above it. Table subtests that
// each start their own origin are parallel too; subtests that share their
// parent's processes stay sequential.

package integration

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// binDir holds the binaries built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if testing.Short() {
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "coop-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		// The plugin embeds the browser peer: build it first, so the
		// binaries serve the wasm of this tree (the browser tests need a
		// peer that speaks this tree's wire), not a stale or missing one.
		if out, err := exec.Command("../webassets/watch/build-wasm.sh").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build-wasm: %v\n%s", err, out)
			return 1
		}
		out, err := exec.Command("go", "build", "-o", dir+"/", module+"/origin/cmd/coop-origin",
			module+"/plugin/cmd/coop-plugin", module+"/peer/cmd/coop-peer").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
			return 1
		}
		binDir = dir
		return m.Run()
	}()
	os.Exit(code)
}

// requireTool skips when an external tool is missing, except in CI
// (CI=true), where a missing tool fails the test.
func requireTool(t *testing.T, names ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI: %v", name, err)
			}
			t.Skipf("%s not installed", name)
		}
	}
}

// portsGiven holds every port freeAddr and freeUDPPair handed out in this
// test process ("tcp/1234", "udp/1234"), so that parallel tests are never
// given the same port, even after its first owner closed it.
var (
	portsMu    sync.Mutex
	portsGiven = map[string]bool{} // guarded by portsMu
)

// claimPort records proto/port as handed out and reports whether it was
// still free to hand out.
func claimPort(proto string, ports ...int) bool {
	portsMu.Lock()
	defer portsMu.Unlock()
	for _, p := range ports {
		if portsGiven[fmt.Sprintf("%s/%d", proto, p)] {
			return false
		}
	}
	for _, p := range ports {
		portsGiven[fmt.Sprintf("%s/%d", proto, p)] = true
	}
	return true
}

// freeAddr returns a loopback address with a port that was free and that
// no other test of this process was given. Another process (a connection's
// ephemeral port, another test run) can still take it before the child
// binds it: startOrigin and startEdge retry on new ports when that happens.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if claimPort("tcp", port) {
			return addr
		}
	}
	t.Fatal("no free TCP port")
	return ""
}

// freeUDPPair returns two consecutive free UDP ports (RTP even, RTCP odd)
// that no other test of this process was given.
func freeUDPPair(t *testing.T) (string, string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		port := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		if port%2 == 1 {
			port--
		}
		a, err1 := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		b, err2 := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port+1))
		if a != nil {
			a.Close()
		}
		if b != nil {
			b.Close()
		}
		if err1 == nil && err2 == nil && claimPort("udp", port, port+1) {
			return fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.1:%d", port+1)
		}
	}
	t.Fatal("no free UDP port pair")
	return "", ""
}

// syncBuffer is a goroutine-safe buffer for process output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a child process started by a test.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when the process has been reaped
	err  error         // Wait's result, valid after done
}

// wait waits up to timeout for the process to exit and returns its error.
func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v", p.cmd.Path, timeout)
		return nil
	}
}

// startProcess starts a child process that is killed (by its pid) and
// reaped when the test ends.
func startProcess(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	p := &proc{cmd: cmd, out: out, done: make(chan struct{})}
	done := p.done
	go func() { p.err = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), tail(out.String(), 4000))
		}
	})
	return p
}

// stop ends the process: SIGTERM, then after 5 s SIGKILL to its process
// group; it returns once the process is reaped.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// originProc is a coop-origin child process on loopback ports.
type originProc struct {
	proc                 *proc
	cmd                  *exec.Cmd
	out                  *syncBuffer
	rtmp, rtsp, httpAddr string
	// hls serves LL-HLS and the player page.
	hls string
}

func (o *originProc) rtmpURL(key string) string { return "rtmp://" + o.rtmp + "/live/" + key }
func (o *originProc) rtspURL(key string) string { return "rtsp://" + o.rtsp + "/live/" + key }

func startOrigin(t *testing.T, env ...string) *originProc {
	t.Helper()
	o, _ := launchOrigin(t, false, env)
	return o
}

// addrInUse is how a child reports that a port it was handed is taken.
const addrInUse = "address already in use"

// launchOrigin starts coop-origin (with args) on fresh loopback ports, the
// P2P plugin on when plugin is set (its peer address is returned), and
// waits for its API and plugin. env is added after the port settings. A
// port that another process took between freeAddr and the child's bind
// makes the origin exit (or the plugin fail its listen): it then starts
// again on new ports, at most 3 times.
func launchOrigin(t *testing.T, plugin bool, env []string, args ...string) (*originProc, string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		rtp, rtcp := freeUDPPair(t)
		o := &originProc{rtmp: freeAddr(t), rtsp: freeAddr(t), httpAddr: freeAddr(t), hls: freeAddr(t)}
		all := []string{
			"COOP_RTMP_ADDRESS=" + o.rtmp, "COOP_RTSP_ADDRESS=" + o.rtsp, "COOP_HTTP_ADDRESS=" + o.httpAddr,
			"COOP_RTSP_UDPRTPADDRESS=" + rtp, "COOP_RTSP_UDPRTCPADDRESS=" + rtcp, "COOP_HLS_ADDRESS=" + o.hls,
			// The plugin is off unless a test turns it on (startP2POrigin).
			"COOP_PLUGIN_ENABLED=false",
		}
		peerAddr := ""
		if plugin {
			peerAddr = freeAddr(t)
			all = append(all, "COOP_PLUGIN_ENABLED=true", "COOP_PLUGIN_PATH="+filepath.Join(binDir, "coop-plugin"),
				"COOP_PLUGIN_ADDRESS="+peerAddr, "COOP_PLUGIN_KEYFILE="+filepath.Join(t.TempDir(), "stream.key"),
				// Each plugin its own web port (the default :7071 would be
				// taken by the first; a test may override it in env).
				"COOP_PLUGIN_WEBADDRESS="+freeAddr(t))
		}
		p := startProcess(t, append(all, env...), filepath.Join(binDir, "coop-origin"), args...)
		o.proc, o.cmd, o.out = p, p.cmd, p.out
		exited := func() bool {
			select {
			case <-p.done:
				return true
			default:
				return false
			}
		}
		// Generous: the machine may be busy with other tests.
		up := poll(20*time.Second, func() bool {
			if exited() {
				return true
			}
			resp, err := http.Get("http://" + o.httpAddr + "/healthz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		}) && !exited()
		if up && plugin {
			pluginUp := func() bool {
				var st p2pStatus
				return tryGetJSON("http://"+o.httpAddr+"/v1/p2p", &st) == nil && st.Up
			}
			up = poll(20*time.Second, func() bool {
				return exited() || strings.Contains(o.out.String(), "peer listen on") || pluginUp()
			}) && pluginUp()
		}
		if up {
			return o, peerAddr
		}
		if attempt < 3 && strings.Contains(o.out.String(), addrInUse) {
			t.Logf("origin attempt %d: a port was taken meanwhile, starting again on new ports", attempt)
			p.stop()
			continue
		}
		t.Fatalf("origin did not come up (plugin %v):\n%s", plugin, tail(o.out.String(), 4000))
	}
}

// poll calls cond every 100 ms until it holds (true) or timeout passes
// (false).
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// streamInfo mirrors the API's stream object (the fields tests read).
type streamInfo struct {
	Path        string    `json:"path"`
	Publishing  bool      `json:"publishing"`
	Tracks      []string  `json:"tracks"`
	Segments    uint64    `json:"segments"`
	BytesOut    uint64    `json:"bytesOut"`
	LayerBytes  []uint64  `json:"layerBytes"`
	LayerShares []float64 `json:"layerShares"`
	Resumes     uint64    `json:"resumes"`
}

func (o *originProc) streams(t *testing.T) []streamInfo {
	t.Helper()
	var body struct {
		Streams []streamInfo `json:"streams"`
	}
	getJSON(t, "http://"+o.httpAddr+"/v1/streams", &body)
	return body.Streams
}

func (o *originProc) waitPublishing(t *testing.T, path string) streamInfo {
	t.Helper()
	var found streamInfo
	waitFor(t, 15*time.Second, path+" publishing with segments", func() bool {
		for _, s := range o.streams(t) {
			if s.Path == path && s.Publishing && s.Segments > 0 {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

func (o *originProc) metrics(t *testing.T) string {
	t.Helper()
	text, err := metricsText(o.httpAddr)
	require.NoError(t, err)
	return text
}

// x264 test pattern publisher arguments (the OBS stand-in).
func testPatternArgs(size string, extraVideo ...string) []string {
	args := []string{"-hide_banner", "-nostats", "-loglevel", "warning", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=" + size + ":rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-pix_fmt", "yuv420p", "-c:v", "libx264"}
	args = append(args, extraVideo...)
	return append(args, "-c:a", "aac")
}

// publishRTMP pushes a test pattern for d.
func publishRTMP(t *testing.T, url string, d time.Duration, size string, extraVideo ...string) *proc {
	args := append(testPatternArgs(size, extraVideo...), "-t", fmt.Sprint(int(d.Seconds())), "-f", "flv", url)
	return startProcess(t, nil, "ffmpeg", args...)
}

// clips holds the test-pattern files encoded once per test process by
// encodedClip, by their arguments.
var (
	clipsMu sync.Mutex // guards clips; held while one is encoded
	clips   = map[string]string{}
)

// encodedClip returns an FLV file of seconds of the x264 test pattern
// (testPatternArgs with extraVideo), encoded once per test process as fast
// as the machine allows. Publishing it with publishClipRTMP (-re, stream
// copy) delivers its bit rate in real time whatever the machine's load,
// which a real-time encode of a large picture cannot (it falls behind on a
// busy machine and the stream carries less than the test needs).
func encodedClip(t *testing.T, size string, seconds int, extraVideo ...string) string {
	t.Helper()
	args := append(testPatternArgs(size, extraVideo...), "-t", strconv.Itoa(seconds), "-f", "flv")
	key := strings.Join(args, " ")
	clipsMu.Lock()
	defer clipsMu.Unlock()
	if f, ok := clips[key]; ok {
		return f
	}
	f := filepath.Join(binDir, fmt.Sprintf("clip%d.flv", len(clips)))
	// As fast as the machine allows: without -re.
	enc := make([]string, 0, len(args)+2)
	for _, a := range args {
		if a != "-re" {
			enc = append(enc, a)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffmpeg", append(enc, "-y", f)...).CombinedOutput()
	require.NoError(t, err, "encoding %s: %s", f, out)
	clips[key] = f
	return f
}

// publishClipRTMP pushes file (from encodedClip) to url in real time
// without re-encoding.
func publishClipRTMP(t *testing.T, file, url string) *proc {
	return startProcess(t, nil, "ffmpeg", "-hide_banner", "-nostats", "-loglevel", "warning", "-re",
		"-i", file, "-c", "copy", "-f", "flv", url)
}

// readerBound is a safety bound for one reader that stops by itself
// after its -t of media (ended at the test's end at the latest). Give each
// reader its own: one bound shared by readers in turn runs out on a loaded
// machine while the media the test asks for would still have come.
func readerBound(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// playResult is what a reader saw.
type playResult struct {
	frames int
	errors []string
	err    error
}

// play reads url for d seconds with ffmpeg and reports decoded video
// frames and every error line ffmpeg printed.
func play(ctx context.Context, url, transport string, d time.Duration) playResult {
	var opts []string
	if strings.HasPrefix(url, "rtsp://") {
		opts = []string{"-rtsp_transport", transport}
	}
	return playWith(ctx, url, d, opts)
}

// playWith is play with ffmpeg input options (before -i) of the caller's.
func playWith(ctx context.Context, url string, d time.Duration, inputOpts []string) playResult {
	args := append([]string{"-hide_banner", "-nostats", "-v", "error"}, inputOpts...)
	args = append(args, "-i", url, "-t", strconv.Itoa(int(d.Seconds())), "-f", "null", "-", "-progress", "pipe:1")
	cmd := exec.CommandContext(ctx, "ffmpeg", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := playResult{err: err}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "frame="); ok {
			res.frames, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.TrimSpace(line) != "" {
			res.errors = append(res.errors, line)
		}
	}
	return res
}

// probeCodecs lists the codec names ffprobe finds at url.
func probeCodecs(t *testing.T, url string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", "-v", "error", "-rtsp_transport", "tcp",
		"-show_entries", "stream=codec_name", "-of", "csv=p=0", url).CombinedOutput()
	require.NoError(t, err, string(out))
	return strings.Fields(string(out))
}
