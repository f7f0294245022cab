package webassets

import (
	"bytes"
	"compress/gzip"
	"embed"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// watchFS holds the browser peer's page: index.html and watch.js
// (committed) and dist/peer.wasm.gz, dist/wasm_exec.js (written by
// watch/build-wasm.sh — `make wasm`, `make build`, `go generate` — before
// `go build`; see watch/dist/README.md).
//
//go:generate ./watch/build-wasm.sh
//go:embed watch
var watchFS embed.FS

// WatchPrefix is the path the watch handler serves under.
const WatchPrefix = "/watch/"

// watchAssets is the reserved directory of the page's files under
// WatchPrefix (a stream is app/key; "_" is no app name the origin makes).
const watchAssets = "_/"

// built stamps the embedded files for conditional requests.
var built = time.Now()

// WatchBuilt tells whether the binary embeds the browser peer (make wasm
// ran before go build).
func WatchBuilt() bool {
	_, err := fs.Stat(watchFS, "watch/dist/peer.wasm.gz")
	return err == nil
}

// Watch serves the browser peer under WatchPrefix (mount it there, without
// stripping the prefix): /watch/APP/KEY is the page that joins stream
// APP/KEY, /watch/_/watch.js, /watch/_/wasm_exec.js and /watch/_/peer.wasm
// its files. The page finds the signalling endpoint at /rtc/signal on the
// same host (docs/webrtc.md).
func Watch() http.Handler {
	page, _ := watchFS.ReadFile("watch/index.html")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		rest, ok := strings.CutPrefix(r.URL.Path, WatchPrefix)
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if name, isAsset := strings.CutPrefix(rest, watchAssets); isAsset {
			serveWatchAsset(w, r, path.Clean("/" + name)[1:])
			return
		}
		if strings.Count(rest, "/") != 1 || strings.HasPrefix(rest, "/") || strings.HasSuffix(rest, "/") {
			http.Error(w, "watch a stream at "+WatchPrefix+"APP/KEY", http.StatusNotFound)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "index.html", built, bytes.NewReader(page))
	})
}

func serveWatchAsset(w http.ResponseWriter, r *http.Request, name string) {
	var file string
	switch name {
	case "watch.js":
		file = "watch/watch.js"
	case "wasm_exec.js":
		file = "watch/dist/" + name
	case "peer.wasm":
		file = "watch/dist/peer.wasm.gz"
	default:
		http.NotFound(w, r)
		return
	}
	b, err := watchFS.ReadFile(file)
	if err != nil {
		http.Error(w, name+" is not built into this binary: run `make wasm` (or `make build`) before go build",
			http.StatusServiceUnavailable)
		return
	}
	if name == "peer.wasm" {
		// Embedded gzipped (5.4 MB → 1.4 MB); the rare client without
		// gzip gets it inflated.
		w.Header().Set("Content-Type", "application/wasm")
		w.Header().Set("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			w.Header().Set("Content-Encoding", "gzip")
		} else if b, err = gunzip(b); err != nil {
			http.Error(w, "peer.wasm: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, built, bytes.NewReader(b))
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(enc) == "gzip" && strings.ReplaceAll(q, " ", "") != "q=0" {
			return true
		}
	}
	return false
}

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}
