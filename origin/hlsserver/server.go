// Package hlsserver serves every live stream of the origin over HLS:
// Low-Latency HLS with fMP4 parts by default (gohlslib's muxer), or plain
// fMP4 / MPEG-TS HLS. It is one more consumer of the stream fan-out (a
// stream.Tap): each stream's muxer is fed through its own bounded queue, so
// a slow muxer loses units (counted) and never blocks the publisher. The
// same listener serves the browser player page of each stream.
package hlsserver

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/origin/netguard"
	"github.com/coopstreaming/coop/origin/ratelog"
	"github.com/coopstreaming/coop/segment"
)

// Variants of HLS the server can produce.
const (
	// VariantLowLatency is Low-Latency HLS (fMP4 segments and parts,
	// blocking playlist reloads). Players without LL-HLS support ignore
	// the part tags and play its full segments as plain HLS.
	VariantLowLatency = "lowLatency"
	// VariantFMP4 is plain HLS with fMP4 segments.
	VariantFMP4 = "fmp4"
	// VariantMPEGTS is plain HLS with MPEG-TS segments (H.264 and AAC only).
	VariantMPEGTS = "mpegts"
)

// Defaults of the Server's fields.
const (
	DefaultSegmentCount    = 7
	DefaultSegmentDuration = time.Second
	DefaultPartDuration    = 200 * time.Millisecond
	DefaultQueueSize       = 512
	DefaultMaxRequests     = 512
	DefaultTimeout         = 10 * time.Second
)

// PageFunc writes the player page of a stream path ("live/KEY").
type PageFunc func(w http.ResponseWriter, r *http.Request, streamPath string)

// Server is the HLS listener and the registry of per-stream muxers.
type Server struct {
	// Address is the listen address (e.g. ":8888").
	Address string
	// Variant is VariantLowLatency (default), VariantFMP4 or VariantMPEGTS.
	Variant string
	// SegmentCount is the number of segments kept in the playlist
	// (default 7, the minimum for LL-HLS).
	SegmentCount int
	// SegmentDuration is the minimum segment duration (default 1s); a
	// segment starts at a key frame.
	SegmentDuration time.Duration
	// PartDuration is the minimum LL-HLS part duration (default 200ms).
	PartDuration time.Duration
	// QueueSize is the units queued per stream before drops (default 512).
	QueueSize int
	// MaxRequests bounds concurrent HTTP requests (default 512); above
	// it requests get 503. LL-HLS playlist requests may wait for the next
	// part, so this bounds waiting goroutines.
	MaxRequests int
	// MaxConns caps open connections (0: no cap; a browser opens up to
	// six); more are closed as soon as they are accepted.
	MaxConns int
	// Timeout bounds reading a request's headers, writing a response and
	// an idle keep-alive connection (default 10s).
	Timeout time.Duration
	// OnReject is called for every connection refused by the cap (optional).
	OnReject func(reason string)
	// ReadUser and ReadPass, when set, require HTTP basic auth (the RTSP
	// read credentials).
	ReadUser, ReadPass string
	// Page serves the player page of a stream (optional).
	Page PageFunc
	// Assets serves the player's static files under /_coop/ (optional).
	Assets http.Handler
	// Log receives the server's logs (default slog.Default()).
	Log *slog.Logger
	// Redirect, when set, is asked at each request of a stream's entry
	// playlist (STREAM/index.m3u8) whether another node should serve the
	// client: it returns that node's HLS address (host:port) or "" to
	// serve it here. A redirected client gets a 302 Found to the same
	// playlist there (ffmpeg and hls.js follow it and fetch everything
	// else from that node).
	Redirect func(r RedirectRequest) string

	// mu guards muxers and closed.
	mu      sync.Mutex
	muxers  map[string]*streamMuxer
	closed  bool
	ln      net.Listener
	http    *http.Server
	sem     chan struct{}
	metrics *metrics
	// warn rate-limits the warnings a remote party can trigger (bad
	// credentials, a publisher's tracks HLS cannot carry).
	warn ratelog.Limiter
	// viewers estimates the HLS clients (Viewers).
	viewers viewers
}

// RedirectRequest is what Server.Redirect is asked about.
type RedirectRequest struct {
	// Path is the stream path ("live/KEY").
	Path string
	// Host is the host the client used to reach this node (the request's
	// Host header, without port), for a target address without one.
	Host string
}

// Viewers estimates the HLS clients now: the client addresses and
// players (IP and User-Agent) that fetched a playlist within the last
// 10 s.
func (s *Server) Viewers() int { return s.viewers.count(time.Now()) }

