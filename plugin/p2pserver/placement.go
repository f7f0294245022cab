package p2pserver

import (
	"context"
	"net"
	"time"

	"github.com/coopstreaming/coop/cluster/placement"
	"github.com/coopstreaming/coop/cluster/registry"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// placer redirects new peers by load (Settings.PlacementMaxPeers): its
// Redirector reads the cluster registry in the background, so a Hello
// never waits on Redis.
type placer struct {
	r      *placement.Redirector
	cancel context.CancelFunc
	done   chan struct{}
}

// startPlacer runs under s.mu, once Redis is set up: a limit with no
// shared registry (one node) has nobody to redirect to.
func (s *Service) startPlacer(st settingsView) {
	if s.placer != nil || st.maxPeers <= 0 || s.redis == nil {
		return
	}
	reg := registry.NewRedis(s.redis, registry.Options{TTL: st.ttl})
	r := &placement.Redirector{Registry: reg, Self: st.node, Limits: placement.Limits{MaxPeers: st.maxPeers},
		Refresh: st.heartbeat, MaxAge: st.ttl, Log: s.Log.With("component", "placement")}
	ctx, cancel := context.WithCancel(context.Background())
	p := &placer{r: r, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(p.done); r.Run(ctx) }()
	s.placer = p
	s.Log.Info("placement: redirecting peers by load", "maxPeers", st.maxPeers)
}

// settingsView is what the placer needs of the settings.
type settingsView struct {
	node           string
	maxPeers       int
	ttl, heartbeat time.Duration
}

// superPeerUpload is the declared upload (bytes/s, 100 Mbit/s) from which
// a Hello is a super-peer's that placement never redirects: an edge's
// relay declares relayUploadCap (or its plugin's upload cap) to be picked
// as a seed, and redirecting it would send it to another edge, even its
// own plugin, instead of the upstream it relays. A peer that lies about
// its upload is only kept here (the connection cap still applies).
const superPeerUpload = 12_500_000

// reasonRedirected counts the peers sent to another node
// (coop_p2p_rejected_total{reason="redirected"}).
const reasonRedirected = "redirected"

// redirect answers a Hello another node should serve with a Reject that
// names it (true: answered, nc closed). load is the node's admitted
// connections now.
func (s *Service) redirect(nc net.Conn, hello *wire.Hello, load int64) bool {
	if hello.UploadCap >= superPeerUpload {
		return false
	}
	s.mu.Lock()
	p := s.placer
	s.mu.Unlock()
	if p == nil {
		return false
	}
	n, ok := p.r.Target(placement.Request{Stream: hello.Stream, Kind: placement.Peer, Load: int(load)})
	if !ok {
		return false
	}
	// A target registered without a host is on the host the peer
	// reached us by.
	host, _, _ := net.SplitHostPort(nc.LocalAddr().String())
	addr := placement.Dialable(n.Addr.Peer, host)
	_, _ = nc.Write(wire.Marshal(&wire.Reject{Reason: wire.RejectRedirect, Addr: addr}))
	nc.Close()
	if s.adm.reject(reasonRedirected) {
		s.Log.Info("peer redirected by load (logged once per 10 s)", "remote", nc.RemoteAddr().String(),
			"stream", hello.Stream, "to", addr)
	}
	return true
}

// stop ends the redirector's refresh (Close).
func (p *placer) stop() {
	if p != nil {
		p.cancel()
		<-p.done
	}
}
