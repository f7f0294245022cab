package integration

// A headless Chromium driven through the DevTools protocol (CDP) over a
// minimal RFC 6455 websocket client: enough to navigate, evaluate script in
// the page and take screenshots, with no extra dependency.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// chromiumPath finds the Chromium binary ("" when none is installed).
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// chromiumBinary returns the Chromium binary, or skips the test.
func chromiumBinary(t *testing.T) string {
	t.Helper()
	p := chromiumPath()
	if p == "" {
		t.Skip("chromium is not installed (.ci/run and make deps install it)")
	}
	return p
}

// browser is one headless Chromium process and a CDP session on its page.
type browser struct {
	t    *testing.T
	conn *wsConn
	// mu guards nextID.
	mu     sync.Mutex
	nextID int
}

var devtoolsRe = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// browserLane lets one test at a time run Chromium: a tab decodes video
// and, for the wasm peer, runs the engine on the page's thread, so two
// Chromium tests beside the other parallel tests starve each other on a
// 2-core machine (stalls that are the machine's, not the stream's).
var browserLane = make(chan struct{}, 1)

// laneHolder names the test holding browserLane ("" when none); laneMu
// guards it.
var (
	laneMu     sync.Mutex
	laneHolder string
)

// takeBrowserLane blocks until t holds browserLane, which it keeps until
// it ends. A test that runs Chromium calls it before its setup so that its
// encodes and processes are in the lane too; startBrowserProc calls it. A
// second call by the same test, or by one of its subtests, returns at once.
func takeBrowserLane(t *testing.T) {
	t.Helper()
	laneMu.Lock()
	held := laneHolder != "" && (t.Name() == laneHolder || strings.HasPrefix(t.Name(), laneHolder+"/"))
	laneMu.Unlock()
	if held {
		return
	}
	browserLane <- struct{}{}
	laneMu.Lock()
	laneHolder = t.Name()
	laneMu.Unlock()
	t.Cleanup(func() {
		laneMu.Lock()
		laneHolder = ""
		laneMu.Unlock()
		<-browserLane
	})
}

// takeBrowserLaneIfInstalled is takeBrowserLane for a test whose last
// part runs Chromium when it is installed: the whole test goes in the lane,
// so that its publishers and readers do not run out while it waits.
func takeBrowserLaneIfInstalled(t *testing.T) {
	t.Helper()
	if chromiumPath() != "" {
		takeBrowserLane(t)
	}
}

// startBrowser launches headless Chromium and attaches to its first page.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	b, _ := startBrowserProc(t)
	return b
}

// call sends one CDP command and returns its result, skipping events.
func (b *browser) call(method string, params any) (json.RawMessage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextID++
	id := b.nextID
	msg, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	_ = b.conn.c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := b.conn.writeText(msg); err != nil {
		return nil, err
	}
	for range 10000 { // events may come first; bounded
		data, err := b.conn.readMessage()
		if err != nil {
			return nil, err
		}
		var reply struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(data, &reply) != nil || reply.ID != id {
			continue
		}
		if reply.Error != nil {
			return nil, fmt.Errorf("cdp %s: %s", method, reply.Error.Message)
		}
		return reply.Result, nil
	}
	return nil, fmt.Errorf("cdp %s: no reply", method)
}

// navigate opens url in the page.
func (b *browser) navigate(u string) {
	_, err := b.call("Page.navigate", map[string]any{"url": u})
	require.NoError(b.t, err)
}

// eval evaluates a JavaScript expression in the page and decodes its
// (JSON-serialisable) value into out.
func (b *browser) eval(expr string, out any) error {
	res, err := b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
	if err != nil {
		return err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	if r.ExceptionDetails != nil {
		return errors.New("page script: " + r.ExceptionDetails.Text)
	}
	if len(r.Result.Value) == 0 {
		return errors.New("page script returned no value")
	}
	return json.Unmarshal(r.Result.Value, out)
}

// screenshot writes a PNG of the whole page (beyond the viewport) to path.
func (b *browser) screenshot(path string) {
	var size struct {
		W float64 `json:"w"`
		H float64 `json:"h"`
	}
	require.NoError(b.t, b.eval(`({w:Math.max(document.documentElement.scrollWidth,1280),h:Math.max(document.documentElement.scrollHeight,600)})`, &size))
	res, err := b.call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true,
		"clip": map[string]any{"x": 0, "y": 0, "width": size.W, "height": min(size.H, 4000), "scale": 1}})
	require.NoError(b.t, err)
	var r struct {
		Data string `json:"data"`
	}
	require.NoError(b.t, json.Unmarshal(res, &r))
	png, err := base64.StdEncoding.DecodeString(r.Data)
	require.NoError(b.t, err)
	require.NoError(b.t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(b.t, os.WriteFile(path, png, 0o644))
	b.t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// artifactDir is where tests keep screenshots (gitignored).
func artifactDir(t *testing.T) string {
	d := filepath.Join("testdata", "artifacts")
	require.NoError(t, os.MkdirAll(d, 0o755))
	return d
}

// wsConn is a client websocket connection (text messages only).
type wsConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialWS(rawURL string) (*wsConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key) + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(c, 1<<16)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, fmt.Errorf("websocket upgrade: %s", resp.Status)
	}
	return &wsConn{c: c, br: br}, nil
}

