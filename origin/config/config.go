// Package config loads the origin's configuration: embedded defaults, then
// an optional YAML file (unknown keys rejected), then environment overrides
// (COOP_ followed by the key path in upper case, e.g. COOP_RTMP_ADDRESS),
// then validation with errors that name the key.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/coopstreaming/coop/cluster/registry"
	"github.com/coopstreaming/coop/plugin/pluginapi"
	"github.com/coopstreaming/coop/segment"
)

// EnvPrefix prefixes every environment override.
const EnvPrefix = "COOP_"

// Duration is a time.Duration written as a string such as "10s".
type Duration time.Duration

// UnmarshalYAML parses "10s"-style durations.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Config is the whole configuration. coop.yml documents every key.
type Config struct {
	LogLevel string   `yaml:"logLevel"`
	Timeout  Duration `yaml:"timeout"`
	RTMP     RTMP     `yaml:"rtmp"`
	RTSP     RTSP     `yaml:"rtsp"`
	HTTP     HTTP     `yaml:"http"`
	Segment  Segment  `yaml:"segment"`
	Publish  Publish  `yaml:"publish"`
	Read     Read     `yaml:"read"`
	Plugin   Plugin   `yaml:"plugin"`
	HLS      HLS      `yaml:"hls"`
	Cluster  Cluster  `yaml:"cluster"`
	// Paths configures individual paths, e.g. an upstream to pull.
	Paths map[string]Path `yaml:"paths"`

	// MemoryLimit is the Go soft memory limit of coop-origin and of the
	// plugin, e.g. "512MiB" ("" or "0": none); see MemoryLimitBytes.
	MemoryLimit string `yaml:"memoryLimit"`
}

// Path configures one path (key: "live/cam1"). The key names follow
// MediaMTX's paths section.
type Path struct {
	// Source is an upstream the origin pulls and serves as if it were
	// pushed: rtsp://… or rtmp://… ("": the path is published by push).
	Source string `yaml:"source"`
	// SourceOnDemand pulls only while someone reads (not supported yet:
	// sources are pulled always).
	SourceOnDemand bool `yaml:"sourceOnDemand"`
	// RTSPTransport is the transport for rtsp:// sources: automatic (UDP,
	// then TCP), udp or tcp.
	RTSPTransport string `yaml:"rtspTransport"`
}

// HLS configures HLS / LL-HLS serving and the browser player page.
type HLS struct {
	Enabled bool `yaml:"enabled"`
	// Address serves /live/KEY/index.m3u8 and the player page /live/KEY.
	Address string `yaml:"address"`
	// Variant is lowLatency, fmp4 or mpegts.
	Variant string `yaml:"variant"`
	// SegmentCount is the number of segments in the playlist.
	SegmentCount int `yaml:"segmentCount"`
	// SegmentDuration is the minimum segment duration.
	SegmentDuration Duration `yaml:"segmentDuration"`
	// PartDuration is the minimum LL-HLS part duration.
	PartDuration Duration `yaml:"partDuration"`
	// QueueSize is the units queued per stream before the muxer drops.
	QueueSize int `yaml:"queueSize"`
	// MaxConnections caps open HLS connections (0: no cap).
	MaxConnections int `yaml:"maxConnections"`
}

// Plugin configures the P2P plugin the origin launches.
type Plugin struct {
	Enabled bool `yaml:"enabled"`
	// Path of the coop-plugin binary ("": next to coop-origin, then $PATH).
	Path string `yaml:"path"`
	// Address is the peer port.
	Address string `yaml:"address"`
	// UploadKbps caps the server partner's upload (0: no cap).
	UploadKbps int `yaml:"uploadKbps"`
	// Seeds is how many peers get a fresh segment from the server first.
	Seeds int `yaml:"seeds"`
	// Partners is the target partner count M.
	Partners int `yaml:"partners"`
	// KeyFile holds the manifest signing key (created on first run).
	KeyFile string `yaml:"keyFile"`
	// TokenSecret enables HMAC join tokens ("": joining is open).
	TokenSecret string `yaml:"tokenSecret"`
	// HandshakeTimeout bounds the wait for a new peer connection's Hello.
	HandshakeTimeout Duration `yaml:"handshakeTimeout"`
	// MaxPeerConnections caps the peer connections the plugin admits,
	// all streams together.
	MaxPeerConnections int `yaml:"maxPeerConnections"`
	// WebAddress is the plugin's web port: WebRTC signalling
	// (/rtc/signal) and the watch page (/watch/live/KEY); "": off.
	WebAddress string `yaml:"webAddress"`
	// ICEServers are the STUN/TURN servers of WebRTC peers (empty: host
	// candidates only, enough on one host or LAN).
	ICEServers []ICEServer `yaml:"iceServers"`
}

