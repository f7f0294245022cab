// Package webpage is coop-peer's page at http://127.0.0.1:8090/: a player
// (hls.js, embedded from package webassets, no CDN) for the peer's local
// HLS, and the peer's live stats (partners, layers, continuity, share from
// peers, upload) polled from /stats.
package webpage

import (
	_ "embed"
	"html/template"
	"net/http"

	"github.com/coopstreaming/coop/webassets"
)

//go:embed index.html
var indexHTML string

var page = template.Must(template.New("index").Parse(indexHTML))

// Page describes what the page links to.
type Page struct {
	// Stream is the stream name, e.g. "live/KEY".
	Stream string
	// HLSPath is the local HLS playlist path, e.g. "/live/KEY/index.m3u8".
	HLSPath string
	// HLS, RTSP and TS are the full URLs shown to the viewer ("" hides RTSP).
	HLS, RTSP, TS string
}

// Register adds GET / and GET /hls.min.js to mux.
func Register(mux *http.ServeMux, p Page) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = page.Execute(w, p)
	})
	mux.HandleFunc("GET /hls.min.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "max-age=86400")
		_, _ = w.Write(webassets.HLSJS)
	})
}
