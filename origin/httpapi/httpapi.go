// Package httpapi serves the origin's JSON API, Prometheus metrics and a
// small status page.
package httpapi

import (
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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
			out[k] = f()
		}
		writeJSON(w, out)
	})
	for name, f := range src.Extra {
		mux.HandleFunc("GET /v1/"+name, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, f()) })
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(src.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		data := map[string]any{"Streams": src.Streams(), "Readers": src.Readers()}
		if f, ok := src.Extra["p2p"]; ok {
			data["P2P"] = f()
		}
		_ = statusPage.Execute(w, data)
	})
	return mux
}

var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5"><title>CoopStreaming origin</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style></head>
<body><h1>CoopStreaming origin</h1>
<h2>Streams</h2>
<table><tr><th>path</th><th>publishing</th><th>publisher</th><th>tracks</th><th>bytes in</th><th>bytes out</th><th>segments</th><th>layer shares</th></tr>
{{range .Streams}}<tr><td>{{.Path}}</td><td>{{.Publishing}}</td><td>{{.Protocol}} {{.Publisher}}</td><td>{{.Tracks}}</td><td>{{.BytesIn}}</td><td>{{.BytesOut}}</td><td>{{.Segments}}</td><td>{{.LayerShares}}</td></tr>
{{else}}<tr><td colspan="8">no stream</td></tr>{{end}}</table>
<h2>RTSP readers</h2>
<table><tr><th>path</th><th>remote</th><th>transport</th><th>bytes sent</th><th>dropped packets</th></tr>
{{range .Readers}}<tr><td>{{.Path}}</td><td>{{.Remote}}</td><td>{{.Transport}}</td><td>{{.BytesSent}}</td><td>{{.Dropped}}</td></tr>
{{else}}<tr><td colspan="5">no reader</td></tr>{{end}}</table>
{{with .P2P}}<h2>P2P plugin</h2>
{{if .Enabled}}<p>{{if .Up}}up, pid {{.PID}}, peer port {{.PeerAddress}}{{else}}down{{end}} · starts {{.Starts}} · restarts {{.Restarts}} · segments pushed {{.SegmentsPushed}}, dropped {{.SegmentsDropped}}{{with .LastError}} · last error: {{.}}{{end}}</p>
<p>Stream public key (for <code>coop-peer --stream-key</code>): <code>{{.StreamPublicKey}}</code></p>
<table><tr><th>stream</th><th>peers</th><th>server media bytes</th><th>peer bytes from server</th><th>peer bytes from peers</th><th>offload</th><th>continuity</th></tr>
{{range .Streams}}<tr><td>{{.Stream}}</td><td>{{.Peers}}</td><td>{{.ServerMediaBytes}}</td><td>{{.PeerBytesFromServer}}</td><td>{{.PeerBytesFromPeers}}</td><td>{{printf "%.3f" .Offload}}</td><td>{{printf "%.3f" .Continuity}}</td></tr>
{{else}}<tr><td colspan="7">no swarm</td></tr>{{end}}</table>
{{else}}<p>disabled</p>{{end}}{{end}}
<p>JSON: <a href="/v1/status">/v1/status</a>, <a href="/v1/p2p">/v1/p2p</a> · metrics: <a href="/metrics">/metrics</a></p>
</body></html>`))