// redirect answers a client another node should serve with a 302 (true:
// answered).
func (s *Server) redirect(w http.ResponseWriter, r *http.Request, streamPath, file string) bool {
	if s.Redirect == nil || file != "index.m3u8" {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	to := s.Redirect(RedirectRequest{Path: streamPath, Host: host})
	if to == "" {
		return false
	}
	u := url.URL{Scheme: "http", Host: to, Path: "/" + streamPath + "/" + file, RawQuery: r.URL.RawQuery}
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusFound)
	return true
}

// Initialize applies defaults and checks the settings; Start listens.
func (s *Server) Initialize() error {
	if s.SegmentCount == 0 {
		s.SegmentCount = DefaultSegmentCount
	}
	if s.SegmentDuration <= 0 {
		s.SegmentDuration = DefaultSegmentDuration
	}
	if s.PartDuration <= 0 {
		s.PartDuration = DefaultPartDuration
	}
	if s.QueueSize <= 0 {
		s.QueueSize = DefaultQueueSize
	}
	if s.MaxRequests <= 0 {
		s.MaxRequests = DefaultMaxRequests
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if s.Log == nil {
		s.Log = slog.Default()
	}
	if s.Variant == "" {
		s.Variant = VariantLowLatency
	}
	if _, err := variantOf(s.Variant); err != nil {
		return err
	}
	if s.Variant == VariantLowLatency && s.SegmentCount < 7 {
		return fmt.Errorf("hls: segmentCount %d: Low-Latency HLS needs at least 7", s.SegmentCount)
	}
	if s.SegmentCount < 3 {
		return fmt.Errorf("hls: segmentCount %d: HLS needs at least 3", s.SegmentCount)
	}
	s.muxers = make(map[string]*streamMuxer)
	s.sem = make(chan struct{}, s.MaxRequests)
	return nil
}

// Start listens on Address and serves until Close.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.Address)
	if err != nil {
		return fmt.Errorf("hls listen on %s: %w", s.Address, err)
	}
	s.ln = &netguard.Listener{Listener: ln, Name: "hls", MaxConns: s.MaxConns, Log: s.Log, OnReject: s.OnReject}
	s.http = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.Timeout,
		WriteTimeout:      s.Timeout,
		IdleTimeout:       s.Timeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.Log.Error("HLS server", "err", err)
		}
	}()
	s.Log.Info("HLS listening", "address", ln.Addr().String(), "variant", s.Variant)
	return nil
}

// Addr returns the listening address (after Start).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the listener and every muxer.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	muxers := s.muxers
	s.muxers = map[string]*streamMuxer{}
	s.mu.Unlock()
	for _, sm := range muxers {
		sm.close() // wakes requests waiting for parts
	}
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.http.Shutdown(ctx)
		cancel()
	}
}

// TapStart creates the stream's muxer, or keeps it when a publisher
// resumed with the same tracks (the timeline continues across it).
func (s *Server) TapStart(streamPath string, tracks []segment.Track) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	old := s.muxers[streamPath]
	if old != nil && sameTracks(old.tracks, tracks) {
		s.mu.Unlock()
		return
	}
	delete(s.muxers, streamPath)
	s.mu.Unlock()
	if old != nil {
		old.close()
	}
	sm, err := newStreamMuxer(s, streamPath, tracks)
	if err != nil {
		s.warn.Warn(s.Log, "HLS unavailable for stream", "path", streamPath, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.muxers[streamPath] != nil {
		go sm.close()
		return
	}
	s.muxers[streamPath] = sm
}

// TapUnit queues a unit for the stream's muxer without blocking.
func (s *Server) TapUnit(streamPath string, u *media.Unit) {
	sm := s.get(streamPath)
	if sm == nil {
		return
	}
	if sm.push(u, time.Now()) {
		s.metrics.dropped(streamPath)
	}
}

// TapEnd closes the stream's muxer.
func (s *Server) TapEnd(streamPath string) {
	s.mu.Lock()
	sm := s.muxers[streamPath]
	delete(s.muxers, streamPath)
	s.mu.Unlock()
	if sm != nil {
		go sm.close() // TapEnd must not block the stream registry
	}
}

func (s *Server) get(streamPath string) *streamMuxer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.muxers[streamPath]
}

// StreamStats are one stream's HLS figures.
type StreamStats struct {
	Path string `json:"path"`
	// DroppedUnits counts units the muxer's full queue refused.
	DroppedUnits uint64 `json:"droppedUnits"`
	// BytesSent counts playlist, init, segment and part bytes served.
	BytesSent uint64 `json:"bytesSent"`
}

