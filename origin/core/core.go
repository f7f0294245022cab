// Package core wires the origin's components together.
package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/coopstreaming/coop/origin/auth"
	"github.com/coopstreaming/coop/origin/config"
	"github.com/coopstreaming/coop/origin/edge"
	"github.com/coopstreaming/coop/origin/hlsserver"
	"github.com/coopstreaming/coop/origin/httpapi"
	"github.com/coopstreaming/coop/origin/netguard"
	"github.com/coopstreaming/coop/origin/pluginhost"
	"github.com/coopstreaming/coop/origin/pull"
	"github.com/coopstreaming/coop/origin/rtmpguard"
	"github.com/coopstreaming/coop/origin/rtmpingest"
	"github.com/coopstreaming/coop/origin/rtspserver"
	"github.com/coopstreaming/coop/origin/stream"
	"github.com/coopstreaming/coop/origin/webui"
	"github.com/coopstreaming/coop/plugin/pluginapi"
)

// Origin is a running origin server.
type Origin struct {
	// Config is the loaded configuration.
	Config config.Config
	// Log receives every component's logs.
	Log *slog.Logger
	// Sink, when set, receives the segmented streams.
	Sink stream.Sink

	Streams *stream.Manager
	RTSP    *rtspserver.Server
	RTMP    *rtmpingest.Server
	http    *http.Server
	httpLn  net.Listener
	// Registry holds the Prometheus metrics.
	Registry *prometheus.Registry
	// Plugin supervises the P2P plugin (nil when disabled or missing).
	Plugin *pluginhost.Host
	// HLS serves LL-HLS and the player page (nil when hls.enabled is off).
	HLS *hlsserver.Server
	// Pull pulls the paths configured with an upstream source.
	Pull *pull.Manager

	// history samples the figures once a second (live figures, plots).
	history *httpapi.History
	// cluster is the registry and heartbeat (cluster.*).
	cluster *clusterNode
	// placer redirects clients by load (cluster.placement; nil: never).
	placer atomic.Pointer[placer]
	// edge relays the origins' streams (cluster.role: edge; nil: origin).
	edge *edge.Edge

	closeOnce sync.Once
}

