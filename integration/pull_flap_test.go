package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPullFlappingUpstreamLogsOncePerInterval: an upstream that accepts,
// plays a moment and drops every session (ffmpeg -listen, restarted after
// each end) makes the source ready again and again; the log still says
// "upstream source failed" at most once per 30 s (ratelog), not once per
// session, while the state and counters follow every session.
func TestPullFlappingUpstreamLogsOncePerInterval(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	upAddr := freeAddr(t)
	start := time.Now()
	up := rtmpListenUpstream(t, upAddr, 2*time.Second)
	edge, _ := startEdge(t, false, map[string]string{"live/flap": "rtmp://" + upAddr + "/live/up"})
	const sessions = 4
	for i := 1; i < sessions; i++ {
		// Each upstream plays 2 s to the edge and exits; the next one
		// listens on the same port.
		_ = up.wait(t, 60*time.Second)
		up = rtmpListenUpstream(t, upAddr, 2*time.Second)
	}
	_ = up.wait(t, 60*time.Second)
	waitFor(t, 30*time.Second, "the edge to see every session end", func() bool {
		s := edge.source(t, "live/flap")
		return s.Sessions >= sessions && s.State != "ready"
	})
	elapsed := time.Since(start)
	n := 0
	for _, line := range strings.Split(edge.out.String(), "\n") {
		if strings.Contains(line, "upstream source failed") && strings.Contains(line, "path=live/flap") {
			n++
		}
	}
	t.Logf("%d sessions in %v, %d log lines", edge.source(t, "live/flap").Sessions, elapsed.Round(time.Second), n)
	require.GreaterOrEqual(t, n, 1, "the failure is logged")
	require.LessOrEqual(t, n, 1+int(elapsed/(30*time.Second)), "one line per 30 s, not one per session:\n%s", edge.out.String())
}
