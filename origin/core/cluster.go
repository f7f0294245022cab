package core

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/coopstreaming/coop/cluster/registry"
	"github.com/coopstreaming/coop/origin/config"
	"github.com/coopstreaming/coop/origin/httpapi"
)

// clusterNode is the origin's part in the cluster: its registry (Redis
// when cluster.redis is set, else in memory) and its heartbeat.
type clusterNode struct {
	id     string
	reg    registry.Registry
	rc     *redis.Client // nil: in memory
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex // guards lastAt, lastOut, rate
	lastAt   time.Time
	lastOut  uint64
	rate     float64
	selfFunc func() registry.Node
}

// startCluster opens the registry and starts heartbeating (apiAddr: the
// bound API address).
func (o *Origin) startCluster(apiAddr string) {
	c := o.Config.Cluster
	cn := &clusterNode{id: o.Config.NodeID(), done: make(chan struct{})}
	opts := registry.Options{TTL: time.Duration(c.TTL)}
	if c.Redis != "" {
		cn.rc = redis.NewClient(&redis.Options{Addr: c.Redis, DialTimeout: time.Second, ReadTimeout: time.Second,
			WriteTimeout: time.Second, MaxRetries: 1})
		cn.reg = registry.NewRedis(cn.rc, opts)
	} else {
		cn.reg = registry.NewMemory(opts)
	}
	cn.selfFunc = func() registry.Node { return o.clusterSelf(cn, apiAddr) }
	ctx, cancel := context.WithCancel(context.Background())
	cn.cancel = cancel
	hb := &registry.Heartbeater{Registry: cn.reg, Interval: time.Duration(c.Heartbeat), Self: cn.selfFunc,
		Log: o.Log.With("component", "cluster")}
	go func() { defer close(cn.done); hb.Run(ctx) }()
	o.cluster = cn
	backend := "memory (one node)"
	if c.Redis != "" {
		backend = "redis " + c.Redis
	}
	o.Log.Info("cluster registry", "node", cn.id, "role", c.Role, "backend", backend)
}

// clusterSelf builds this node's entry: addresses, load and the streams
// it publishes (with the plugin's epoch and key).
func (o *Origin) clusterSelf(cn *clusterNode, apiAddr string) registry.Node {
	c := o.Config
	n := registry.Node{ID: cn.id, Role: registry.Role(c.Cluster.Role),
		Addr: registry.Addresses{RTSP: c.RTSP.Address, API: apiAddr}}
	if o.HLS != nil {
		n.Addr.HLS = c.HLS.Address
		n.Load.Readers += o.HLS.Viewers()
	}
	var out uint64
	infos := o.Streams.Snapshot()
	for _, s := range infos {
		n.Load.Readers += s.Readers
		out += s.BytesOut
	}
	var key []byte
	p2p := map[string]registry.Claim{}
	if o.Plugin != nil {
		st := o.Plugin.Status()
		n.Addr.Peer = st.PeerAddress
		key, _ = hex.DecodeString(st.StreamPublicKey)
		for _, s := range st.Streams {
			n.Load.Peers += s.Peers
			out += s.ServerMediaBytes + s.ServerControlBytes
			// A relayed stream (an edge's) is verified with its origin's key.
			p2p[s.Stream] = registry.Claim{Epoch: s.Epoch, Peers: s.Peers, PublicKey: s.StreamKey}
		}
	}
	for _, s := range infos {
		if !s.Publishing {
			continue
		}
		cl := p2p[s.Path]
		cl.Stream = s.Path
		if len(cl.PublicKey) == 0 {
			cl.PublicKey = key
		}
		n.Streams = append(n.Streams, cl)
	}
	o.advertise(&n.Addr)
	now := time.Now()
	cn.mu.Lock()
	if !cn.lastAt.IsZero() && out >= cn.lastOut {
		if dt := now.Sub(cn.lastAt).Seconds(); dt > 0 {
			cn.rate = float64(out-cn.lastOut) / dt
		}
	}
	cn.lastAt, cn.lastOut = now, out
	n.Load.EgressBytesPerSec = cn.rate
	cn.mu.Unlock()
	return n
}

// clusterView answers /v1/cluster.
func (o *Origin) clusterView() any {
	cn := o.cluster
	if cn == nil {
		return httpapi.Cluster{Error: "cluster not started"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	v, err := cn.reg.View(ctx)
	st := httpapi.Cluster{Node: cn.id, View: v}
	if err != nil {
		st.Error = fmt.Sprintf("registry unreachable: %v", err)
	}
	return st
}

// closeCluster stops the heartbeat (which leaves the registry) and the
// Redis client.
func (cn *clusterNode) close(log *slog.Logger) {
	cn.cancel()
	select {
	case <-cn.done:
	case <-time.After(3 * time.Second):
		log.Warn("cluster heartbeat did not stop within 3 s")
	}
	_ = cn.reg.Close()
	if cn.rc != nil {
		_ = cn.rc.Close()
	}
}

// clusterSettings are the plugin's cluster settings from the config.
func clusterSettings(c config.Config) (addr, node string, ttl, hb time.Duration) {
	return c.Cluster.Redis, c.NodeID(), time.Duration(c.Cluster.TTL), time.Duration(c.Cluster.Heartbeat)
}
