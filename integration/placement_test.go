package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/cluster/redistest"
)

// describeStatus sends one raw RTSP DESCRIBE for url to addr and returns
// the status code and the Location header.
func describeStatus(addr, url string) (int, string, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "DESCRIBE %s RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n", url); err != nil {
		return 0, "", err
	}
	tp := textproto.NewReader(bufio.NewReader(c))
	line, err := tp.ReadLine()
	if err != nil {
		return 0, "", err
	}
	var code int
	if _, err := fmt.Sscanf(line, "RTSP/1.0 %d", &code); err != nil {
		return 0, "", fmt.Errorf("status line %q: %w", line, err)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return code, "", err
	}
	return code, h.Get("Location"), nil
}

// playlistStatus GETs an HLS playlist without following redirects.
func playlistStatus(url string) (int, string, error) {
	cl := &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location"), nil
}

// rtspReaders is a stream's RTSP readers on o (from /v1/streams).
func (o *originProc) rtspReaders(path string) int {
	var body struct {
		Streams []struct {
			Path    string `json:"path"`
			Readers int    `json:"readers"`
		} `json:"streams"`
	}
	if tryGetJSON("http://"+o.httpAddr+"/v1/streams", &body) != nil {
		return -1
	}
	for _, s := range body.Streams {
		if s.Path == path {
			return s.Readers
		}
	}
	return 0
}

// longReader reads url over RTSP/TCP for d with ffmpeg, without
// decoding (a viewer that holds a node's reader slot, cheaply).
func longReader(t *testing.T, url string, d time.Duration) *proc {
	return startProcess(t, nil, "ffmpeg", "-hide_banner", "-nostats", "-v", "error", "-rtsp_transport", "tcp",
		"-i", url, "-t", fmt.Sprint(int(d.Seconds())), "-c", "copy", "-f", "null", "-")
}