// Stats lists every muxed stream, sorted by path.
func (s *Server) Stats() []StreamStats {
	s.mu.Lock()
	list := make([]*streamMuxer, 0, len(s.muxers))
	for _, sm := range s.muxers {
		list = append(list, sm)
	}
	s.mu.Unlock()
	out := make([]StreamStats, 0, len(list))
	for _, sm := range list {
		sm.mu.Lock()
		out = append(out, StreamStats{Path: sm.path, DroppedUnits: sm.dropped, BytesSent: sm.bytesSent})
		sm.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// isMediaFile tells the muxer's files (playlists, init, segments, parts)
// from a player page path.
func isMediaFile(name string) bool {
	switch path.Ext(name) {
	case ".m3u8", ".mp4", ".ts", ".m4s":
		return true
	}
	return false
}

// ServeHTTP serves /STREAM/index.m3u8 (and the files it names), the
// player page at /STREAM, and the player's assets at /_coop/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		http.Error(w, "too many requests", http.StatusServiceUnavailable)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !s.authorized(w, r) {
		return
	}
	p := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
	if strings.HasPrefix(p, "_coop/") && s.Assets != nil {
		http.StripPrefix("/_coop", s.Assets).ServeHTTP(w, r)
		return
	}
	if p == "favicon.ico" {
		w.WriteHeader(http.StatusNoContent) // browsers ask; no stream has that name
		return
	}
	dir, file := path.Split(p)
	if !isMediaFile(file) {
		if s.Page == nil || p == "" || p == "." {
			http.NotFound(w, r)
			return
		}
		s.Page(w, r, p)
		return
	}
	streamPath := strings.TrimSuffix(dir, "/")
	sm := s.get(streamPath)
	if sm == nil {
		http.Error(w, "stream not found: "+streamPath, http.StatusNotFound)
		return
	}
	if s.redirect(w, r, streamPath, file) {
		return
	}
	if path.Ext(file) == ".m3u8" {
		s.viewers.touch(viewerKey(r.RemoteAddr, r.UserAgent()), time.Now())
	}
	w.Header().Set("Access-Control-Allow-Origin", "*")
	cw := &countingWriter{ResponseWriter: w}
	sm.hls.Handle(cw, r)
	if cw.status == 0 && cw.n == 0 {
		http.NotFound(w, r) // the muxer does not know the file
	}
	sm.addSent(cw.n)
	s.metrics.sent(streamPath, cw.n)
}

// authorized checks basic auth when read credentials are set.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.ReadUser == "" {
		return true
	}
	u, p, ok := r.BasicAuth()
	if ok && subtle.ConstantTimeCompare([]byte(u), []byte(s.ReadUser)) == 1 &&
		subtle.ConstantTimeCompare([]byte(p), []byte(s.ReadPass)) == 1 {
		return true
	}
	if ok {
		s.warn.Warn(s.Log, "HLS read refused: bad credentials", "remote", r.RemoteAddr)
	}
	s.metrics.refused()
	w.Header().Set("WWW-Authenticate", `Basic realm="coop"`)
	http.Error(w, "unauthorized", http.StatusUnauthorized)
	return false
}

// countingWriter counts the body bytes a handler writes.
type countingWriter struct {
	http.ResponseWriter
	n      int
	status int
}

func (c *countingWriter) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += n
	return n, err
}

// Flush lets blocking playlist responses go out at once.
func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// metrics are the HLS Prometheus counters; a nil *metrics records nothing.
type metrics struct {
	droppedUnits *prometheus.CounterVec
	bytesSent    *prometheus.CounterVec
	refusedAuth  prometheus.Counter
}

// RegisterMetrics registers the HLS counters with reg; call before Start.
func (s *Server) RegisterMetrics(reg prometheus.Registerer) {
	m := &metrics{
		droppedUnits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coop_origin_hls_dropped_units_total", Help: "Units the HLS muxer's full queue dropped, per stream path.",
		}, []string{"path"}),
		bytesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coop_origin_hls_bytes_sent_total", Help: "HLS playlist and media bytes served, per stream path.",
		}, []string{"path"}),
		refusedAuth: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coop_origin_hls_unauthorized_total", Help: "HLS requests refused for missing or bad credentials.",
		}),
	}
	reg.MustRegister(m.droppedUnits, m.bytesSent, m.refusedAuth)
	s.metrics = m
}

func (m *metrics) dropped(p string) {
	if m != nil {
		m.droppedUnits.WithLabelValues(p).Inc()
	}
}

func (m *metrics) sent(p string, n int) {
	if m != nil && n > 0 {
		m.bytesSent.WithLabelValues(p).Add(float64(n))
	}
}

func (m *metrics) refused() {
	if m != nil {
		m.refusedAuth.Inc()
	}
}
