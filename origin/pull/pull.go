// Package pull is the origin's edge mode: a path configured with an
// upstream source (rtsp://… or rtmp://…, e.g. a MediaMTX, SRS or
// nginx-rtmp server or a camera) is pulled by the origin and published into
// the stream registry exactly as a pushed stream is, so RTSP readers, the
// segmenter and the P2P plugin serve it unchanged. A source that fails is
// retried with exponential backoff; its state (connecting, ready, failed,
// the last error and the retries) is reported for the API.
package pull

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coopstreaming/coop/origin/media"
	"github.com/coopstreaming/coop/origin/ratelog"
	"github.com/coopstreaming/coop/origin/stream"
	"github.com/coopstreaming/coop/segment"
)

// Source states reported by Status.
const (
	StateConnecting = "connecting"
	StateReady      = "ready"
	StateFailed     = "failed"
)

// Defaults of the Manager's zero fields.
const (
	DefaultMinBackoff = 1 * time.Second
	DefaultMaxBackoff = 30 * time.Second
	DefaultTimeout    = 10 * time.Second
)

// Source is one configured upstream.
type Source struct {
	// Path is the origin path the source is published on ("live/cam1").
	Path string
	// URL is the upstream, rtsp://… or rtmp://….
	URL string
	// RTSPTransport is "automatic" (UDP, then TCP), "udp" or "tcp".
	RTSPTransport string
}

// Publisher is what a pull session publishes into: the stream registry.
type Publisher interface {
	Publish(path string, info stream.PublisherInfo) (*stream.Publication, error)
}

