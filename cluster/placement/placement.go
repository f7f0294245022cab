// Package placement decides whether a node serves a client itself or
// redirects it to another node of the cluster, by load, from the
// registry's View. The rule: a node redirects only when it is at its
// configured limit for the kind of client (0: never), and only to another
// live node that serves the stream and is below that limit, the least
// loaded first. A node at its limit is never a target, so two nodes
// cannot send a client back and forth on a fresh view; a client that
// follows redirects bounds them too (coop-peer: tcpnode.MaxRedirects;
// ffmpeg and browsers bound HTTP redirects). With no usable view (the
// registry unreachable, or its last answer older than MaxAge) a node
// serves everyone itself. Limits are taken as the same on every node.
package placement

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coopstreaming/coop/cluster/registry"
)

// Kind is the kind of client asking.
type Kind int

// Kinds of client.
const (
	// Peer is a P2P peer dialling the plugin's peer port (load: peers).
	Peer Kind = iota
	// RTSP is an RTSP reader (load: readers).
	RTSP
	// HLS is an HLS client (load: readers).
	HLS
	kinds
)

// String names the kind ("peer", "rtsp", "hls").
func (k Kind) String() string {
	switch k {
	case Peer:
		return "peer"
	case RTSP:
		return "rtsp"
	case HLS:
		return "hls"
	}
	return "unknown"
}

// Limits are a node's load limits; 0 means no limit (never redirect).
type Limits struct {
	// MaxPeers is the P2P peers a node serves before it redirects new
	// ones.
	MaxPeers int
	// MaxReaders is the RTSP and HLS readers a node serves before it
	// redirects new ones.
	MaxReaders int
}

// For is the limit that applies to k.
func (l Limits) For(k Kind) int {
	if k == Peer {
		return l.MaxPeers
	}
	return l.MaxReaders
}

// Request is one client asking this node for a stream.
type Request struct {
	Stream string
	Kind   Kind
	// Load is this node's load of the kind's measure now (peers, or
	// readers), counted locally: fresher than its registry entry.
	Load int
}

// loadOf is n's load for k as its entry reports it.
func loadOf(n registry.Node, k Kind) int {
	if k == Peer {
		return n.Load.Peers
	}
	return n.Load.Readers
}

// AddrOf is n's address for k ("" when it does not serve k).
func AddrOf(n registry.Node, k Kind) string {
	switch k {
	case Peer:
		return n.Addr.Peer
	case RTSP:
		return n.Addr.RTSP
	case HLS:
		return n.Addr.HLS
	}
	return ""
}

func serves(n registry.Node, stream string) bool {
	return slices.ContainsFunc(n.Streams, func(c registry.Claim) bool { return c.Stream == stream })
}

// Decide is the policy: the node self should send the client to (ok
// false: serve it here). extra is load already sent to nodes since the
// view was read (by node id; may be nil), counted on top of their
// entries.
func Decide(v registry.View, self string, lim Limits, req Request, extra map[string]int) (registry.Node, bool) {
	limit := lim.For(req.Kind)
	if limit <= 0 || req.Load < limit || req.Kind < 0 || req.Kind >= kinds {
		return registry.Node{}, false
	}
	best, bestLoad, found := registry.Node{}, 0, false
	for _, n := range v.Nodes {
		if n.ID == self || AddrOf(n, req.Kind) == "" || !serves(n, req.Stream) {
			continue
		}
		load := loadOf(n, req.Kind) + extra[n.ID]
		if load >= limit {
			continue
		}
		if !found || load < bestLoad || (load == bestLoad && strings.Compare(n.ID, best.ID) < 0) {
			best, bestLoad, found = n, load, true
		}
	}
	return best, found
}

// Dialable makes a node's address dialable by a client: an empty or
// unspecified host (":8554", "[::]:7070") becomes host, the name the
// client used to reach this node (nodes on one host, or an operator who
// set no advertised host). An address that is not host:port is returned
// as is.
func Dialable(addr, host string) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return addr
	}
	if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
		return addr
	}
	return net.JoinHostPort(host, port)
}

// Defaults of the Redirector.
const (
	// DefaultRefresh is how often the view is read again.
	DefaultRefresh = registry.DefaultHeartbeat
	// DefaultMaxAge is the oldest view used.
	DefaultMaxAge = registry.DefaultTTL
)

// Redirector applies Decide with a view it refreshes in the background,
// so a client's request never waits on the registry.
type Redirector struct {
	// Registry is the cluster's registry.
	Registry registry.Registry
	// Self is this node's id.
	Self string
	// Limits are the node's limits (zero: never redirect).
	Limits Limits
	// Refresh is how often the view is read [DefaultRefresh].
	Refresh time.Duration
	// MaxAge is the oldest view used; past it (the registry unreachable)
	// nobody is redirected [DefaultMaxAge].
	MaxAge time.Duration
	// Log reports the registry becoming unreachable and back (once per
	// change).
	Log *slog.Logger

	// mu guards view, at and extra.
	mu   sync.Mutex
	view registry.View
	at   time.Time // when view was read; zero: never
	// extra counts the clients sent to each node since the view was
	// read (their entries do not show them yet).
	extra map[string]int

	redirects [kinds]atomic.Uint64
}

// Active tells whether any limit is set (else Target never redirects
// and Run need not be started).
func (r *Redirector) Active() bool { return r.Limits.MaxPeers > 0 || r.Limits.MaxReaders > 0 }

// Run refreshes the view until ctx ends.
func (r *Redirector) Run(ctx context.Context) {
	iv := r.Refresh
	if iv <= 0 {
		iv = DefaultRefresh
	}
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	failing := false
	for {
		rctx, cancel := context.WithTimeout(ctx, iv)
		v, err := r.Registry.View(rctx)
		cancel()
		switch {
		case err == nil:
			r.mu.Lock()
			r.view, r.at, r.extra = v, time.Now(), nil
			r.mu.Unlock()
			if failing {
				log.Info("placement: registry reachable again; redirecting by load")
				failing = false
			}
		case !failing && ctx.Err() == nil:
			log.Warn("placement: registry unreachable; serving every client here (logged again when it recovers)", "err", err)
			failing = true
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Target is the node req should go to (ok false: serve it here). A
// positive answer is counted as a redirect, and as load on the target
// until the next view.
func (r *Redirector) Target(req Request) (registry.Node, bool) {
	if r == nil || !r.Active() {
		return registry.Node{}, false
	}
	maxAge := r.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.at.IsZero() || time.Since(r.at) > maxAge {
		return registry.Node{}, false
	}
	n, ok := Decide(r.view, r.Self, r.Limits, req, r.extra)
	if ok {
		if r.extra == nil {
			r.extra = map[string]int{}
		}
		r.extra[n.ID]++
		r.redirects[req.Kind].Add(1)
	}
	return n, ok
}

// Redirects is the count of clients of kind k redirected so far.
func (r *Redirector) Redirects(k Kind) uint64 {
	if r == nil || k < 0 || k >= kinds {
		return 0
	}
	return r.redirects[k].Load()
}