// ICEServer is one STUN or TURN server of plugin.iceServers.
type ICEServer struct {
	URLs       []string `yaml:"urls"`
	Username   string   `yaml:"username"`
	Credential string   `yaml:"credential"`
}

// RTMP configures RTMP ingest.
type RTMP struct {
	Enabled bool   `yaml:"enabled"`
	Address string `yaml:"address"`
	// MaxMessageSize bounds one audio/video message.
	MaxMessageSize int `yaml:"maxMessageSize"`
	// MaxConnections caps open RTMP connections (0: no cap).
	MaxConnections int `yaml:"maxConnections"`
}

// RTSP configures RTSP publish and playback.
type RTSP struct {
	Address        string `yaml:"address"`
	UDPRTPAddress  string `yaml:"udpRTPAddress"`
	UDPRTCPAddress string `yaml:"udpRTCPAddress"`
	WriteQueueSize int    `yaml:"writeQueueSize"`
	// MaxConnections caps open RTSP connections, and so sessions (0: no cap).
	MaxConnections int `yaml:"maxConnections"`
}

// HTTP configures the API, metrics and status page.
type HTTP struct {
	Address string `yaml:"address"`
	// MaxConnections caps open API connections (0: no cap).
	MaxConnections int `yaml:"maxConnections"`
	// Pprof serves net/http/pprof under /debug/pprof/ on the API port.
	Pprof bool `yaml:"pprof"`
}

// Segment configures the segmenter.
type Segment struct {
	Duration Duration `yaml:"duration"`
	Layers   int      `yaml:"layers"`
}

// Publish configures publishing.
type Publish struct {
	Keys        []string `yaml:"keys"`
	AuthHook    string   `yaml:"authHook"`
	GracePeriod Duration `yaml:"gracePeriod"`
	Takeover    bool     `yaml:"takeover"`
	// MaxStreams caps the paths that exist at once.
	MaxStreams int `yaml:"maxStreams"`
}

// Read configures read access.
type Read struct {
	User string `yaml:"user"`
	Pass string `yaml:"pass"`
}

// Default returns the embedded defaults.
func Default() Config {
	return Config{
		LogLevel: "info",
		Timeout:  Duration(10 * time.Second),
		RTMP:     RTMP{Enabled: true, Address: ":1935", MaxMessageSize: 8 << 20, MaxConnections: 32},
		RTSP:     RTSP{Address: ":8554", UDPRTPAddress: ":8000", UDPRTCPAddress: ":8001", WriteQueueSize: 512, MaxConnections: 256},
		HTTP:     HTTP{Address: ":9997", MaxConnections: 128},
		Segment:  Segment{Duration: Duration(segment.DefaultDuration), Layers: segment.DefaultLayers},
		Publish:  Publish{Keys: []string{}, GracePeriod: Duration(10 * time.Second), MaxStreams: 64},
		Plugin: Plugin{Enabled: true, Address: ":7070", WebAddress: ":7071", ICEServers: []ICEServer{}, Seeds: 2, Partners: pluginapi.DefaultPartners, KeyFile: "coop-stream.key",
			HandshakeTimeout:   Duration(pluginapi.DefaultHandshakeTimeout),
			MaxPeerConnections: pluginapi.DefaultMaxPeerConnections},
		HLS: HLS{Enabled: true, Address: ":8888", Variant: "lowLatency", SegmentCount: 7,
			SegmentDuration: Duration(time.Second), PartDuration: Duration(200 * time.Millisecond), QueueSize: 512,
			MaxConnections: 1024},

		Paths: map[string]Path{}, // coop.yml's "paths: {}"

		// The budget behind this default is in README "Security".
		MemoryLimit: "512MiB",

		Cluster: Cluster{Role: string(registry.RoleOrigin), Heartbeat: Duration(registry.DefaultHeartbeat),
			TTL: Duration(registry.DefaultTTL)},
	}
}

