package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sourceStatus mirrors one entry of the origin's /v1/sources.
type sourceStatus struct {
	Path      string `json:"path"`
	URL       string `json:"url"`
	State     string `json:"state"`
	LastError string `json:"lastError"`
	Retries   uint64 `json:"retries"`
	Sessions  uint64 `json:"sessions"`
}

func (o *originProc) sources(t *testing.T) []sourceStatus {
	t.Helper()
	var out []sourceStatus
	getJSON(t, "http://"+o.httpAddr+"/v1/sources", &out)
	return out
}

func (o *originProc) source(t *testing.T, path string) sourceStatus {
	t.Helper()
	for _, s := range o.sources(t) {
		if s.Path == path {
			return s
		}
	}
	t.Fatalf("no source for %s in /v1/sources", path)
	return sourceStatus{}
}

// startEdge starts an origin whose coop.yml pulls path from source, with
// the P2P plugin on when p2p is set (its peer address is returned).
func startEdge(t *testing.T, p2p bool, paths map[string]string) (*originProc, string) {
	t.Helper()
	var yml strings.Builder
	yml.WriteString("paths:\n")
	for path, src := range paths {
		fmt.Fprintf(&yml, "  %s:\n    source: %q\n    rtspTransport: tcp\n", path, src)
	}
	cfg := filepath.Join(t.TempDir(), "coop.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(yml.String()), 0o600))
	return launchOrigin(t, p2p, nil, "-config", cfg)
}

// rtmpListenUpstream is ffmpeg acting as an RTMP server (the stand-in for
// nginx-rtmp or SRS): it waits for one player and sends it a test pattern.
func rtmpListenUpstream(t *testing.T, addr string, d time.Duration) *proc {
	t.Helper()
	args := append(testPatternArgs("320x240", "-preset", "ultrafast", "-g", "30", "-bf", "2"),
		"-t", fmt.Sprint(int(d.Seconds())), "-f", "flv", "-listen", "1", "rtmp://"+addr+"/live/up")
	return startProcess(t, nil, "ffmpeg", args...)
}

// TestPullRTSPUpstreamServedOverRTSPAndP2P: an edge origin pulls an RTSP
// upstream (a second coop-origin that ffmpeg pushes to) and serves it to
// an RTSP reader, over LL-HLS and, through the real plugin, to a real
// coop-peer.
func TestPullRTSPUpstreamServedOverRTSPAndP2P(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg", "ffprobe")
	up := startOrigin(t)
	publishRTMP(t, up.rtmpURL("cam"), 60*time.Second, "320x240", "-preset", "ultrafast", "-g", "30", "-bf", "2")
	up.waitPublishing(t, "live/cam")

	edge, peerAddr := startEdge(t, true, map[string]string{"live/edge": "rtsp://" + up.rtsp + "/live/cam"})
	edge.waitPublishing(t, "live/edge")
	src := edge.source(t, "live/edge")
	require.Equal(t, "ready", src.State, "source %+v", src)
	require.ElementsMatch(t, []string{"H264", "AAC"}, findStream(t, edge, "live/edge").Tracks)

	res := play(readerBound(t), edge.rtspURL("edge"), "tcp", 6*time.Second)
	require.NoError(t, res.err, "ffmpeg on the edge's RTSP: %v", res.errors)
	require.Empty(t, res.errors, "decode errors on the edge's RTSP")
	require.GreaterOrEqual(t, res.frames, 150, "6 s at 30 fps from the edge")

	res = play(readerBound(t), "http://"+edge.hls+"/live/edge/index.m3u8", "", 6*time.Second)
	require.NoError(t, res.err, "ffmpeg on the edge's HLS: %v", res.errors)
	require.Empty(t, res.errors, "decode errors on the edge's HLS")
	require.GreaterOrEqual(t, res.frames, 150, "6 s at 30 fps from the edge's HLS")

	peer := startPeer(t, peerAddr, "live/edge")
	waitFor(t, 30*time.Second, "coop-peer playing the pulled stream", func() bool { return peer.playing(6) })
	res = play(readerBound(t), peer.url(), "", 6*time.Second)
	require.NoError(t, res.err, "ffmpeg on the peer's output: %v", res.errors)
	require.Empty(t, res.errors, "decode errors on the peer's output")
	require.GreaterOrEqual(t, res.frames, 150, "6 s at 30 fps through P2P")
}

func findStream(t *testing.T, o *originProc, path string) streamInfo {
	t.Helper()
	for _, s := range o.streams(t) {
		if s.Path == path {
			return s
		}
	}
	t.Fatalf("no stream %s", path)
	return streamInfo{}
}

// TestPullRTMPUpstreamReconnects: an edge pulls an RTMP server (ffmpeg
// -listen 1); the upstream dies and comes back on the same port while an
// RTSP reader plays from the edge: the source reconnects and the reader,
// kept attached through the grace period, plays on.
func TestPullRTMPUpstreamReconnects(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg", "ffprobe")
	upAddr := freeAddr(t)
	first := rtmpListenUpstream(t, upAddr, 60*time.Second)
	edge, _ := startEdge(t, false, map[string]string{"live/relay": "rtmp://" + upAddr + "/live/up"})
	edge.waitPublishing(t, "live/relay")
	require.Equal(t, "ready", edge.source(t, "live/relay").State)
	require.ElementsMatch(t, []string{"H264", "AAC"}, findStream(t, edge, "live/relay").Tracks)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	reader := make(chan playResult, 1)
	go func() { reader <- play(ctx, edge.rtspURL("relay"), "tcp", 20*time.Second) }()
	waitFor(t, 15*time.Second, "the RTSP reader on the edge", func() bool {
		s := findStream(t, edge, "live/relay")
		return s.BytesOut > 100_000
	})

	// The upstream dies: the source fails and retries.
	require.NoError(t, first.cmd.Process.Kill())
	_ = first.wait(t, 10*time.Second)
	waitFor(t, 15*time.Second, "the source to notice", func() bool {
		return edge.source(t, "live/relay").Retries >= 1
	})
	// It comes back on the same port: the edge reconnects.
	rtmpListenUpstream(t, upAddr, 60*time.Second)
	waitFor(t, 30*time.Second, "the source to be ready again", func() bool {
		s := edge.source(t, "live/relay")
		return s.State == "ready" && s.Sessions >= 2
	})
	res := <-reader
	t.Logf("reader across the upstream restart: %d frames, errors %v", res.frames, res.errors)
	require.NoError(t, res.err, "reader: %v", res.errors)
	require.GreaterOrEqual(t, res.frames, 500, "20 s of media at 30 fps: the reader played on after the upstream came back")
	require.Greater(t, findStream(t, edge, "live/relay").Resumes, uint64(0), "the stream resumed with readers kept")
}

// TestPullUnreachableUpstream: a source nobody listens on gives a failed
// state with the error and a growing retry count, a rate-limited log
// line, and an origin that stays up and serves.
func TestPullUnreachableUpstream(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	dead := freeAddr(t)
	edge, _ := startEdge(t, false, map[string]string{
		"live/gone":  "rtsp://" + dead + "/live/x",
		"live/gone2": "rtmp://" + dead + "/live/x",
	})
	waitFor(t, 30*time.Second, "three retries of each source", func() bool {
		for _, s := range edge.sources(t) {
			if s.State != "failed" || s.Retries < 3 {
				return false
			}
		}
		return true
	})
	for _, s := range edge.sources(t) {
		require.Contains(t, s.LastError, "connection refused", "%+v", s)
		require.Zero(t, s.Sessions)
	}
	// The status page shows each source's state and error (from the
	// same data as /v1/sources).
	code, page := httpGet(t, "http://"+edge.httpAddr+"/")
	require.Equal(t, 200, code)
	for _, path := range []string{"live/gone", "live/gone2"} {
		require.Contains(t, page, `<tr data-path="`+path+`" data-state="failed">`, "the status page shows %s failed:\n%s", path, page)
	}
	require.Contains(t, page, "connection refused", "the status page shows the last error")
	metrics := edge.metrics(t)
	require.Contains(t, metrics, `coop_origin_source_up{path="live/gone"} 0`)
	require.Contains(t, metrics, `coop_origin_source_failures_total{path="live/gone2"}`)
	logs := edge.out.String()
	for _, path := range []string{"live/gone ", "live/gone2 "} {
		n := 0
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, "upstream source failed") && strings.Contains(line, "path="+path) {
				n++
			}
		}
		require.Equal(t, 1, n, "one log line for %s within the first backoff period, not one per retry:\n%s", path, logs)
	}
	// The origin stays up and keeps serving pushes.
	publishRTMP(t, edge.rtmpURL("pushed"), 20*time.Second, "320x240", "-preset", "ultrafast")
	edge.waitPublishing(t, "live/pushed")
	require.False(t, processGone(edge.cmd.Process.Pid), "the origin is still running")
}
