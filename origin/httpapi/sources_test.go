package httpapi

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/origin/pull"
	"github.com/coopstreaming/coop/origin/rtspserver"
	"github.com/coopstreaming/coop/origin/stream"
)

func statusPageWith(t *testing.T, extra map[string]func() any) string {
	t.Helper()
	h := Handler(Sources{
		Streams: func() []stream.Info { return nil }, Readers: func() []rtspserver.Reader { return nil },
		Gatherer: prometheus.NewRegistry(), Extra: extra,
	}, slog.Default())
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	b, err := io.ReadAll(rec.Body)
	require.NoError(t, err)
	return string(b)
}

func TestTheStatusPageShowsEachPulledSourceWithItsState(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ss := []pull.Status{
		{Path: "live/cam", URL: "rtsp://***@10.0.0.9/cam", State: pull.StateReady, Since: since, Sessions: 2, Retries: 1},
		{Path: "live/gone", URL: "rtmp://10.0.0.8/live/x", State: pull.StateFailed, Since: since, Retries: 7,
			LastError: "dial tcp 10.0.0.8:1935: connect: connection refused <script>"},
		{Path: "live/new", URL: "rtsp://10.0.0.7/a", State: pull.StateConnecting, Since: since},
	}
	page := statusPageWith(t, map[string]func() any{"sources": func() any { return ss }})
	require.Contains(t, page, "<h2>Pulled sources</h2>")
	require.Contains(t, page, `<tr data-path="live/cam" data-state="ready"><td>live/cam</td><td>rtsp://***@10.0.0.9/cam</td><td class="state-ready">ready</td><td>03:04:05 UTC</td><td>1</td><td>2</td>`)
	require.Contains(t, page, `<tr data-path="live/gone" data-state="failed">`)
	require.Contains(t, page, `<td class="state-failed">failed</td><td>03:04:05 UTC</td><td>7</td><td>0</td><td class="err">dial tcp 10.0.0.8:1935: connect: connection refused &lt;script&gt;</td>`,
		"the last error, escaped")
	require.Contains(t, page, `<tr data-path="live/new" data-state="connecting">`)
	require.NotContains(t, page, "refused <script>", "an upstream's error text is never markup")
}

func TestTheStatusPageHasNoSourcesSectionWithoutPulledPaths(t *testing.T) {
	require.NotContains(t, statusPageWith(t, map[string]func() any{"sources": func() any { return []pull.Status{} }}), "Pulled sources")
	require.NotContains(t, statusPageWith(t, nil), "Pulled sources")
}