// Load builds the configuration from defaults, the file at path (may be
// empty: no file) and the environment.
func Load(path string, environ []string) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // an empty file is fine
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(&c, environ); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Validate checks every key and names the first bad one.
func (c *Config) Validate() error {
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: logLevel: %q is not one of debug, info, warn, error", c.LogLevel)
	}
	if c.Timeout <= 0 {
		return errors.New("config: timeout: must be positive")
	}
	addrs := map[string]string{
		"rtmp.address": c.RTMP.Address, "rtsp.address": c.RTSP.Address, "http.address": c.HTTP.Address,
		"plugin.address": c.Plugin.Address,
	}
	if c.Plugin.WebAddress != "" {
		addrs["plugin.webAddress"] = c.Plugin.WebAddress
	}
	for i, is := range c.Plugin.ICEServers {
		if len(is.URLs) == 0 {
			return fmt.Errorf("config: plugin.iceServers[%d]: no urls", i)
		}
		for _, u := range is.URLs {
			if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
				return fmt.Errorf("config: plugin.iceServers[%d]: %q is not a stun:, turn: or turns: URL", i, u)
			}
		}
	}
	if c.HLS.Enabled {
		addrs["hls.address"] = c.HLS.Address
	}
	if c.RTSP.UDPRTPAddress != "" || c.RTSP.UDPRTCPAddress != "" {
		addrs["rtsp.udpRTPAddress"] = c.RTSP.UDPRTPAddress
		addrs["rtsp.udpRTCPAddress"] = c.RTSP.UDPRTCPAddress
	}
	for key, a := range addrs {
		if _, port, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("config: %s: %q is not host:port: %w", key, a, err)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return fmt.Errorf("config: %s: bad port %q", key, port)
		}
	}
	if c.RTMP.MaxMessageSize < 64<<10 || c.RTMP.MaxMessageSize > 64<<20 {
		return fmt.Errorf("config: rtmp.maxMessageSize: %d is outside 64KiB..64MiB", c.RTMP.MaxMessageSize)
	}
	if c.RTSP.WriteQueueSize <= 0 || c.RTSP.WriteQueueSize&(c.RTSP.WriteQueueSize-1) != 0 {
		return fmt.Errorf("config: rtsp.writeQueueSize: %d must be a positive power of two", c.RTSP.WriteQueueSize)
	}
	if d := time.Duration(c.Segment.Duration); d < 100*time.Millisecond || d > 10*time.Second {
		return fmt.Errorf("config: segment.duration: %v is outside 100ms..10s", d)
	}
	if c.Segment.Layers < 1 || c.Segment.Layers > 8 {
		return fmt.Errorf("config: segment.layers: %d is outside 1..8", c.Segment.Layers)
	}
	if _, err := c.MemoryLimitBytes(); err != nil {
		return fmt.Errorf("config: memoryLimit: %w", err)
	}
	for key, n := range map[string]int{"rtmp.maxConnections": c.RTMP.MaxConnections,
		"rtsp.maxConnections": c.RTSP.MaxConnections, "http.maxConnections": c.HTTP.MaxConnections} {
		if n < 0 {
			return fmt.Errorf("config: %s: %d must not be negative", key, n)
		}
	}
	if c.Publish.MaxStreams < 1 || c.Publish.MaxStreams > 100000 {
		return fmt.Errorf("config: publish.maxStreams: %d is outside 1..100000", c.Publish.MaxStreams)
	}
	if c.Publish.GracePeriod < 0 {
		return errors.New("config: publish.gracePeriod: must not be negative")
	}
	for i, k := range c.Publish.Keys {
		if k == "" || strings.ContainsAny(k, "/?") {
			return fmt.Errorf("config: publish.keys[%d]: %q is not a valid stream key", i, k)
		}
	}
	if c.Plugin.UploadKbps < 0 {
		return errors.New("config: plugin.uploadKbps: must not be negative")
	}
	if c.Plugin.Seeds < 0 || c.Plugin.Seeds > 1000 {
		return fmt.Errorf("config: plugin.seeds: %d is outside 0..1000", c.Plugin.Seeds)
	}
	if c.Plugin.Partners < 1 || c.Plugin.Partners > 64 {
		return fmt.Errorf("config: plugin.partners: %d is outside 1..64", c.Plugin.Partners)
	}
	if d := time.Duration(c.Plugin.HandshakeTimeout); d < 100*time.Millisecond || d > time.Minute {
		return fmt.Errorf("config: plugin.handshakeTimeout: %v is outside 100ms..1m", d)
	}
	if n := c.Plugin.MaxPeerConnections; n < 1 || n > 1<<20 {
		return fmt.Errorf("config: plugin.maxPeerConnections: %d is outside 1..1048576", n)
	}
	for name, p := range c.Paths {
		if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.ContainsAny(name, "?#") {
			return fmt.Errorf("config: paths: %q is not a valid path (e.g. live/cam1)", name)
		}
		if p.Source == "" {
			continue
		}
		if !strings.HasPrefix(p.Source, "rtsp://") && !strings.HasPrefix(p.Source, "rtmp://") {
			return fmt.Errorf("config: paths.%s.source: %q must start with rtsp:// or rtmp://", name, p.Source)
		}
		if p.SourceOnDemand {
			return fmt.Errorf("config: paths.%s.sourceOnDemand: on-demand pulling is not supported yet; set false (pull always)", name)
		}
		switch p.RTSPTransport {
		case "", "automatic", "udp", "tcp":
		default:
			return fmt.Errorf("config: paths.%s.rtspTransport: %q is not one of automatic, udp, tcp", name, p.RTSPTransport)
		}
	}
	if err := c.Cluster.validate(); err != nil {
		return err
	}
	if err := c.HLS.validate(); err != nil {
		return err
	}
	if (c.Read.User == "") != (c.Read.Pass == "") {
		return errors.New("config: read.user and read.pass: set both or neither")
	}
	return nil
}

