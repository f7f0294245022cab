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

// freeAddr returns a loopback address with a port that was free.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// freeUDPPair returns two consecutive free UDP ports (RTP even, RTCP odd).
func freeUDPPair(t *testing.T) (string, string) {
	t.Helper()
	for i := 0; i < 50; i++ {
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
		if err1 == nil && err2 == nil {
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
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), tail(out.String(), 4000))
		}
	})
	return p
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
	rtp, rtcp := freeUDPPair(t)
	o := &originProc{rtmp: freeAddr(t), rtsp: freeAddr(t), httpAddr: freeAddr(t), hls: freeAddr(t)}
	base := []string{
		"COOP_RTMP_ADDRESS=" + o.rtmp, "COOP_RTSP_ADDRESS=" + o.rtsp, "COOP_HTTP_ADDRESS=" + o.httpAddr,
		"COOP_RTSP_UDPRTPADDRESS=" + rtp, "COOP_RTSP_UDPRTCPADDRESS=" + rtcp, "COOP_HLS_ADDRESS=" + o.hls,
		// The plugin is off unless a test turns it on (startP2POrigin).
		"COOP_PLUGIN_ENABLED=false",
	}
	p := startProcess(t, append(base, env...), filepath.Join(binDir, "coop-origin"))
	o.proc, o.cmd, o.out = p, p.cmd, p.out
	waitFor(t, 10*time.Second, "origin HTTP API", func() bool {
		resp, err := http.Get("http://" + o.httpAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return o
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
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
