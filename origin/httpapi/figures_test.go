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

	"github.com/coopstreaming/coop/origin/hlsserver"
	"github.com/coopstreaming/coop/origin/pluginhost"
	"github.com/coopstreaming/coop/origin/rtspserver"
	"github.com/coopstreaming/coop/origin/stream"
	"github.com/coopstreaming/coop/plugin/pluginapi"
)

// fakeSources returns sources whose counters the test sets.
type fakeCounters struct {
	bytesIn, rtspOut, hlsOut, serverMedia, fromServer, fromPeers uint64
}

func (f *fakeCounters) sources() Sources {
	return Sources{
		Streams: func() []stream.Info {
			return []stream.Info{{Path: "live/x", Publishing: true, BytesIn: f.bytesIn, BytesOut: f.rtspOut, Readers: 2}}
		},
		Readers:  func() []rtspserver.Reader { return nil },
		Gatherer: prometheus.NewRegistry(),
		HLS:      func() []hlsserver.StreamStats { return []hlsserver.StreamStats{{Path: "live/x", BytesSent: f.hlsOut}} },
		Extra: map[string]func() any{"p2p": func() any {
			return pluginhost.Status{Enabled: true, Up: true, Streams: []pluginapi.StreamStats{{
				Stream: "live/x", Peers: 4, ServerMediaBytes: f.serverMedia,
				PeerBytesFromServer: f.fromServer, PeerBytesFromPeers: f.fromPeers, Continuity: 1,
			}}}
		}},
		HLSAddress: ":8888",
	}
}

func TestLiveFiguresSitBesideLifetimeTotals(t *testing.T) {
	f := &fakeCounters{bytesIn: 1e6, rtspOut: 1e6, serverMedia: 3e6, fromServer: 6e6, fromPeers: 4e6} // lifetime offload 0.4
	src := f.sources()
	h := &History{Sources: src, Length: 120}
	t0 := time.Unix(1000, 0)
	h.Sample(t0)
	// The next minute: 7.5 MB in (1000 kbit/s), peers got 8 MB from peers, 2 MB from the server.
	f.bytesIn += 7.5e6
	f.rtspOut += 7.5e6
	f.hlsOut += 3.75e6
	f.serverMedia += 2e6
	f.fromServer += 2e6
	f.fromPeers += 8e6
	h.Sample(t0.Add(LiveWindow))
	figs := h.Figures()
	require.Len(t, figs, 1)
	g := figs[0]
	require.InDelta(t, 1000, g.IngestKbps, 0.01)
	require.InDelta(t, 1000, g.RTSPOutKbps, 0.01)
	require.InDelta(t, 500, g.HLSOutKbps, 0.01)
	require.InDelta(t, 266.67, g.P2POutKbps, 0.01)
	require.InDelta(t, 1766.67, g.OutKbps, 0.01)
	require.NotNil(t, g.Offload)
	require.InDelta(t, 0.8, *g.Offload, 1e-9, "offload over the last minute")
	require.InDelta(t, 12.0/20, *g.OffloadLifetime, 1e-9, "lifetime offload")
	require.Equal(t, uint64(8.5e6+3.75e6+5e6), g.BytesOut, "bytes out = RTSP + HLS + P2P")
	require.Len(t, h.Series()["live/x"], 1)

	src.History = h
	srv := httptest.NewServer(Handler(src, slog.Default()))
	defer srv.Close()
	get := func(path string) string {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	page := get("/")
	require.Contains(t, page, "1000 kbit/s")
	require.Contains(t, page, "80.0 %")
	require.Contains(t, page, "60.0 %")
	require.Contains(t, page, "17.2 MB")
	require.Contains(t, page, `href="http://127.0.0.1:8888/live/x"`, "the stream links to its player")
	require.Contains(t, get("/v1/p2p"), `"offloadLastMinute": 0.8`)
	require.Contains(t, get("/v1/figures"), `"ingestKbps": 1000`)
	require.Contains(t, get("/v1/history"), `"live/x"`)
	require.Contains(t, get("/_coop/status.js"), "/v1/history")
	require.Contains(t, get("/_coop/hls.min.js"), "Hls")

	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(srv.URL + "/live/x")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode)
	require.Equal(t, "http://127.0.0.1:8888/live/x", resp.Header.Get("Location"))
}

func TestHistoryIsBounded(t *testing.T) {
	f := &fakeCounters{}
	h := &History{Sources: f.sources(), Length: 5}
	for i := range 50 {
		f.bytesIn += 1000
		h.Sample(time.Unix(int64(i), 0))
	}
	require.Len(t, h.samples(), 5)
	require.Equal(t, time.Unix(49, 0), h.samples()[4].at, "newest last")
}

func TestHumanUnits(t *testing.T) {
	require.Equal(t, "999 B", humanBytes(999))
	require.Equal(t, "1.5 kB", humanBytes(1500))
	require.Equal(t, "2.5 MB", humanBytes(2.5e6))
	require.Equal(t, "3.00 GB", humanBytes(3e9))
	require.Equal(t, "850 kbit/s", humanRate(850))
	require.Equal(t, "12.5 Mbit/s", humanRate(12500))
	require.Equal(t, "–", percent((*float64)(nil)))
	require.Equal(t, "70 % / 20 % / 10 %", percents([]float64{0.7, 0.2, 0.1}))
}
