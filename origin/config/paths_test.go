package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPathsSourcesAreLoadedAndChecked(t *testing.T) {
	load := func(t *testing.T, yml string) (Config, error) {
		p := filepath.Join(t.TempDir(), "coop.yml")
		require.NoError(t, os.WriteFile(p, []byte(yml), 0o600))
		return Load(p, nil)
	}
	t.Run("a pulled path loads", func(t *testing.T) {
		c, err := load(t, "paths:\n  live/cam1:\n    source: rtsp://cam.lan/s\n    rtspTransport: tcp\n")
		require.NoError(t, err)
		require.Equal(t, Path{Source: "rtsp://cam.lan/s", RTSPTransport: "tcp"}, c.Paths["live/cam1"])
	})
	for name, yml := range map[string]string{
		"a source with another scheme is refused": "paths:\n  live/x:\n    source: http://x/y\n",
		"an unknown transport is refused":         "paths:\n  live/x:\n    source: rtsp://x/y\n    rtspTransport: sctp\n",
		"on-demand pulling is refused for now":    "paths:\n  live/x:\n    source: rtsp://x/y\n    sourceOnDemand: true\n",
		"a path with a leading slash is refused":  "paths:\n  /live/x:\n    source: rtsp://x/y\n",
		"an unknown key under a path is refused":  "paths:\n  live/x:\n    sourse: rtsp://x/y\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := load(t, yml)
			require.Error(t, err)
		})
	}
	t.Run("the shipped coop.yml loads", func(t *testing.T) {
		_, err := Load(filepath.Join("..", "..", "coop.yml"), nil)
		require.NoError(t, err)
	})
}
