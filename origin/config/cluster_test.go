package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestClusterKeys(t *testing.T) {
	c, err := Load("", nil)
	require.NoError(t, err)
	require.Equal(t, "origin", c.Cluster.Role)
	require.Empty(t, c.Cluster.Redis, "make run needs no Redis")
	require.Equal(t, 2*time.Second, time.Duration(c.Cluster.Heartbeat))
	require.Equal(t, 6*time.Second, time.Duration(c.Cluster.TTL))
	require.Contains(t, c.NodeID(), "-9997", "hostname and API port")

	c, err = Load("", []string{"COOP_CLUSTER_REDIS=127.0.0.1:6379", "COOP_CLUSTER_NODEID=a", "COOP_CLUSTER_HEARTBEAT=500ms", "COOP_CLUSTER_TTL=2s"})
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:6379", c.Cluster.Redis)
	require.Equal(t, "a", c.NodeID())

	c, err = Load("", []string{"COOP_CLUSTER_ROLE=edge", "COOP_CLUSTER_REDIS=127.0.0.1:6379", "COOP_CLUSTER_UPSTREAM=10.0.0.1:7070"})
	require.NoError(t, err, "an edge with Redis and an upstream")
	require.Equal(t, "edge", c.Cluster.Role)
	require.Equal(t, "10.0.0.1:7070", c.Cluster.Upstream)

	for _, bad := range []struct{ yml, key string }{
		{"cluster:\n  role: edge\n", "cluster.role: edge needs cluster.redis"},
		{"cluster:\n  role: edge\n  redis: r:6379\n  upstream: nohostport\n", "cluster.upstream"},
		{"cluster:\n  redis: r:6379\n  upstream: o:7070\n", "cluster.upstream: only an edge"},
		{"cluster:\n  role: boss\n", "cluster.role"},
		{"cluster:\n  redis: nohostport\n", "cluster.redis"},
		{"cluster:\n  heartbeat: 10ms\n", "cluster.heartbeat"},
		{"cluster:\n  heartbeat: 2s\n  ttl: 3s\n", "cluster.ttl"},
	} {
		p := filepath.Join(t.TempDir(), "c.yml")
		require.NoError(t, os.WriteFile(p, []byte(bad.yml), 0o600))
		_, err := Load(p, nil)
		require.ErrorContains(t, err, bad.key, bad.yml)
	}
}
