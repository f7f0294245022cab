package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPlacementKeys(t *testing.T) {
	c, err := Load("", []string{"COOP_CLUSTER_PLACEMENT_MAXPEERS=500", "COOP_CLUSTER_PLACEMENT_MAXREADERS=20",
		"COOP_CLUSTER_PLACEMENT_HOST=node-b.example"})
	require.NoError(t, err)
	require.Equal(t, Placement{MaxPeers: 500, MaxReaders: 20, Host: "node-b.example"}, c.Cluster.Placement)
	require.Equal(t, Placement{}, Default().Cluster.Placement, "no limits by default: never redirect")

	for env, key := range map[string]string{
		"COOP_CLUSTER_PLACEMENT_MAXPEERS=-1":          "cluster.placement.maxPeers",
		"COOP_CLUSTER_PLACEMENT_MAXREADERS=99999999":  "cluster.placement.maxReaders",
		"COOP_CLUSTER_PLACEMENT_HOST=rtsp://host:1/x": "cluster.placement.host",
	} {
		_, err := Load("", []string{env})
		require.ErrorContains(t, err, key, env)
	}
	_, err = Load("", []string{"COOP_CLUSTER_PLACEMENT_HOST=::1"})
	require.NoError(t, err, "an IPv6 address is a host")
}
