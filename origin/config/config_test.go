package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDefaultsLoadWithoutAFile(t *testing.T) {
	c, err := Load("", nil)
	require.NoError(t, err)
	require.Equal(t, ":1935", c.RTMP.Address)
	require.Equal(t, Duration(10*time.Second), c.Publish.GracePeriod)
}

func TestShippedCoopYmlMatchesTheDefaults(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "coop.yml"), nil)
	require.NoError(t, err)
	require.Equal(t, Default(), c)
}

func TestFileThenEnvironmentOverride(t *testing.T) {
	p := filepath.Join(t.TempDir(), "coop.yml")
	require.NoError(t, os.WriteFile(p, []byte("rtmp:\n  address: \":2935\"\nsegment:\n  duration: 500ms\n"), 0o600))
	c, err := Load(p, []string{"COOP_RTMP_ADDRESS=127.0.0.1:3935", "COOP_PUBLISH_KEYS=a,b", "COOP_PUBLISH_GRACEPERIOD=3s"})
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:3935", c.RTMP.Address)
	require.Equal(t, Duration(500*time.Millisecond), c.Segment.Duration)
	require.Equal(t, []string{"a", "b"}, c.Publish.Keys)
	require.Equal(t, Duration(3*time.Second), c.Publish.GracePeriod)
}

func TestErrorsNameTheKey(t *testing.T) {
	for name, tc := range map[string]struct {
		yaml, env, want string
	}{
		"unknown key":                {yaml: "rtmp:\n  adress: x\n", want: "adress"},
		"bad duration":               {yaml: "timeout: soon\n", want: "soon"},
		"bad layers":                 {yaml: "segment:\n  layers: 9\n", want: "segment.layers"},
		"bad address":                {env: "COOP_RTSP_ADDRESS=nope", want: "rtsp.address"},
		"bad env int":                {env: "COOP_SEGMENT_LAYERS=three", want: "segment.layers"},
		"half read auth":             {yaml: "read:\n  user: u\n", want: "read.user"},
		"bad hls variant":            {env: "COOP_HLS_VARIANT=dash", want: "hls.variant"},
		"too few LL-HLS segments":    {yaml: "hls:\n  segmentCount: 3\n", want: "hls.segmentCount"},
		"parts longer than segments": {yaml: "hls:\n  partDuration: 2s\n", want: "hls.partDuration"},
		"bad hls address":            {env: "COOP_HLS_ADDRESS=nope", want: "hls.address"},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "coop.yml")
			require.NoError(t, os.WriteFile(p, []byte(tc.yaml), 0o600))
			var env []string
			if tc.env != "" {
				env = []string{tc.env}
			}
			_, err := Load(p, env)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestMemoryLimitParses(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, "512MiB": 512 << 20, "1GiB": 1 << 30, "100MB": 100e6, "67108864": 64 << 20} {
		c := Default()
		c.MemoryLimit = in
		got, err := c.MemoryLimitBytes()
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"lots", "-1MiB", "1MiB", "12XB"} {
		c := Default()
		c.MemoryLimit = in
		require.ErrorContains(t, c.Validate(), "memoryLimit", in)
	}
}

func TestHardeningKeysFromTheEnvironment(t *testing.T) {
	c, err := Load("", []string{"COOP_HTTP_PPROF=true", "COOP_RTSP_MAXCONNECTIONS=10", "COOP_PUBLISH_MAXSTREAMS=3", "COOP_MEMORYLIMIT=1GiB"})
	require.NoError(t, err)
	require.True(t, c.HTTP.Pprof)
	require.Equal(t, 10, c.RTSP.MaxConnections)
	require.Equal(t, 3, c.Publish.MaxStreams)
	_, err = Load("", []string{"COOP_PUBLISH_MAXSTREAMS=0"})
	require.ErrorContains(t, err, "publish.maxStreams")
	_, err = Load("", []string{"COOP_RTSP_MAXCONNECTIONS=-1"})
	require.ErrorContains(t, err, "rtsp.maxConnections")
}

func TestPluginAdmissionKeys(t *testing.T) {
	c, err := Load("", nil)
	require.NoError(t, err)
	require.Equal(t, Duration(3*time.Second), c.Plugin.HandshakeTimeout)
	require.Equal(t, 2048, c.Plugin.MaxPeerConnections)
	c, err = Load("", []string{"COOP_PLUGIN_HANDSHAKETIMEOUT=5s", "COOP_PLUGIN_MAXPEERCONNECTIONS=100"})
	require.NoError(t, err)
	require.Equal(t, Duration(5*time.Second), c.Plugin.HandshakeTimeout)
	require.Equal(t, 100, c.Plugin.MaxPeerConnections)
	for env, key := range map[string]string{
		"COOP_PLUGIN_HANDSHAKETIMEOUT=0s":    "plugin.handshakeTimeout",
		"COOP_PLUGIN_HANDSHAKETIMEOUT=soon":  "plugin.handshakeTimeout",
		"COOP_PLUGIN_MAXPEERCONNECTIONS=0":   "plugin.maxPeerConnections",
		"COOP_PLUGIN_MAXPEERCONNECTIONS=-5":  "plugin.maxPeerConnections",
		"COOP_PLUGIN_MAXPEERCONNECTIONS=lot": "plugin.maxPeerConnections",
	} {
		_, err := Load("", []string{env})
		require.ErrorContains(t, err, key, env)
	}
}
