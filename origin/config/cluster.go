package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/coopstreaming/coop/cluster/registry"
)

// Cluster configures the node's part in a cluster of origins and edges
// that share the stream registry and the swarms' trackers; see
// docs/scale.md.
type Cluster struct {
	// Role is origin (the default: takes publishers, runs the streams'
	// swarms) or edge (relays every stream the cluster's origins serve:
	// its plugin joins the origin's swarm as a high-capacity peer and
	// re-serves the origin's signed segments to its own peers, and its
	// RTSP/HLS readers get the stream too). An edge needs cluster.redis
	// and the plugin.
	Role string `yaml:"role"`
	// Upstream is host:port of the origin's plugin peer port an edge
	// relays from ("": the peer address each stream's origin node
	// registered).
	Upstream string `yaml:"upstream"`
	// NodeID names the node ("": hostname-APIport, see NodeID).
	NodeID string `yaml:"nodeID"`
	// Redis is host:port of the shared redis-server ("": in memory, one
	// node).
	Redis string `yaml:"redis"`
	// Heartbeat is how often the node refreshes its entries.
	Heartbeat Duration `yaml:"heartbeat"`
	// TTL is how long entries outlive the node's last heartbeat.
	TTL Duration `yaml:"ttl"`
	// Placement configures redirects by load (placement.go).
	Placement Placement `yaml:"placement"`
}

func (c *Cluster) validate() error {
	switch registry.Role(c.Role) {
	case registry.RoleOrigin:
	case registry.RoleEdge:
		if c.Redis == "" {
			return errors.New("config: cluster.role: edge needs cluster.redis (an edge finds the origins' streams in the shared registry)")
		}
	default:
		return fmt.Errorf("config: cluster.role: %q is not one of origin, edge", c.Role)
	}
	if err := c.Placement.validate(); err != nil {
		return err
	}
	if len(c.NodeID) > registry.MaxIDLen {
		return fmt.Errorf("config: cluster.nodeID: longer than %d bytes", registry.MaxIDLen)
	}
	if c.Redis != "" {
		if _, _, err := net.SplitHostPort(c.Redis); err != nil {
			return fmt.Errorf("config: cluster.redis: %q is not host:port: %w", c.Redis, err)
		}
	}
	if c.Upstream != "" {
		if _, _, err := net.SplitHostPort(c.Upstream); err != nil {
			return fmt.Errorf("config: cluster.upstream: %q is not host:port: %w", c.Upstream, err)
		}
		if registry.Role(c.Role) != registry.RoleEdge {
			return errors.New("config: cluster.upstream: only an edge (cluster.role: edge) has an upstream")
		}
	}
	hb, ttl := time.Duration(c.Heartbeat), time.Duration(c.TTL)
	if hb < 100*time.Millisecond || hb > time.Minute {
		return fmt.Errorf("config: cluster.heartbeat: %v is outside 100ms..1m", hb)
	}
	if ttl < 2*hb || ttl > 10*time.Minute {
		return fmt.Errorf("config: cluster.ttl: %v is outside 2×cluster.heartbeat (%v)..10m", ttl, 2*hb)
	}
	return nil
}

// NodeID is cluster.nodeID, else the hostname and the API port
// ("host-9997"), which differ between the nodes of one machine.
func (c *Config) NodeID() string {
	if c.Cluster.NodeID != "" {
		return c.Cluster.NodeID
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	_, port, _ := net.SplitHostPort(c.HTTP.Address)
	return host + "-" + port
}
