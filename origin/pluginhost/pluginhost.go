// Package pluginhost runs the P2P plugin for the origin: it launches the
// plugin binary through hashicorp/go-plugin (gRPC, AutoMTLS), feeds it the
// segmented streams without ever blocking a publisher, health-checks it,
// restarts it with backoff and re-announces live streams when it dies,
// exports its stats, and kills it on every exit path.
//
// Of the plugin, the origin knows plugin/pluginapi only.
package pluginhost

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/coopstreaming/coop/origin/ratelog"
	"github.com/coopstreaming/coop/plugin/pluginapi"
	"github.com/coopstreaming/coop/segment"
)

// BinaryName is the plugin executable looked up when no path is set.
const BinaryName = "coop-plugin"

// Config configures the host.
type Config struct {
	// Path of the plugin binary ("": coop-plugin next to the origin's
	// executable, then on $PATH).
	Path string
	// Settings are sent to the plugin after every start.
	Settings pluginapi.Settings
	// SegmentDuration and Layers describe the streams announced.
	SegmentDuration time.Duration
	Layers          int
	// QueueSize bounds the events waiting for the plugin [256]; a
	// segment that finds the queue full is dropped (counted).
	QueueSize int
	// HealthInterval is the period of health checks and stats [500ms].
	HealthInterval time.Duration
	// MaxBackoff bounds the pause between restarts [5s].
	MaxBackoff time.Duration
	// Replay is how many recent segments per stream a restarted plugin
	// receives again [16].
	Replay int
}

// Status is the host's view of the plugin.
type Status struct {
	Enabled     bool   `json:"enabled"`
	Up          bool   `json:"up"`
	PID         int    `json:"pid"`
	Path        string `json:"path"`
	PeerAddress string `json:"peerAddress"`
	// WebAddress is the plugin's web port (WebRTC signalling, the browser
	// peer's page /watch/PATH; "": off).
	WebAddress      string `json:"webAddress"`
	StreamPublicKey string `json:"streamPublicKey"`
	Starts          uint64 `json:"starts"`
	Restarts        uint64 `json:"restarts"`
	LastError       string `json:"lastError,omitempty"`
	SegmentsPushed  uint64 `json:"segmentsPushed"`
	SegmentsDropped uint64 `json:"segmentsDropped"`
	BytesPushed     uint64 `json:"bytesPushed"`
	// Streams are the swarms' counters; byte counters are cumulative over
	// plugin restarts.
	Streams []pluginapi.StreamStats `json:"streams"`
	// Process is the plugin process's own report (goroutines, memory,
	// memory limit); its Rejected counters are cumulative over restarts.
	Process pluginapi.ProcessStats `json:"process"`
}

type eventKind int

const (
	evAnnounce eventKind = iota
	evSegment
	evClose
)

type event struct {
	kind   eventKind
	stream string
	header []byte
	epoch  uint64
	seg    pluginapi.Segment
}

// liveStream is what the host knows of a live stream to (re-)announce it.
type liveStream struct {
	header []byte
	// epoch names this instance of the stream: kept across re-announces
	// (publisher back within grace, plugin restart) so peers carry on, new
	// after StreamEnded, when segment numbers start again.
	epoch uint64
}

// Host supervises the plugin process. It implements stream.Sink.
type Host struct {
	Config Config
	Log    *slog.Logger

	queue  chan event
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	live map[string]liveStream // for re-announcing
	// recent keeps each live stream's last segments, re-pushed to a
	// restarted plugin so peers miss nothing across the restart.
	recent map[string][]pluginapi.Segment
	status Status
	totals map[string]*cumulative
	// rejSum and rejLast make the plugin's refusal counters cumulative
	// over restarts (guarded by mu).
	rejSum, rejLast map[string]uint64
	started         bool
	stopped         bool
	// warn rate-limits the warnings a publisher's stream can trigger (a
	// request the plugin refuses or fails, a failed re-announce).
	warn ratelog.Limiter
	// cur is the running plugin's client (nil while none is up), for
	// Relay calls (guarded by mu).
	cur *pluginapi.Client
}