func (w *wsConn) Close() { _ = w.c.Close() }

// writeText sends one masked text frame.
func (w *wsConn) writeText(p []byte) error { return w.writeFrame(0x1, p) }

func (w *wsConn) writeFrame(op byte, p []byte) error {
	hdr := []byte{0x80 | op}
	switch n := len(p); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	mask := make([]byte, 4)
	_, _ = rand.Read(mask)
	hdr = append(hdr, mask...)
	body := make([]byte, len(p))
	for i := range p {
		body[i] = p[i] ^ mask[i%4]
	}
	_, err := w.c.Write(append(hdr, body...))
	return err
}

// readMessage reads one whole message (joining continuation frames),
// answering pings. Messages are bounded at 64 MiB.
func (w *wsConn) readMessage() ([]byte, error) {
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(w.br, h[:]); err != nil {
			return nil, err
		}
		fin, op := h[0]&0x80 != 0, h[0]&0x0f
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		if n > 64<<20 || uint64(len(msg))+n > 64<<20 {
			return nil, errors.New("websocket message too large")
		}
		var mask [4]byte
		if h[1]&0x80 != 0 {
			if _, err := io.ReadFull(w.br, mask[:]); err != nil {
				return nil, err
			}
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(w.br, p); err != nil {
			return nil, err
		}
		if h[1]&0x80 != 0 {
			for i := range p {
				p[i] ^= mask[i%4]
			}
		}
		switch op {
		case 0x8:
			return nil, errors.New("websocket closed by peer")
		case 0x9:
			if err := w.writeFrame(0xA, p); err != nil {
				return nil, err
			}
			continue
		case 0xA:
			continue
		}
		msg = append(msg, p...)
		if fin {
			return msg, nil
		}
	}
}

// pagePlayback is what the player page reports about its video element.
type pagePlayback struct {
	State       string  `json:"state"`
	CurrentTime float64 `json:"currentTime"`
	Frames      int     `json:"frames"`
	Dropped     int     `json:"dropped"`
	Errors      int     `json:"errors"`
	// LastError is the page's last hls.js error (type/details), if any.
	LastError string `json:"lastError,omitempty"`
}

// readPlayback reads the video element's figures straight from the page.
func (b *browser) readPlayback() (pagePlayback, error) {
	var p pagePlayback
	err := b.eval(`(function(){var v=document.querySelector("video");if(!v){return null}
var q=v.getVideoPlaybackQuality?v.getVideoPlaybackQuality():{totalVideoFrames:0,droppedVideoFrames:0};
var s=document.getElementById("stats");
return {state:s?s.dataset.state:"",currentTime:v.currentTime,frames:q.totalVideoFrames,dropped:q.droppedVideoFrames,errors:s?Number(s.dataset.errors):0,lastError:s&&s.dataset.lastError||""}})()`, &p)
	return p, err
}

// requireVideoPlays asserts from the page that video plays: currentTime
// advances by half of window and decoded frames grow over one of
// windowAttempts windows (after playback started; see observeWindows).
func (b *browser) requireVideoPlays(t *testing.T, startTimeout, window time.Duration) (first, last pagePlayback) {
	t.Helper()
	waitFor(t, startTimeout, "the page's video to start playing", func() bool {
		p, err := b.readPlayback()
		if err == nil && p.CurrentTime > 0.5 && p.Frames > 0 {
			return true
		}
		if err == nil {
			t.Logf("page: %+v", p)
		}
		return false
	})
	first, last, err := observeWindows(t, "page playback", window, b.readPlayback, func(f, l pagePlayback) error {
		if adv := l.CurrentTime - f.CurrentTime; adv <= window.Seconds()/2 {
			return fmt.Errorf("video.currentTime advanced %.2f s in %v", adv, window)
		}
		if n := l.Frames - f.Frames; n <= int(window.Seconds()*5) {
			return fmt.Errorf("%d decoded video frames in %v", n, window)
		}
		return nil
	})
	t.Logf("page playback: first %+v, after %v %+v", first, window, last)
	require.NoError(t, err, "video plays")
	return first, last
}

// windowAttempts is how many consecutive observation windows
// observeWindows watches before it reports a failure.
const windowAttempts = 3

// observeWindows watches a page over consecutive observation windows of
// length window, up to windowAttempts of them, and returns the first and
// last snapshots (take) of the first window that check passes, or check's
// error for the last window. A window that a starved machine cost
// (Chromium decoding behind a loaded CPU) is logged and watched again; a
// page that stalls or stops in every window still fails.
func observeWindows[S any](t *testing.T, what string, window time.Duration, take func() (S, error),
	check func(first, last S) error) (first, last S, err error) {
	t.Helper()
	if first, err = take(); err != nil {
		return first, first, err
	}
	for i := range windowAttempts {
		for end := time.Now().Add(window); time.Now().Before(end); {
			time.Sleep(500 * time.Millisecond) // observation window, not synchronisation
		}
		if last, err = take(); err != nil {
			return first, last, err
		}
		if err = check(first, last); err == nil {
			return first, last, nil
		}
		t.Logf("%s: window %d of %d failed: %v", what, i+1, windowAttempts, err)
		if i < windowAttempts-1 {
			first = last
		}
	}
	return first, last, err
}
