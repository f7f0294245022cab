// Package httpapi serves the origin's JSON API, Prometheus metrics and a
// small status page.
package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/coopstreaming/coop/origin/hlsserver"
	"github.com/coopstreaming/coop/origin/rtspserver"
	"github.com/coopstreaming/coop/origin/stream"
)

// Sources provide what the API reports.
type Sources struct {
	Streams  func() []stream.Info
	Readers  func() []rtspserver.Reader
	Gatherer prometheus.Gatherer
	// Extra adds named sections to /v1/status (e.g. the plugin's stats).
	Extra map[string]func() any
	// HLS reports the HLS server's per-stream figures (optional).
	HLS func() []hlsserver.StreamStats
	// HLSAddress is the HLS listen address, for the player links ("": off).
	HLSAddress string
	// History holds the sampled figures behind /v1/figures, /v1/history
	// and the status page's plots (optional).
	History *History
}

// Handler returns the HTTP handler.
func Handler(src Sources, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			log.Debug("api write", "err", err)
		}
	}
	mux.HandleFunc("GET /v1/streams", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"streams": src.Streams()})
	})
	mux.HandleFunc("GET /v1/readers", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"readers": src.Readers()})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		out := map[string]any{"streams": src.Streams(), "readers": src.Readers(), "time": time.Now()}
		for k, f := range src.Extra {
			out[k] = src.view(f())
		}
		out["figures"] = src.figures()
		writeJSON(w, out)
	})
	for name, f := range src.Extra {
		mux.HandleFunc("GET /v1/"+name, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, src.view(f())) })
	}
	src.register(mux, writeJSON)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(src.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /{$}", src.serveStatus)
	return mux
}