// ErrPluginDown is Relay's answer while no plugin process is up.
var ErrPluginDown = errors.New("pluginhost: the plugin is not up")

// Relay has the running plugin relay an upstream node's stream
// (pluginapi.Relayer): it returns when ctx ends, the relay fails or the
// plugin process goes down; the caller retries. It never holds up the
// host's own feeding of the plugin.
func (h *Host) Relay(ctx context.Context, req pluginapi.RelayRequest, emit func(pluginapi.RelayEvent) error) error {
	h.mu.Lock()
	c := h.cur
	h.mu.Unlock()
	if c == nil {
		return ErrPluginDown
	}
	return c.Relay(ctx, req, emit)
}

// cumulative keeps a stream's byte counters monotonic across restarts.
type cumulative struct {
	last, sum pluginapi.StreamStats
}

// New resolves the plugin binary and prepares a host; events are queued
// from then on and delivered once Start runs.
func New(cfg Config, log *slog.Logger) (*Host, error) {
	h := &Host{Config: cfg, Log: log}
	c := &h.Config
	if c.QueueSize <= 0 {
		c.QueueSize = 256
	}
	if c.HealthInterval <= 0 {
		c.HealthInterval = 500 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.Replay <= 0 {
		c.Replay = 16
	}
	if h.Log == nil {
		h.Log = slog.Default()
	}
	path, err := resolve(c.Path)
	if err != nil {
		return nil, err
	}
	c.Path = path
	h.queue = make(chan event, c.QueueSize)
	h.live = make(map[string]liveStream)
	h.recent = make(map[string][]pluginapi.Segment)
	h.totals = make(map[string]*cumulative)
	h.status = Status{Enabled: true, Path: path}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	h.done = make(chan struct{})
	return h, nil
}

// Start launches the plugin and supervises it in the background: a
// plugin that fails to start is logged and retried, the origin runs on.
func (h *Host) Start() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.started && !h.stopped {
		h.started = true
		go h.supervise()
	}
}

func resolve(path string) (string, error) {
	if path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", fmt.Errorf("plugin.path: %w", err)
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("plugin.path: %w", err)
		}
		return abs, nil
	}
	if exe, err := os.Executable(); err == nil {
		cand := filepath.Join(filepath.Dir(exe), BinaryName)
		if _, err := os.Stat(cand); err == nil {
			return cand, nil
		}
	}
	p, err := exec.LookPath(BinaryName)
	if err != nil {
		return "", fmt.Errorf("plugin.path: %s is neither next to the origin nor on $PATH (build it with `make build`): %w", BinaryName, err)
	}
	return p, nil
}

// Close kills the plugin and stops supervising. Safe to call twice.
func (h *Host) Close() {
	h.mu.Lock()
	if h.stopped || h.cancel == nil {
		h.mu.Unlock()
		return
	}
	h.stopped = true
	started := h.started
	h.mu.Unlock()
	h.cancel()
	if started {
		<-h.done
	}
}

// Status returns the host's view of the plugin.
func (h *Host) Status() Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.status
	st.Streams = append([]pluginapi.StreamStats(nil), h.status.Streams...)
	st.Process.Rejected = maps.Clone(h.status.Process.Rejected)
	return st
}

// StreamStarted implements stream.Sink.
func (h *Host) StreamStarted(path string, header []byte) {
	h.mu.Lock()
	ls, ok := h.live[path]
	if !ok {
		ls.epoch = rand.Uint64() | 1 // a new instance: segments number from zero
	}
	ls.header = header
	h.live[path] = ls
	h.mu.Unlock()
	h.enqueue(event{kind: evAnnounce, stream: path, header: header, epoch: ls.epoch}, false)
}

// SegmentReady implements stream.Sink.
func (h *Host) SegmentReady(path string, seg *segment.Segment, chunks [][]byte) {
	ms := uint32(seg.Duration * 1000 / segment.Timebase)
	ps := pluginapi.Segment{Stream: path, Seq: seg.Seq, DurationMs: max(ms, 1), RandomAccess: seg.RandomAccess, Chunks: chunks}
	h.mu.Lock()
	r := append(h.recent[path], ps)
	if len(r) > h.Config.Replay {
		r = slices.Delete(r, 0, len(r)-h.Config.Replay)
	}
	h.recent[path] = r
	h.mu.Unlock()
	h.enqueue(event{kind: evSegment, stream: path, seg: ps}, true)
}

