// Package edge is the origin's edge role (cluster.role: edge, issue 15):
// for every stream an origin node of the cluster registry serves, it has
// the P2P plugin relay that origin's swarm — the plugin joins it as a
// high-capacity peer, verifies the origin's signed segments and re-serves
// them unchanged to the edge's own peers — and publishes the relayed
// segments, turned back into access units by peer/feed, to the edge's
// RTSP and HLS readers. The origin sends each edge about one copy of each
// stream, whatever the number of readers and peers behind it.
package edge

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/coopstreaming/coop/cluster/registry"
	"github.com/coopstreaming/coop/origin/ratelog"
	"github.com/coopstreaming/coop/origin/stream"
	"github.com/coopstreaming/coop/peer/feed"
	"github.com/coopstreaming/coop/plugin/pluginapi"
	"github.com/coopstreaming/coop/segment"
)

// Relayer is the plugin side of a relay (pluginhost.Host).
type Relayer interface {
	Relay(ctx context.Context, req pluginapi.RelayRequest, emit func(pluginapi.RelayEvent) error) error
}

// Viewer reads the cluster (registry.Registry).
type Viewer interface {
	View(ctx context.Context) (registry.View, error)
}

// Publisher is where relayed streams are published (stream.Manager).
type Publisher interface {
	Publish(path string, info stream.PublisherInfo) (*stream.Publication, error)
}

// retryPause is the pause before a failed relay is tried again.
const retryPause = time.Second

// Edge relays the cluster's origin streams. Fill the fields, then Start.
type Edge struct {
	// Registry is the cluster registry the origins' streams are read from.
	Registry Viewer
	// Plugin relays a stream's swarm.
	Plugin Relayer
	// Streams receives the relayed streams for RTSP and HLS readers.
	Streams Publisher
	// Upstream, when set, is the peer address (host:port) of the origin
	// used for every stream (cluster.upstream) instead of the one the
	// origin registered.
	Upstream string
	// Interval is how often the registry is read [registry.DefaultHeartbeat].
	Interval time.Duration
	// Grace is how long a relayed stream may be missing from a readable
	// registry before its relay stops [registry.DefaultTTL]: a restarted,
	// empty Redis (rebuilt by the next heartbeats) or an origin's late
	// heartbeat stops nothing.
	Grace time.Duration
	// Log receives the edge's logs.
	Log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex // guards relays
	relays map[string]*relay
	warn   ratelog.Limiter
}

// target is what a stream is relayed from.
type target struct {
	stream, upstream, origin string
	key                      []byte
}

func (t target) same(o target) bool {
	return t.stream == o.stream && t.upstream == o.upstream && bytes.Equal(t.key, o.key)
}

// Status is one relayed stream (/v1/edge).
type Status struct {
	Stream   string `json:"stream"`
	Origin   string `json:"origin"`
	Upstream string `json:"upstream"`
	// State is "connecting" (no segment yet in this attempt), "relaying"
	// or "retrying" (the last attempt failed: LastError).
	State     string `json:"state"`
	Epoch     uint64 `json:"epoch"`
	Segments  uint64 `json:"segments"`
	Gaps      uint64 `json:"gaps"`
	Attempts  uint64 `json:"attempts"`
	LastError string `json:"lastError,omitempty"`
	// Feed is the segments turned into access units for the readers.
	Feed feed.Stats `json:"feed"`
}

// Start reads the registry every Interval and keeps one relay per origin
// stream.
func (e *Edge) Start() {
	if e.Log == nil {
		e.Log = slog.Default()
	}
	if e.Interval <= 0 {
		e.Interval = registry.DefaultHeartbeat
	}
	if e.Grace <= 0 {
		e.Grace = registry.DefaultTTL
	}
	e.relays = make(map[string]*relay)
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.done = make(chan struct{})
	go e.loop()
	e.Log.Info("edge: relaying the cluster's origin streams", "upstream", e.Upstream)
}

// Close stops every relay (their publications end) and waits for them.
func (e *Edge) Close() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	<-e.done
}

// Relaying tells whether path is a relayed stream (its segments must not
// go to the plugin as a stream published here: see Sink).
func (e *Edge) Relaying(path string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.relays[path] != nil
}

