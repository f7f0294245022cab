package httpapi

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"
)

// NewServer returns the API's http.Server with every timeout from the
// origin's timeout: a client must send its request headers and body within
// it (slowloris) and an idle keep-alive connection is closed after it.
// There is no write timeout, so a long /debug/pprof/profile still works.
func NewServer(h http.Handler, timeout time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: timeout,
		ReadTimeout:       timeout,
		IdleTimeout:       timeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// WithPprof serves Go's profiler (net/http/pprof) under /debug/pprof/ in
// front of h. Only for a trusted network: call it when http.pprof is on.
func WithPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/", h)
	return mux
}
