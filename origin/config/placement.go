package config

import (
	"fmt"
	"net"
	"strings"
)

// Placement configures redirects between the nodes of a cluster
// (cluster/placement): a node at its limit sends a new client to the
// least loaded live node serving the stream below that limit (RTSP and
// HLS: 302; peers: a Reject redirect). The limits are assumed the same on
// every node. 0 (the default) never redirects.
type Placement struct {
	// MaxPeers is the P2P peers the node serves before it redirects new
	// ones (0: no limit).
	MaxPeers int `yaml:"maxPeers"`
	// MaxReaders is the RTSP and HLS readers the node serves before it
	// redirects new ones (0: no limit).
	MaxReaders int `yaml:"maxReaders"`
	// Host is the host name or IP clients reach this node by, written
	// into its registry entry for the other nodes' redirects ("": the
	// configured listen addresses as they are; a node whose address has
	// no host is then named by the host the client used to reach the
	// redirecting node, right when the nodes share one host).
	Host string `yaml:"host"`
}

func (p *Placement) validate() error {
	for key, n := range map[string]int{"cluster.placement.maxPeers": p.MaxPeers,
		"cluster.placement.maxReaders": p.MaxReaders} {
		if n < 0 || n > 1<<24 {
			return fmt.Errorf("config: %s: %d is outside 0..16777216", key, n)
		}
	}
	if p.Host != "" {
		if strings.ContainsAny(p.Host, "/:@ ") && net.ParseIP(p.Host) == nil {
			return fmt.Errorf("config: cluster.placement.host: %q is not a host name or IP", p.Host)
		}
	}
	return nil
}
