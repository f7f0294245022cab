package core

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coopstreaming/coop/cluster/placement"
	"github.com/coopstreaming/coop/cluster/registry"
	"github.com/coopstreaming/coop/origin/hlsserver"
	"github.com/coopstreaming/coop/origin/rtspserver"
)

// placer is the origin's part in placement: the Redirector over the
// cluster registry, asked by the RTSP and HLS servers' Redirect hooks.
type placer struct {
	r      *placement.Redirector
	cancel context.CancelFunc
	done   chan struct{}
}

// startPlacement starts the redirector when a limit is set (after
// startCluster: it reads the cluster's registry). Without limits the
// hooks answer "serve here" at once.
func (o *Origin) startPlacement() {
	p := o.Config.Cluster.Placement
	lim := placement.Limits{MaxPeers: p.MaxPeers, MaxReaders: p.MaxReaders}
	if o.cluster == nil || (lim.MaxPeers <= 0 && lim.MaxReaders <= 0) {
		return
	}
	// The view is read as often as nodes heartbeat and trusted as long
	// as their entries live.
	r := &placement.Redirector{Registry: o.cluster.reg, Self: o.cluster.id, Limits: lim,
		Refresh: time.Duration(o.Config.Cluster.Heartbeat), MaxAge: time.Duration(o.Config.Cluster.TTL),
		Log: o.Log.With("component", "placement")}
	ctx, cancel := context.WithCancel(context.Background())
	pl := &placer{r: r, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(pl.done); r.Run(ctx) }()
	o.placer.Store(pl)
	o.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "coop_origin_redirects_total", Help: "Clients redirected to another node by load (cluster.placement), RTSP and HLS.",
	}, func() float64 { return float64(r.Redirects(placement.RTSP) + r.Redirects(placement.HLS)) }))
	o.Log.Info("placement: redirecting by load", "maxReaders", lim.MaxReaders, "maxPeers", lim.MaxPeers)
}

// stopPlacement stops the redirector's refresh.
func (o *Origin) stopPlacement() {
	if pl := o.placer.Load(); pl != nil {
		pl.cancel()
		<-pl.done
	}
}

// readerLoad is this node's readers: RTSP sessions playing plus HLS
// viewers (hlsserver.Server.Viewers).
func (o *Origin) readerLoad() int {
	n := 0
	if o.RTSP != nil {
		n += o.RTSP.ReaderCount()
	}
	if o.HLS != nil {
		n += o.HLS.Viewers()
	}
	return n
}

// redirectTo is the address (host:port) a client of kind k for stream
// should go to, "" to serve it here; host names this node as the client
// reached it, for a target address without a host.
func (o *Origin) redirectTo(k placement.Kind, stream, host string) string {
	pl := o.placer.Load()
	if pl == nil {
		return ""
	}
	n, ok := pl.r.Target(placement.Request{Stream: stream, Kind: k, Load: o.readerLoad()})
	if !ok {
		return ""
	}
	return placement.Dialable(placement.AddrOf(n, k), host)
}

// redirectRTSP and redirectHLS are the servers' Redirect hooks.
func (o *Origin) redirectRTSP(r rtspserver.RedirectRequest) string {
	return o.redirectTo(placement.RTSP, r.Path, r.Host)
}

func (o *Origin) redirectHLS(r hlsserver.RedirectRequest) string {
	return o.redirectTo(placement.HLS, r.Path, r.Host)
}

// advertise writes cluster.placement.host into the node's addresses
// that have no host (or an unspecified one), so other nodes redirect
// clients to a dialable address.
func (o *Origin) advertise(a *registry.Addresses) {
	h := o.Config.Cluster.Placement.Host
	if h == "" {
		return
	}
	a.RTSP = placement.Dialable(a.RTSP, h)
	a.HLS = placement.Dialable(a.HLS, h)
	a.Peer = placement.Dialable(a.Peer, h)
	a.API = placement.Dialable(a.API, h)
}
