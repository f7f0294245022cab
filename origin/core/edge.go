package core

import (
	"errors"
	"time"

	"github.com/coopstreaming/coop/cluster/registry"
	"github.com/coopstreaming/coop/origin/edge"
)

// prepareEdge sets up the edge role (cluster.role: edge) once the plugin
// host exists: the streams the edge relays bypass the plugin's sink (the
// plugin serves them already, with the origin's key). It runs before the
// stream manager is built.
func (o *Origin) prepareEdge() error {
	if registry.Role(o.Config.Cluster.Role) != registry.RoleEdge {
		return nil
	}
	if o.Plugin == nil {
		return errors.New("cluster.role: edge needs the P2P plugin (plugin.enabled and the coop-plugin binary): the plugin relays the origin's swarm")
	}
	o.edge = &edge.Edge{Plugin: o.Plugin, Upstream: o.Config.Cluster.Upstream,
		Interval: time.Duration(o.Config.Cluster.Heartbeat), Grace: time.Duration(o.Config.Cluster.TTL),
		Log: o.Log.With("component", "edge")}
	o.Sink = o.edge.Sink(o.Sink)
	return nil
}

// startEdge starts relaying once the stream manager and the cluster
// registry run.
func (o *Origin) startEdge() {
	if o.edge == nil || o.cluster == nil {
		return
	}
	o.edge.Registry, o.edge.Streams = o.cluster.reg, o.Streams
	o.edge.Start()
	o.Registry.MustRegister(o.edge)
}

// stopEdge ends the relays (their publications close).
func (o *Origin) stopEdge() {
	if o.edge != nil {
		o.edge.Close()
	}
}

// edgeStatus answers /v1/edge: the relayed streams (empty on an origin).
func (o *Origin) edgeStatus() any {
	if o.edge == nil {
		return []edge.Status{}
	}
	return o.edge.Status()
}