func (h *HLS) validate() error {
	switch h.Variant {
	case "lowLatency", "fmp4", "mpegts":
	default:
		return fmt.Errorf("config: hls.variant: %q is not one of lowLatency, fmp4, mpegts", h.Variant)
	}
	low := 3
	if h.Variant == "lowLatency" {
		low = 7
	}
	if h.SegmentCount < low || h.SegmentCount > 100 {
		return fmt.Errorf("config: hls.segmentCount: %d is outside %d..100 for variant %s", h.SegmentCount, low, h.Variant)
	}
	if d := time.Duration(h.SegmentDuration); d < 100*time.Millisecond || d > 30*time.Second {
		return fmt.Errorf("config: hls.segmentDuration: %v is outside 100ms..30s", d)
	}
	if d := time.Duration(h.PartDuration); d < 50*time.Millisecond || d > time.Duration(h.SegmentDuration) {
		return fmt.Errorf("config: hls.partDuration: %v is outside 50ms..hls.segmentDuration", d)
	}
	if h.QueueSize < 16 || h.QueueSize > 1<<16 {
		return fmt.Errorf("config: hls.queueSize: %d is outside 16..65536", h.QueueSize)
	}
	if h.MaxConnections < 0 {
		return errors.New("config: hls.maxConnections: must not be negative")
	}
	return nil
}

// MemoryLimitBytes parses MemoryLimit: a byte count with an optional
// unit B, KiB, MiB, GiB (or KB, MB, GB, powers of ten); 0 means no limit.
func (c *Config) MemoryLimitBytes() (int64, error) {
	s := strings.TrimSpace(c.MemoryLimit)
	if s == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("%q is not a size such as 512MiB", c.MemoryLimit)
	}
	if n > 0 && n*mult < 64<<20 {
		return 0, fmt.Errorf("%q is below 64MiB", c.MemoryLimit)
	}
	return n * mult, nil
}

// applyEnv sets every leaf key from COOP_<PATH> when present.
func applyEnv(c *Config, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			env[k] = v
		}
	}
	return walk(reflect.ValueOf(c).Elem(), "", func(key string, v reflect.Value) error {
		name := EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		s, ok := env[name]
		if !ok {
			return nil
		}
		delete(env, name)
		if err := setFromString(v, s); err != nil {
			return fmt.Errorf("config: %s (from %s): %w", key, name, err)
		}
		return nil
	})
}

func walk(v reflect.Value, prefix string, fn func(string, reflect.Value) error) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		key := t.Field(i).Tag.Get("yaml")
		if prefix != "" {
			key = prefix + "." + key
		}
		f := v.Field(i)
		if f.Kind() == reflect.Struct {
			if err := walk(f, key, fn); err != nil {
				return err
			}
			continue
		}
		if err := fn(key, f); err != nil {
			return err
		}
	}
	return nil
}

func setFromString(v reflect.Value, s string) error {
	if v.Type() == reflect.TypeOf(Duration(0)) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(n))
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return errors.New("a list of objects: set it in the YAML file")
		}
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported kind %s", v.Kind())
	}
	return nil
}