// Initialize starts every listener.
func (o *Origin) Initialize() error {
	c := o.Config
	if o.Log == nil {
		o.Log = slog.Default()
	}
	o.Registry = prometheus.NewRegistry()
	o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := stream.NewMetrics(o.Registry)
	checker := &auth.Checker{PublishKeys: c.Publish.Keys, HookURL: c.Publish.AuthHook}
	if len(c.Publish.Keys) == 0 && c.Publish.AuthHook == "" {
		o.Log.Warn("publishing is open to any stream key: set publish.keys or publish.authHook")
	}
	o.RTSP = &rtspserver.Server{
		Address: c.RTSP.Address, UDPRTPAddress: c.RTSP.UDPRTPAddress, UDPRTCPAddress: c.RTSP.UDPRTCPAddress,
		Timeout: time.Duration(c.Timeout), WriteQueueSize: c.RTSP.WriteQueueSize, MaxConns: c.RTSP.MaxConnections,
		Auth: checker, ReadUser: c.Read.User, ReadPass: c.Read.Pass,
		Log: o.Log.With("component", "rtsp"), Metrics: metrics, Redirect: o.redirectRTSP,
	}
	srv := o.RTSP.Initialize()
	if c.Plugin.Enabled && o.Sink == nil {
		redisAddr, nodeID, ttl, hb := clusterSettings(c)
		host, err := pluginhost.New(pluginhost.Config{
			Path: c.Plugin.Path, SegmentDuration: time.Duration(c.Segment.Duration), Layers: c.Segment.Layers,
			Settings: pluginapi.Settings{
				PeerAddress: c.Plugin.Address, UploadCap: uint64(c.Plugin.UploadKbps) * 1000 / 8,
				Seeds: c.Plugin.Seeds, Partners: c.Plugin.Partners, KeyFile: c.Plugin.KeyFile,
				TokenSecret: c.Plugin.TokenSecret, LogLevel: c.LogLevel,
				HandshakeTimeout: time.Duration(c.Plugin.HandshakeTimeout), MaxPeerConnections: c.Plugin.MaxPeerConnections,
				ClusterRedis: redisAddr, ClusterNode: nodeID, ClusterTTL: ttl, ClusterHeartbeat: hb,
				PlacementMaxPeers: c.Cluster.Placement.MaxPeers,
				WebAddress:        c.Plugin.WebAddress, ICEServers: iceServers(c.Plugin.ICEServers),
			},
		}, o.Log.With("component", "pluginhost"))
		if err != nil {
			o.Log.Error("P2P plugin disabled: RTSP playback works, P2P does not", "err", err)
		} else {
			o.Plugin, o.Sink = host, host
			o.Registry.MustRegister(host)
		}
	}
	if err := o.prepareEdge(); err != nil {
		o.RTSP = nil // initialized, never started: Close must not stop it
		return err
	}
	o.Streams = &stream.Manager{
		Config: stream.Config{
			SegmentDuration: time.Duration(c.Segment.Duration), Layers: c.Segment.Layers,
			GracePeriod: time.Duration(c.Publish.GracePeriod), Takeover: c.Publish.Takeover,
			MaxStreams: c.Publish.MaxStreams,
		},
		RTSP: srv, Sink: o.Sink, Log: o.Log.With("component", "streams"), Metrics: metrics,
	}
	if c.HLS.Enabled {
		o.HLS = &hlsserver.Server{
			Address: c.HLS.Address, Variant: c.HLS.Variant, SegmentCount: c.HLS.SegmentCount,
			SegmentDuration: time.Duration(c.HLS.SegmentDuration), PartDuration: time.Duration(c.HLS.PartDuration),
			QueueSize: c.HLS.QueueSize, ReadUser: c.Read.User, ReadPass: c.Read.Pass,
			MaxConns: c.HLS.MaxConnections, Timeout: time.Duration(c.Timeout),
			Page: webui.Player, Assets: webui.Assets(), Log: o.Log.With("component", "hls"),
			OnReject: func(reason string) { metrics.Reject("hls", reason) }, Redirect: o.redirectHLS,
		}
		if err := o.HLS.Initialize(); err != nil {
			return err
		}
		o.HLS.RegisterMetrics(o.Registry)
		o.Streams.Tap = o.HLS
	}
	o.RTSP.Streams = o.Streams
	if err := o.RTSP.Start(); err != nil {
		return err
	}
	if c.RTMP.Enabled {
		o.RTMP = &rtmpingest.Server{
			Address: c.RTMP.Address, Timeout: time.Duration(c.Timeout),
			Limits:  rtmpguard.Limits{MaxMessageSize: c.RTMP.MaxMessageSize},
			Streams: o.Streams, MaxConns: c.RTMP.MaxConnections, Auth: checker, Log: o.Log.With("component", "rtmp"), Metrics: metrics,
		}
		if err := o.RTMP.Start(); err != nil {
			o.Close()
			return err
		}
	}
	if o.HLS != nil {
		if err := o.HLS.Start(); err != nil {
			o.Close()
			return err
		}
	}
	ln, err := net.Listen("tcp", c.HTTP.Address)
	if err != nil {
		o.Close()
		return fmt.Errorf("http listen on %s: %w", c.HTTP.Address, err)
	}
	ln = &netguard.Listener{Listener: ln, Name: "http", MaxConns: c.HTTP.MaxConnections, Log: o.Log.With("component", "http"),
		OnReject: func(reason string) { metrics.Reject("http", reason) }}
	o.httpLn = ln
	sources := httpapi.Sources{
		Streams: o.Streams.Snapshot, Readers: o.RTSP.Readers, Gatherer: o.Registry,
		Extra: map[string]func() any{"p2p": o.p2pStatus, "sources": o.sourcesStatus, "cluster": o.clusterView, "edge": o.edgeStatus},
	}
	if o.HLS != nil {
		sources.HLS, sources.HLSAddress = o.HLS.Stats, c.HLS.Address
	}
	o.history = &httpapi.History{Sources: sources}
	o.history.Start()
	sources.History = o.history
	var api http.Handler = httpapi.Handler(sources, o.Log)
	if c.HTTP.Pprof {
		api = httpapi.WithPprof(api)
		o.Log.Warn("pprof is served at /debug/pprof/ on the API port (http.pprof): keep that port private")
	}
	o.http = httpapi.NewServer(api, time.Duration(c.Timeout), o.Log.With("component", "http"))
	go func() {
		if err := o.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Log.Error("http server", "err", err)
		}
	}()
	o.Log.Info("HTTP API listening", "address", ln.Addr().String())
	if o.Plugin != nil {
		o.Plugin.Start()
	}
	o.startCluster(ln.Addr().String())
	o.startPlacement()
	o.startEdge()
	o.Pull = &pull.Manager{Streams: o.Streams, Timeout: time.Duration(c.Timeout), Log: o.Log.With("component", "pull")}
	for name, p := range c.Paths {
		if p.Source != "" {
			o.Pull.Sources = append(o.Pull.Sources, pull.Source{Path: name, URL: p.Source, RTSPTransport: p.RTSPTransport})
		}
	}
	if err := o.Pull.Start(); err != nil {
		o.Close()
		return err
	}
	o.Registry.MustRegister(o.Pull)
	return nil
}

// sourcesStatus lists the pulled sources' states (/v1/sources).
func (o *Origin) sourcesStatus() any {
	if o.Pull == nil {
		return []pull.Status{}
	}
	return o.Pull.Status()
}

func (o *Origin) p2pStatus() any {
	if o.Plugin == nil {
		return pluginhost.Status{Enabled: false}
	}
	return o.Plugin.Status()
}

// Close stops every component; later calls do nothing.
func (o *Origin) Close() { o.closeOnce.Do(o.close) }

func (o *Origin) close() {
	if o.history != nil {
		o.history.Close()
	}
	if o.Pull != nil {
		o.Pull.Close()
	}
	if o.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = o.http.Shutdown(ctx)
		cancel()
	}
	if o.RTMP != nil {
		o.RTMP.Close()
	}
	o.stopEdge()
	if o.Streams != nil {
		o.Streams.Close()
	}
	if o.HLS != nil {
		o.HLS.Close()
	}
	if o.RTSP != nil {
		o.RTSP.Close()
	}
	o.stopPlacement()
	if o.cluster != nil {
		o.cluster.close(o.Log)
	}
	if o.Plugin != nil {
		o.Plugin.Close()
	}
}

// iceServers is plugin.iceServers in the plugin contract's terms.
func iceServers(list []config.ICEServer) []pluginapi.ICEServer {
	var out []pluginapi.ICEServer
	for _, s := range list {
		out = append(out, pluginapi.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return out
}