// Status lists the relayed streams, by name.
func (e *Edge) Status() []Status {
	e.mu.Lock()
	list := make([]*relay, 0, len(e.relays))
	for _, r := range e.relays {
		list = append(list, r)
	}
	e.mu.Unlock()
	out := make([]Status, 0, len(list))
	for _, r := range list {
		out = append(out, r.status())
	}
	slices.SortFunc(out, func(a, b Status) int {
		if a.Stream < b.Stream {
			return -1
		}
		if a.Stream > b.Stream {
			return 1
		}
		return 0
	})
	return out
}

func (e *Edge) loop() {
	defer close(e.done)
	tick := time.NewTicker(e.Interval)
	defer tick.Stop()
	for {
		e.sync()
		select {
		case <-e.ctx.Done():
			e.mu.Lock()
			list := e.relays
			e.relays = map[string]*relay{}
			e.mu.Unlock()
			for _, r := range list {
				r.stop()
			}
			return
		case <-tick.C:
		}
	}
}

// sync starts a relay for each origin stream of the registry, restarts
// one whose origin moved or changed keys, and stops those no origin
// serves any more. An unreadable registry changes nothing: the relays
// go on with what they have.
func (e *Edge) sync() {
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
	v, err := e.Registry.View(ctx)
	cancel()
	if err != nil {
		e.warn.Warn(e.Log, "edge: cluster registry unreadable; relays go on as they are", "err", err)
		return
	}
	want := targets(v, e.Upstream)
	now := time.Now()
	e.mu.Lock()
	var stop []*relay
	for name, r := range e.relays {
		t, ok := want[name]
		if ok && t.same(r.t) {
			r.missing = time.Time{}
			continue
		}
		if !ok {
			if r.missing.IsZero() {
				r.missing = now
				e.Log.Warn("edge: the stream is missing from the registry (ended, its origin died, or Redis restarted); the relay goes on for the grace period",
					"stream", name, "origin", r.t.origin, "grace", e.Grace)
				continue
			}
			if now.Sub(r.missing) < e.Grace {
				continue
			}
			e.Log.Warn("edge: no origin serves the stream any more: relay stopped", "stream", name, "origin", r.t.origin)
		} else {
			e.Log.Info("edge: the stream's origin moved or changed keys: relay restarted", "stream", name, "upstream", t.upstream)
		}
		delete(e.relays, name)
		stop = append(stop, r)
	}
	e.mu.Unlock()
	for _, r := range stop {
		r.stop() // its publication ends before a new relay of the name publishes
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for name, t := range want {
		if e.relays[name] != nil || e.ctx.Err() != nil {
			continue
		}
		r := newRelay(e, t)
		e.relays[name] = r
		go r.run(e.ctx)
		e.Log.Info("edge: relaying", "stream", name, "origin", t.origin, "upstream", t.upstream)
	}
}

// targets are the streams an origin-role node serves with a key, each
// with the address of that origin's peer port (override: upstream).
func targets(v registry.View, upstream string) map[string]target {
	nodes := make(map[string]registry.Node, len(v.Nodes))
	for _, n := range v.Nodes {
		nodes[n.ID] = n
	}
	out := map[string]target{}
	for _, s := range v.Streams {
		n, ok := nodes[s.Origin]
		if s.Origin == "" || !ok || len(s.PublicKey) != 32 {
			continue
		}
		addr := upstream
		if addr == "" {
			addr = dialable(n.Addr.Peer, n.Addr.API)
		}
		if addr == "" {
			continue
		}
		out[s.Name] = target{stream: s.Name, upstream: addr, origin: s.Origin, key: s.PublicKey}
	}
	return out
}

// dialable makes a registered listen address dialable: an unspecified
// host ("[::]:7070", ":7070") takes the host of the node's API address.
func dialable(addr, api string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return addr
	}
	if ah, _, err := net.SplitHostPort(api); err == nil {
		if ip := net.ParseIP(ah); ah != "" && (ip == nil || !ip.IsUnspecified()) {
			return net.JoinHostPort(ah, port)
		}
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// relay is one relayed stream: the plugin's relay (retried while the
// stream is wanted), its feed and its publication.
type relay struct {
	e      *Edge
	t      target
	log    *slog.Logger
	feed   *feed.Feed
	pub    *publisher
	cancel context.CancelFunc
	done   chan struct{}
	// missing is when the stream left the registry (zero: listed); read
	// and written by the edge's loop only.
	missing time.Time

	mu                       sync.Mutex // guards the fields below
	state, lastErr           string
	epoch, last              uint64
	haveLast                 bool
	segments, gaps, attempts uint64
}

func newRelay(e *Edge, t target) *relay {
	log := e.Log.With("stream", t.stream, "upstream", t.upstream)
	r := &relay{e: e, t: t, log: log, feed: feed.New(log), done: make(chan struct{}), state: "connecting"}
	r.pub = &publisher{streams: e.Streams, path: t.stream, remote: t.upstream, log: log}
	r.feed.Add(r.pub)
	return r
}

func (r *relay) run(parent context.Context) {
	defer close(r.done)
	ctx, cancel := context.WithCancel(parent)
	r.mu.Lock()
	r.cancel = cancel
	r.mu.Unlock()
	defer cancel()
	feedDone := make(chan struct{})
	go func() { defer close(feedDone); r.feed.Run(ctx) }()
	defer func() { <-feedDone; r.pub.close() }()
	req := pluginapi.RelayRequest{Stream: r.t.stream, Upstream: r.t.upstream, StreamKey: r.t.key}
	var warn ratelog.Limiter
	for ctx.Err() == nil {
		r.mu.Lock()
		r.attempts++
		r.state = "connecting"
		r.mu.Unlock()
		err := r.e.Plugin.Relay(ctx, req, r.onEvent)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("the plugin ended the relay")
		}
		r.mu.Lock()
		r.state, r.lastErr = "retrying", err.Error()
		r.mu.Unlock()
		warn.Warn(r.log, "edge: relay failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(retryPause):
		}
	}
}

// stop ends the relay and waits for its publication to close.
func (r *relay) stop() {
	r.mu.Lock()
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	<-r.done
}

// onEvent takes the plugin's events (one goroutine): a new epoch starts
// the stream again, a segment after a gap tells the feed one was missed
// (it then waits for a random-access segment), a segment already
// delivered (the relay restarted) is skipped.
func (r *relay) onEvent(ev pluginapi.RelayEvent) error {
	r.mu.Lock()
	if ev.Epoch != 0 && ev.Epoch != r.epoch {
		if r.epoch != 0 {
			r.log.Info("edge: the origin restarted the stream", "epoch", ev.Epoch)
			r.pub.restart.Store(true) // its header, next, starts a new publication
		}
		r.epoch, r.haveLast = ev.Epoch, false
	}
	var gap bool
	var seq uint64
	if ev.Segment != nil {
		seq = ev.Segment.Seq
		if r.haveLast && seq <= r.last {
			r.mu.Unlock()
			return nil
		}
		gap = r.haveLast && seq != r.last+1
		if gap {
			r.gaps++
		}
		r.last, r.haveLast = seq, true
		r.segments++
		r.state = "relaying"
	}
	r.mu.Unlock()
	if ev.Header != nil {
		r.feed.SetHeader(ev.Header)
	}
	if ev.Segment != nil {
		if gap {
			r.feed.Play(seq-1, nil) // a missed segment: wait for a random-access one
		}
		r.feed.Play(seq, ev.Segment.Chunks)
	}
	return nil
}

func (r *relay) status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Status{Stream: r.t.stream, Origin: r.t.origin, Upstream: r.t.upstream, State: r.state, Epoch: r.epoch,
		Segments: r.segments, Gaps: r.gaps, Attempts: r.attempts, LastError: r.lastErr, Feed: r.feed.Stats()}
}

// Sink wraps the plugin's stream sink so the streams this edge relays
// never reach the plugin as streams published here (the plugin already
// serves them, with the origin's key): every other stream goes on to next.
func (e *Edge) Sink(next stream.Sink) stream.Sink { return &filterSink{e: e, next: next} }

type filterSink struct {
	e    *Edge
	next stream.Sink
}

func (f *filterSink) StreamStarted(path string, header []byte) {
	if !f.e.Relaying(path) {
		f.next.StreamStarted(path, header)
	}
}

func (f *filterSink) SegmentReady(path string, seg *segment.Segment, chunks [][]byte) {
	if !f.e.Relaying(path) {
		f.next.SegmentReady(path, seg, chunks)
	}
}

func (f *filterSink) StreamEnded(path string) {
	if !f.e.Relaying(path) {
		f.next.StreamEnded(path)
	}
}
