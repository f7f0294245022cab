package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// stalledRTSPReader sets up and plays url over RTSP/TCP with a tiny
// receive buffer, then never reads again: the slowest reader possible.
func stalledRTSPReader(t *testing.T, url string) net.Conn {
	t.Helper()
	host := strings.SplitN(strings.TrimPrefix(url, "rtsp://"), "/", 2)[0]
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		_ = c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return err
	}}
	c, err := d.Dial("tcp", host)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	cseq := 0
	request := func(method, u string, headers ...string) (map[string]string, string) {
		cseq++
		req := fmt.Sprintf("%s %s RTSP/1.0\r\nCSeq: %d\r\n%s\r\n", method, u, cseq, strings.Join(headers, ""))
		_, err := c.Write([]byte(req))
		require.NoError(t, err)
		status, err := br.ReadString('\n')
		require.NoError(t, err)
		require.Contains(t, status, "200", "%s: %s", method, status)
		h := map[string]string{}
		for {
			line, err := br.ReadString('\n')
			require.NoError(t, err)
			line = strings.TrimSpace(line)
			if line == "" {
				break
			}
			k, v, _ := strings.Cut(line, ":")
			h[strings.ToLower(k)] = strings.TrimSpace(v)
		}
		body := ""
		if n, _ := strconv.Atoi(h["content-length"]); n > 0 {
			b := make([]byte, n)
			_, err := io.ReadFull(br, b)
			require.NoError(t, err)
			body = string(b)
		}
		return h, body
	}
	_, sdp := request("DESCRIBE", url, "Accept: application/sdp\r\n")
	var controls []string
	for _, line := range strings.Split(sdp, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "a=control:"); ok && v != "*" {
			controls = append(controls, v)
		}
	}
	require.NotEmpty(t, controls)
	session := ""
	for i, ctl := range controls {
		u := ctl
		if !strings.HasPrefix(ctl, "rtsp://") {
			u = url + "/" + ctl
		}
		hdr := []string{fmt.Sprintf("Transport: RTP/AVP/TCP;unicast;interleaved=%d-%d\r\n", 2*i, 2*i+1)}
		if session != "" {
			hdr = append(hdr, "Session: "+session+"\r\n")
		}
		h, _ := request("SETUP", u, hdr...)
		session = strings.Split(h["session"], ";")[0]
	}
	request("PLAY", url+"/", "Session: "+session+"\r\n")
	return c // and never read again
}

// The 720p 6 Mbit/s publisher sends a clip encoded beforehand: encoded in
// real time, it fell behind on a loaded machine, and at a fraction of its
// bit rate the stalled reader's socket buffers absorbed everything until
// the write timeout dropped it (0 packets dropped: the test failed).
func TestASlowReaderLosesPacketsAloneAndNobodyElseStalls(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	clip := encodedClip(t, "1280x720", 30, "-preset", "ultrafast", "-bf", "2", "-g", "30", "-b:v", "6M", "-maxrate", "6M", "-bufsize", "2M")
	o := startOrigin(t, "COOP_RTSP_WRITEQUEUESIZE=64")
	publishClipRTMP(t, clip, o.rtmpURL("fast"))
	o.waitPublishing(t, "live/fast")
	stalledRTSPReader(t, o.rtspURL("fast"))

	// A safety bound only: the reader stops after 10 s of media.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	requireCleanPlay(t, play(ctx, o.rtspURL("fast"), "tcp", 10*time.Second), 250)

	// The stalled reader may already have been dropped by the write
	// timeout (its per-reader count goes with it): the path's drop counter
	// is cumulative, so wait on it rather than on /v1/readers.
	var dropped float64
	waitFor(t, 30*time.Second, "the stalled reader's losses to be counted", func() bool {
		dropped = metricValue(o.metrics(t), `coop_origin_rtsp_reader_dropped_packets_total{path="live/fast"}`)
		return dropped > 0
	})
	t.Logf("packets dropped for the stalled reader: %v", dropped)
	require.True(t, o.waitPublishing(t, "live/fast").Publishing, "the publisher was never stalled")
}

// metricValue returns the value of the Prometheus sample named exactly
// series (name and labels as exposed) in text, or 0.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}
