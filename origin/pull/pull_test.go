package pull

import (
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/origin/stream"
)

func TestValidateNamesTheBadPart(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  Source
		want string
	}{
		{"an http URL is refused", Source{URL: "http://x/y"}, "scheme must be rtsp or rtmp"},
		{"a URL without host is refused", Source{URL: "rtsp:///y"}, "no host"},
		{"an rtmp URL without app/stream is refused", Source{URL: "rtmp://x"}, "APP/STREAM"},
		{"an unknown transport is refused", Source{URL: "rtsp://x/y", RTSPTransport: "sctp"}, "rtspTransport"},
		{"credentials never appear in errors", Source{URL: "ftp://me:secret@x/y"}, "***"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.src)
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "secret")
		})
	}
	require.NoError(t, Validate(Source{URL: "rtsp://cam:554/s", RTSPTransport: "tcp"}))
	require.NoError(t, Validate(Source{URL: "rtmp://srs/live/show"}))
}

func TestRedactHidesCredentials(t *testing.T) {
	require.Equal(t, "rtsp://***@cam:554/s", redact("rtsp://u:p@cam:554/s"))
	require.Equal(t, "rtmp://srs/live/x", redact("rtmp://srs/live/x"))
}

// TestUnreachableSourceBacksOffAndReports runs the supervisor against a
// port nobody listens on: the state says failed with the error, retries
// grow with the backoff (not in a tight loop), metrics follow.
func TestUnreachableSourceBacksOffAndReports(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close())
	m := &Manager{
		Sources: []Source{{Path: "live/x", URL: "rtsp://" + dead + "/x", RTSPTransport: "tcp"}},
		Streams: &stream.Manager{}, MinBackoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond,
		Timeout: time.Second, Log: slog.New(slog.DiscardHandler),
	}
	require.NoError(t, m.Start())
	defer m.Close()
	start := time.Now()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && m.Status()[0].Retries < 5 {
		time.Sleep(10 * time.Millisecond)
	}
	st := m.Status()[0]
	require.GreaterOrEqual(t, st.Retries, uint64(5))
	// 20+40+80+80 ms of backoff at least before the fifth failure.
	require.GreaterOrEqual(t, time.Since(start), 220*time.Millisecond, "retries wait for the backoff")
	require.Contains(t, st.LastError, "connection refused")
	require.Zero(t, st.Sessions)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			v := mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
			got[mf.GetName()+"{"+mt.GetLabel()[0].GetValue()+"}"] = v
		}
	}
	require.Equal(t, 0.0, got["coop_origin_source_up{live/x}"])
	require.GreaterOrEqual(t, got["coop_origin_source_failures_total{live/x}"], 5.0)
	require.Equal(t, 0.0, got["coop_origin_source_sessions_total{live/x}"])
}