// Manager pulls every configured source until Close.
type Manager struct {
	// Sources to pull.
	Sources []Source
	// Streams is the registry the sources are published into.
	Streams Publisher
	// Timeout bounds connection setup and reads (default DefaultTimeout).
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts (defaults
	// DefaultMinBackoff and DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// Log receives logs.
	Log *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex // guards states
	states map[string]*Status
}

// Status is one source's state, for /v1/sources.
type Status struct {
	Path      string    `json:"path"`
	URL       string    `json:"url"`
	State     string    `json:"state"`
	LastError string    `json:"lastError,omitempty"`
	Retries   uint64    `json:"retries"`
	Since     time.Time `json:"since"`
	// Sessions counts the times the source became ready.
	Sessions uint64 `json:"sessions"`
}

// Validate checks a source's URL and transport.
func Validate(s Source) error {
	u, err := url.Parse(s.URL)
	if err != nil {
		return fmt.Errorf("source %q: %w", redact(s.URL), err)
	}
	switch u.Scheme {
	case "rtsp", "rtmp":
	default:
		return fmt.Errorf("source %q: scheme must be rtsp or rtmp", redact(s.URL))
	}
	if u.Host == "" {
		return fmt.Errorf("source %q: no host", redact(s.URL))
	}
	if u.Scheme == "rtmp" && strings.Trim(u.Path, "/") == "" {
		return fmt.Errorf("source %q: rtmp URL needs /APP/STREAM", redact(s.URL))
	}
	switch s.RTSPTransport {
	case "", "automatic", "udp", "tcp":
	default:
		return fmt.Errorf("rtspTransport %q is not one of automatic, udp, tcp", s.RTSPTransport)
	}
	return nil
}

// Start begins pulling every source in the background.
func (m *Manager) Start() error {
	if m.Timeout <= 0 {
		m.Timeout = DefaultTimeout
	}
	if m.MinBackoff <= 0 {
		m.MinBackoff = DefaultMinBackoff
	}
	if m.MaxBackoff < m.MinBackoff {
		m.MaxBackoff = max(DefaultMaxBackoff, m.MinBackoff)
	}
	if m.Log == nil {
		m.Log = slog.Default()
	}
	if m.Streams == nil {
		return errors.New("pull: no stream registry")
	}
	m.states = make(map[string]*Status)
	for _, s := range m.Sources {
		if err := Validate(s); err != nil {
			return fmt.Errorf("pull %s: %w", s.Path, err)
		}
		m.states[s.Path] = &Status{Path: s.Path, URL: redact(s.URL), State: StateConnecting, Since: time.Now()}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	for _, s := range m.Sources {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.supervise(ctx, s)
		}()
	}
	return nil
}

// Close stops every source and waits for them.
func (m *Manager) Close() {
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
}

// Status lists the sources' states, sorted by path.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.states))
	for _, s := range m.states {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func (m *Manager) setState(path, state string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.states[path]
	if st == nil {
		return
	}
	if st.State != state {
		st.State, st.Since = state, time.Now()
	}
	switch state {
	case StateReady:
		st.Sessions++
	case StateFailed:
		st.Retries++
	}
	if err != nil {
		st.LastError = err.Error()
	}
}

// supervise runs sessions of one source with exponential backoff until ctx
// ends. Failures are logged at the first one and then at most once per
// MaxBackoff (ratelog, with the count suppressed in between), so neither a
// dead upstream nor one that accepts and drops every session floods the
// log.
func (m *Manager) supervise(ctx context.Context, s Source) {
	log := m.Log.With("path", s.Path, "source", redact(s.URL))
	backoff := m.MinBackoff
	warn := &ratelog.Limiter{Interval: m.MaxBackoff} // one per source: each path gets its line
	for ctx.Err() == nil {
		m.setState(s.Path, StateConnecting, nil)
		ready := false
		err := m.session(ctx, s, log, func() {
			ready = true
			m.setState(s.Path, StateReady, nil)
			log.Info("pulling from upstream")
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("upstream ended the stream")
		}
		m.setState(s.Path, StateFailed, err)
		if ready {
			backoff = m.MinBackoff
		}
		warn.Warn(log, "upstream source failed; retrying", "err", err, "retryIn", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, m.MaxBackoff)
	}
}

// session pulls once, until the upstream fails or ctx ends.
func (m *Manager) session(ctx context.Context, s Source, log *slog.Logger, onReady func()) error {
	u, err := url.Parse(s.URL)
	if err != nil {
		return err
	}
	pub := &publisher{m: m, path: s.Path, remote: redact(s.URL), protocol: u.Scheme + "-pull", onReady: onReady, log: log}
	defer pub.close()
	switch u.Scheme {
	case "rtsp":
		return pullRTSP(ctx, u, s.RTSPTransport, m.Timeout, pub)
	case "rtmp":
		return pullRTMP(ctx, u, m.Timeout, pub)
	}
	return fmt.Errorf("scheme %q not supported", u.Scheme)
}

// publisher holds one session's publication, created when the tracks are
// known.
type publisher struct {
	m        *Manager
	path     string
	remote   string
	protocol string
	onReady  func()
	log      *slog.Logger

	mu       sync.Mutex // guards pub and kicked
	pub      *stream.Publication
	kicked   chan struct{}
	kickOnce sync.Once
}

// start publishes the tracks.
func (p *publisher) start(tracks []segment.Track) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.kicked = make(chan struct{})
	pub, err := p.m.Streams.Publish(p.path, stream.PublisherInfo{
		Protocol: p.protocol, Remote: p.remote,
		Kick: func() { p.kickOnce.Do(func() { close(p.kicked) }) },
	})
	if err != nil {
		return fmt.Errorf("publish %s: %w", p.path, err)
	}
	if err := pub.SetTracks(tracks); err != nil {
		pub.Close()
		return fmt.Errorf("publish %s: %w", p.path, err)
	}
	p.pub = pub
	p.onReady()
	return nil
}

// write delivers a unit; an error means the session must end.
func (p *publisher) write(u *media.Unit) error {
	p.mu.Lock()
	pub := p.pub
	p.mu.Unlock()
	if pub == nil {
		return nil
	}
	if err := pub.Write(u); err != nil {
		if errors.Is(err, stream.ErrReplaced) {
			return err
		}
		p.log.Debug("pulled unit dropped", "err", err)
	}
	return nil
}

// done is closed when another publisher took the path over.
func (p *publisher) done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kicked == nil {
		return nil
	}
	return p.kicked
}

func (p *publisher) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pub != nil {
		p.pub.Close()
		p.pub = nil
	}
}

// redact hides the credentials of a URL for logs and the API.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = nil
	return strings.Replace(u.String(), "://", "://***@", 1)
}
