// Package webui holds the origin's browser pages: the player page of a
// stream (hls.js from webassets, vendored from the npm package and embedded
// in the binary: no CDN) and the script that draws the status page's live
// plots from the JSON API.
package webui

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"time"

	"github.com/coopstreaming/coop/webassets"
)

//go:embed static
var static embed.FS

//go:embed player.html
var playerHTML string

var playerPage = template.Must(template.New("player").Parse(playerHTML))

// HLSVersion is the vendored hls.js release.
const HLSVersion = webassets.HLSVersion

// Assets serves the embedded files (hls.min.js and its licence from
// webassets, status.js), meant to be mounted under /_coop/.
func Assets() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	fsrv := http.FileServerFS(sub)
	var built time.Time
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		switch r.URL.Path {
		case "/hls.min.js":
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			http.ServeContent(w, r, "hls.min.js", built, bytes.NewReader(webassets.HLSJS))
		case "/hls.js.LICENSE":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			http.ServeContent(w, r, "hls.js.LICENSE", built, bytes.NewReader(webassets.HLSLicense))
		default:
			fsrv.ServeHTTP(w, r)
		}
	})
}

// Player writes the player page of streamPath ("live/KEY"); the page
// plays /STREAM/index.m3u8 from the same host and port (so the browser's
// basic-auth credentials, when reading needs them, cover the media too).
func Player(w http.ResponseWriter, _ *http.Request, streamPath string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = playerPage.Execute(w, map[string]string{
		"Path": streamPath, "Playlist": "/" + streamPath + "/index.m3u8", "HLSVersion": HLSVersion,
	})
}