// StreamEnded implements stream.Sink.
func (h *Host) StreamEnded(path string) {
	h.mu.Lock()
	delete(h.live, path)
	delete(h.recent, path)
	h.mu.Unlock()
	h.enqueue(event{kind: evClose, stream: path}, false)
}

// enqueue never blocks: a full queue drops the event. A dropped announce
// or close is repaired later (a segment of an unknown stream triggers a
// re-announce; streams are re-announced at every plugin start).
func (h *Host) enqueue(ev event, counted bool) {
	if h.queue == nil {
		return
	}
	select {
	case h.queue <- ev:
	default:
		if counted {
			h.mu.Lock()
			h.status.SegmentsDropped++
			h.mu.Unlock()
		}
	}
}

// session is one running plugin process.
type session struct {
	client *plugin.Client
	rpc    plugin.ClientProtocol
	p2p    *pluginapi.Client
	// pushed is the newest segment pushed per stream in this session.
	pushed map[string]uint64
}

func (h *Host) supervise() {
	defer close(h.done)
	backoff := time.Duration(0)
	for {
		if backoff > 0 {
			select {
			case <-time.After(backoff):
			case <-h.ctx.Done():
				return
			}
		}
		s, err := h.launch()
		if err != nil {
			h.fail(err)
			backoff = h.nextBackoff(backoff)
			continue
		}
		began := time.Now()
		h.mu.Lock()
		h.cur = s.p2p
		h.mu.Unlock()
		err = h.run(s)
		s.p2p.ClosePush()
		s.client.Kill()
		h.mu.Lock()
		h.status.Up = false
		h.cur = nil
		h.mu.Unlock()
		if h.ctx.Err() != nil {
			h.Log.Info("plugin stopped")
			return
		}
		h.fail(err)
		h.mu.Lock()
		h.status.Restarts++
		h.mu.Unlock()
		if time.Since(began) > healthyRun {
			backoff = 0 // it ran fine for a while: restart at once
		} else {
			backoff = h.nextBackoff(backoff)
		}
	}
}

// healthyRun is how long a plugin must have run for its next restart to
// be immediate (backoff reset): a plugin killed now and then, not in a
// crash loop, costs peers no backoff pause.
const healthyRun = 10 * time.Second

// accumulateProcess keeps the process report, with refusal counters
// summed over plugin restarts; it runs under h.mu.
func (h *Host) accumulateProcess(p pluginapi.ProcessStats) pluginapi.ProcessStats {
	if h.rejSum == nil {
		h.rejSum, h.rejLast = map[string]uint64{}, map[string]uint64{}
	}
	for reason, n := range p.Rejected {
		if _, ok := h.rejSum[reason]; !ok && len(h.rejSum) >= 32 {
			continue // reasons are the plugin's constants; bound them anyway
		}
		sum := h.rejSum[reason]
		add(&sum, h.rejLast[reason], n)
		h.rejSum[reason], h.rejLast[reason] = sum, n
	}
	for reason := range h.rejLast {
		if _, ok := p.Rejected[reason]; !ok {
			h.rejLast[reason] = 0 // a restarted plugin has not seen it yet
		}
	}
	p.Rejected = maps.Clone(h.rejSum)
	return p
}

// nextBackoff doubles the pause between restarts, from 250 ms up to
// MaxBackoff.
func (h *Host) nextBackoff(b time.Duration) time.Duration {
	return min(max(2*b, 250*time.Millisecond), h.Config.MaxBackoff)
}

func (h *Host) fail(err error) {
	h.Log.Error("plugin down; restarting", "err", err)
	h.mu.Lock()
	h.status.LastError = err.Error()
	h.mu.Unlock()
}