// TestPlacementRedirectsReadersByLoad runs a real redis-server and two
// origins sharing it, both publishing live/place, with
// cluster.placement.maxReaders 3 on both. Node A holds three RTSP
// readers (its limit): a new RTSP reader of A gets 302 Found to B and ffprobe and
// ffmpeg follow it and decode from B; an HLS client of A gets a 302 to
// B's playlist and ffmpeg plays it. With Redis down A serves everyone
// itself, and redirects again once Redis is back; hls.js in Chromium on
// A's player page follows the HLS 302 to B. Once B is at its limit too, A
// serves new readers itself and so does B (never to a full node: no
// loop).
func TestPlacementRedirectsReadersByLoad(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg", "ffprobe")
	takeBrowserLaneIfInstalled(t)
	srv := redistest.Start(t)
	node := func(id string) []string {
		return []string{"COOP_CLUSTER_REDIS=" + srv.Addr, "COOP_CLUSTER_NODEID=" + id,
			"COOP_CLUSTER_HEARTBEAT=500ms", "COOP_CLUSTER_TTL=2s", "COOP_CLUSTER_PLACEMENT_MAXREADERS=3"}
	}
	a := startOrigin(t, node("node-a")...)
	b := startOrigin(t, node("node-b")...)
	// The publishers and node-a's readers outlast the test on a slow
	// machine (the cleanup stops them): the player page comes last.
	publishRTMP(t, a.rtmpURL("place"), 300*time.Second, "320x240")
	publishRTMP(t, b.rtmpURL("place"), 300*time.Second, "320x240")
	a.waitPublishing(t, "live/place")
	b.waitPublishing(t, "live/place")
	waitFor(t, 20*time.Second, "node-a's view shows both nodes serving live/place", func() bool {
		v, ok := a.cluster()
		return ok && len(v.Nodes) == 2 && len(v.Streams) == 1 && len(v.Streams[0].OtherOrigins) == 1
	})

	// Below its limit A serves a reader itself.
	code, _, err := describeStatus(a.rtsp, a.rtspURL("place"))
	require.NoError(t, err)
	require.Equal(t, 200, code, "node-a below its limit serves the reader")

	// The limit leaves room for the test's own probes: each DESCRIBE
	// answered 302 counts as a reader sent to node-b until the next view,
	// and node-b's entry may still show ffprobe's reader for a heartbeat.
	for range 3 {
		longReader(t, a.rtspURL("place"), 300*time.Second)
	}
	waitFor(t, 20*time.Second, "node-a at its limit (3 RTSP readers)", func() bool { return a.rtspReaders("live/place") == 3 })

	bRTSP := "rtsp://" + b.rtsp + "/live/place"
	redirectedToB := func() bool {
		code, loc, err := describeStatus(a.rtsp, a.rtspURL("place"))
		return err == nil && code == 302 && loc == bRTSP
	}
	waitFor(t, 20*time.Second, "node-a redirects a new RTSP reader to node-b (302 Found)", redirectedToB)
	codecs := map[string]bool{}
	for _, c := range probeCodecs(t, a.rtspURL("place")) {
		codecs[c] = true
	}
	require.Equal(t, map[string]bool{"h264": true, "aac": true}, codecs, "ffprobe follows the 302 and reads node-b")

	// A reader that follows the redirect decodes from B: B counts it.
	waitFor(t, 20*time.Second, "node-a redirects again", redirectedToB)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	played := make(chan playResult, 1)
	go func() { played <- play(ctx, a.rtspURL("place"), "tcp", 6*time.Second) }()
	waitFor(t, 20*time.Second, "the redirected reader playing on node-b", func() bool { return b.rtspReaders("live/place") == 1 })
	require.Equal(t, 3, a.rtspReaders("live/place"), "node-a kept its three readers only")
	res := <-played
	require.NoError(t, res.err, "%v", res.errors)
	require.Empty(t, res.errors, "decode errors on the redirected reader")
	require.GreaterOrEqual(t, res.frames, 120, "6 s at 30 fps from node-b")

	// HLS: the entry playlist answers 302 to node-b's, ffmpeg follows it.
	bHLS := "http://" + b.hls + "/live/place/index.m3u8"
	aHLS := "http://" + a.hls + "/live/place/index.m3u8"
	waitFor(t, 20*time.Second, "node-a redirects an HLS client to node-b (302)", func() bool {
		code, loc, err := playlistStatus(aHLS)
		return err == nil && code == 302 && loc == bHLS
	})
	res = playWith(ctx, aHLS, 5*time.Second, nil)
	require.NoError(t, res.err, "%v", res.errors)
	require.Empty(t, res.errors, "decode errors on the redirected HLS client")
	require.GreaterOrEqual(t, res.frames, 100, "5 s at 30 fps over HLS from node-b")
	require.Regexp(t, `coop_origin_redirects_total [1-9]`, a.metrics(t))

	// The registry unreachable: once node-a's view is older than the TTL
	// it serves every reader itself; a restarted (empty) Redis is filled
	// again by the heartbeats and the redirects resume.
	srv.Stop()
	waitFor(t, 20*time.Second, "node-a serves readers itself while Redis is down", func() bool {
		code, _, err := describeStatus(a.rtsp, a.rtspURL("place"))
		return err == nil && code == 200
	})
	srv.Restart()
	waitFor(t, 20*time.Second, "node-a redirects again once Redis is back", redirectedToB)

	// hls.js in Chromium on node-a's player page follows the 302 too and
	// plays from node-b (its requests name node-b's HLS port).
	if _, err := exec.LookPath("chromium"); err == nil {
		waitFor(t, 20*time.Second, "node-a redirects HLS clients again", func() bool {
			code, _, err := playlistStatus(aHLS)
			return err == nil && code == 302
		})
		br := startBrowser(t)
		br.navigate("http://" + a.hls + "/live/place")
		br.requireVideoPlays(t, 40*time.Second, 4*time.Second)
		var fromB int
		require.NoError(t, br.eval(`performance.getEntriesByType("resource").filter(e => e.name.includes("//`+b.hls+`/")).length`, &fromB))
		require.Positive(t, fromB, "the page's media requests went to node-b")
		t.Logf("hls.js on node-a's page: %d requests to node-b", fromB)
	} else {
		t.Log("chromium not installed: the hls.js part is skipped")
	}

	// B at its limit too: nobody has room, each node serves its own
	// readers (no redirect to a full node, so no loop).
	for range 3 {
		longReader(t, bRTSP, 60*time.Second)
	}
	waitFor(t, 20*time.Second, "node-b at its limit", func() bool { return b.rtspReaders("live/place") >= 3 })
	waitFor(t, 20*time.Second, "node-a serves new readers itself once node-b is full", func() bool {
		code, _, err := describeStatus(a.rtsp, a.rtspURL("place"))
		return err == nil && code == 200
	})
	code, loc, err := describeStatus(b.rtsp, bRTSP)
	require.NoError(t, err)
	require.Equal(t, 200, code, "node-b does not send a reader to the full node-a (Location %q)", loc)
	require.False(t, strings.Contains(b.out.String(), "panic"))
}