// launch starts the plugin process, configures it and re-announces the
// live streams.
func (h *Host) launch() (*session, error) {
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  pluginapi.Handshake,
		Plugins:          plugin.PluginSet{pluginapi.PluginName: &pluginapi.GRPCPlugin{}},
		Cmd:              exec.Command(h.Config.Path),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     10 * time.Second,
		// The plugin logs with slog to its stderr, copied to ours.
		Stderr: &stderrFilter{w: os.Stderr},
		Logger: hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.Off}),
	})
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		client.Kill()
		return nil, errors.New("host closed")
	}
	h.status.Starts++
	h.mu.Unlock()
	s, err := h.connect(client)
	if err != nil {
		client.Kill()
		return nil, err
	}
	return s, nil
}

func (h *Host) connect(client *plugin.Client) (*session, error) {
	rpc, err := client.Client()
	if err != nil {
		return nil, fmt.Errorf("start plugin %s: %w", h.Config.Path, err)
	}
	raw, err := rpc.Dispense(pluginapi.PluginName)
	if err != nil {
		return nil, fmt.Errorf("dispense plugin: %w", err)
	}
	p2p, ok := raw.(*pluginapi.Client)
	if !ok {
		return nil, fmt.Errorf("plugin gave %T", raw)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	conf, err := p2p.Configure(ctx, h.Config.Settings)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.status.Up, h.status.PID, h.status.PeerAddress, h.status.WebAddress = true, conf.PID, conf.PeerAddress, conf.WebAddress
	h.status.StreamPublicKey = hex.EncodeToString(conf.StreamPublicKey)
	h.status.LastError = ""
	for _, c := range h.totals {
		c.last = pluginapi.StreamStats{} // a new process counts from zero
	}
	live := make(map[string]liveStream, len(h.live))
	replay := make(map[string][]pluginapi.Segment, len(h.live))
	for k, v := range h.live {
		live[k] = v
		replay[k] = slices.Clone(h.recent[k])
	}
	h.mu.Unlock()
	h.Log.Info("plugin up", "pid", conf.PID, "peer_address", conf.PeerAddress)
	s := &session{client: client, rpc: rpc, p2p: p2p, pushed: make(map[string]uint64)}
	for name, ls := range live {
		if err := h.announce(s, name, ls); err != nil {
			return nil, err
		}
		for _, seg := range replay[name] {
			if err := h.push(s, seg); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// push sends a segment unless this session already has it.
func (h *Host) push(s *session, seg pluginapi.Segment) error {
	if last, ok := s.pushed[seg.Stream]; ok && seg.Seq <= last {
		return nil
	}
	if err := s.p2p.PushSegment(h.ctx, seg); err != nil {
		return err
	}
	s.pushed[seg.Stream] = seg.Seq
	size := 0
	for _, c := range seg.Chunks {
		size += len(c)
	}
	h.mu.Lock()
	h.status.SegmentsPushed++
	h.status.BytesPushed += uint64(size)
	h.mu.Unlock()
	return nil
}

func (h *Host) announce(s *session, name string, ls liveStream) error {
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	return s.p2p.AnnounceStream(ctx, pluginapi.StreamInfo{
		Name: name, Header: ls.header, Layers: h.Config.Layers, Epoch: ls.epoch,
		SegmentDurationMs: uint32(max(h.Config.SegmentDuration/time.Millisecond, 1)),
	})
}

// run feeds the plugin and checks its health until it fails or the host
// closes.
func (h *Host) run(s *session) error {
	tick := time.NewTicker(h.Config.HealthInterval)
	defer tick.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return nil
		case ev := <-h.queue:
			if err := h.handle(s, ev); err != nil {
				return err
			}
		case <-tick.C:
			if err := h.check(s); err != nil {
				return err
			}
		}
	}
}

// handle delivers one event; a watchdog kills a plugin that hangs.
func (h *Host) handle(s *session, ev event) error {
	watchdog := time.AfterFunc(5*time.Second, func() {
		h.Log.Error("plugin hangs; killing it")
		s.client.Kill()
	})
	defer watchdog.Stop()
	var err error
	switch ev.kind {
	case evAnnounce:
		err = h.announce(s, ev.stream, liveStream{header: ev.header, epoch: ev.epoch})
		delete(s.pushed, ev.stream) // a new publish may number from zero
	case evClose:
		ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
		err = s.p2p.CloseStream(ctx, ev.stream)
		cancel()
		if errors.Is(err, pluginapi.ErrUnknownStream) {
			err = nil
		}
	case evSegment:
		err = h.push(s, ev.seg)
	}
	if err == nil {
		return nil
	}
	if s.client.Exited() {
		return fmt.Errorf("plugin exited: %w", err)
	}
	if errors.Is(err, pluginapi.ErrInvalid) {
		h.warn.Warn(h.Log, "plugin refused a request", "stream", ev.stream, "err", err)
		return nil
	}
	h.warn.Warn(h.Log, "plugin request failed", "stream", ev.stream, "err", err)
	return nil
}

// check pings the plugin and refreshes its stats. The push stream reports
// refusals only when it closes, so a stream the plugin does not know (it
// restarted, an announce was dropped) is found here and re-announced.
func (h *Host) check(s *session) error {
	if s.client.Exited() {
		return errors.New("plugin process exited")
	}
	if err := s.rpc.Ping(); err != nil { // go-plugin's health service
		if h.ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("plugin ping: %w", err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, 2*time.Second)
	defer cancel()
	stats, err := s.p2p.Stats(ctx)
	if err != nil {
		if h.ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("plugin health check: %w", err)
	}
	known := make(map[string]bool, len(stats))
	for _, st := range stats {
		known[st.Stream] = true
	}
	h.mu.Lock()
	missing := map[string]liveStream{}
	for name, ls := range h.live {
		if !known[name] {
			missing[name] = ls
		}
	}
	h.status.Streams = h.accumulate(stats)
	h.status.Process = h.accumulateProcess(s.p2p.Process())
	h.mu.Unlock()
	for name, ls := range missing {
		if err := h.announce(s, name, ls); err != nil {
			h.warn.Warn(h.Log, "re-announce failed", "stream", name, "err", err)
		}
	}
	return nil
}

// add adds to sum what a per-process counter gained since last.
func add(sum *uint64, last, now uint64) {
	if now >= last {
		*sum += now - last
	} else {
		*sum += now // the plugin restarted: its counter began again
	}
}

// accumulate turns per-process counters into counters monotonic over
// plugin restarts; it runs under h.mu.
func (h *Host) accumulate(stats []pluginapi.StreamStats) []pluginapi.StreamStats {
	out := make([]pluginapi.StreamStats, 0, len(stats))
	for _, st := range stats {
		c := h.totals[st.Stream]
		if c == nil {
			c = &cumulative{}
			h.totals[st.Stream] = c
		}
		add(&c.sum.ServerMediaBytes, c.last.ServerMediaBytes, st.ServerMediaBytes)
		add(&c.sum.ServerControlBytes, c.last.ServerControlBytes, st.ServerControlBytes)
		// Peers report lifetime totals, which a restarted plugin learns
		// again: keep the largest seen rather than adding.
		c.sum.PeerBytesFromServer = max(c.sum.PeerBytesFromServer, st.PeerBytesFromServer)
		c.sum.PeerBytesFromPeers = max(c.sum.PeerBytesFromPeers, st.PeerBytesFromPeers)
		add(&c.sum.Segments, c.last.Segments, st.Segments)
		add(&c.sum.RefusedJoins, c.last.RefusedJoins, st.RefusedJoins)
		add(&c.sum.Banned, c.last.Banned, st.Banned)
		c.last = st
		view := st
		view.ServerMediaBytes, view.ServerControlBytes = c.sum.ServerMediaBytes, c.sum.ServerControlBytes
		view.PeerBytesFromServer, view.PeerBytesFromPeers = c.sum.PeerBytesFromServer, c.sum.PeerBytesFromPeers
		view.Segments, view.RefusedJoins, view.Banned = c.sum.Segments, c.sum.RefusedJoins, c.sum.Banned
		out = append(out, view)
	}
	return out
}
