package httpapi

import (
	"context"
	"encoding/hex"
	"sort"
	"sync"
	"time"

	"github.com/coopstreaming/coop/origin/pluginhost"
	"github.com/coopstreaming/coop/plugin/pluginapi"
)

// Defaults of History.
const (
	// DefaultHistoryLength is how many one-second samples History keeps
	// (10 minutes).
	DefaultHistoryLength = 600
	// LiveWindow is the span of the "live" figures (the last minute).
	LiveWindow = time.Minute
	// maxHistoryStreams bounds the streams one sample records.
	maxHistoryStreams = 64
)

// counters are one stream's cumulative figures at one instant.
type counters struct {
	BytesIn             uint64
	RTSPBytesOut        uint64
	HLSBytesOut         uint64
	P2PBytesOut         uint64 // media and control bytes the server partner sent
	PeerBytesFromServer uint64
	PeerBytesFromPeers  uint64
	RTSPReaders         int
	Peers               int
	Continuity          float64
	HasP2P              bool
}

type sample struct {
	at      time.Time
	streams map[string]counters
}

// History samples every stream's counters once a second into a bounded
// ring, for the live (last minute) figures and the status page's plots.
type History struct {
	// Sources are read once per sample (Streams, Readers, HLS, P2P).
	Sources Sources
	// Length is the number of samples kept (default DefaultHistoryLength).
	Length int
	// Every is the sampling period (default 1s).
	Every time.Duration

	// mu guards ring and next.
	mu   sync.Mutex
	ring []sample
	next int
	full bool

	cancel context.CancelFunc
	done   chan struct{}
}

// Start samples until Close.
func (h *History) Start() {
	if h.Length <= 0 {
		h.Length = DefaultHistoryLength
	}
	if h.Every <= 0 {
		h.Every = time.Second
	}
	h.ring = make([]sample, h.Length)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		t := time.NewTicker(h.Every)
		defer t.Stop()
		h.Sample(time.Now())
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				h.Sample(now)
			}
		}
	}()
}

// Close stops sampling.
func (h *History) Close() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
	}
}

// Sample records the counters now (Start calls it once a second).
func (h *History) Sample(now time.Time) {
	s := sample{at: now, streams: collect(h.Sources)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ring == nil {
		h.ring = make([]sample, max(h.Length, 2))
	}
	h.ring[h.next] = s
	h.next = (h.next + 1) % len(h.ring)
	if h.next == 0 {
		h.full = true
	}
}

// samples returns the kept samples, oldest first.
func (h *History) samples() []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ring == nil {
		return nil
	}
	if !h.full {
		return append([]sample(nil), h.ring[:h.next]...)
	}
	return append(append([]sample(nil), h.ring[h.next:]...), h.ring[:h.next]...)
}

// collect reads every source once.
func collect(src Sources) map[string]counters {
	out := map[string]counters{}
	if src.Streams != nil {
		for _, s := range src.Streams() {
			if len(out) >= maxHistoryStreams {
				break
			}
			out[s.Path] = counters{BytesIn: s.BytesIn, RTSPBytesOut: s.BytesOut, RTSPReaders: s.Readers}
		}
	}
	if src.HLS != nil {
		for _, s := range src.HLS() {
			if c, ok := out[s.Path]; ok {
				c.HLSBytesOut = s.BytesSent
				out[s.Path] = c
			}
		}
	}
	if st, ok := p2pStatus(src); ok {
		for _, s := range st.Streams {
			c, ok := out[s.Stream]
			if !ok {
				continue
			}
			c.HasP2P = true
			c.P2PBytesOut = s.ServerMediaBytes + s.ServerControlBytes
			c.PeerBytesFromServer, c.PeerBytesFromPeers = s.PeerBytesFromServer, s.PeerBytesFromPeers
			c.Peers, c.Continuity = s.Peers, s.Continuity
			out[s.Stream] = c
		}
	}
	return out
}

// p2pStatus returns the plugin host's status when the sources have one.
func p2pStatus(src Sources) (pluginhost.Status, bool) {
	f, ok := src.Extra["p2p"]
	if !ok {
		return pluginhost.Status{}, false
	}
	st, ok := f().(pluginhost.Status)
	return st, ok
}

// Figures are one stream's operator figures: live (over the last minute,
// or since the stream's first sample when younger) beside lifetime totals.
type Figures struct {
	Path string `json:"path"`
	// WindowSeconds is the span the live figures cover.
	WindowSeconds float64 `json:"windowSeconds"`
	// IngestKbps is the publisher's media rate over the window.
	IngestKbps float64 `json:"ingestKbps"`
	// OutKbps is what the origin sent over the window: RTSP + HLS + P2P.
	OutKbps     float64  `json:"outKbps"`
	RTSPOutKbps float64  `json:"rtspOutKbps"`
	HLSOutKbps  float64  `json:"hlsOutKbps"`
	P2POutKbps  float64  `json:"p2pOutKbps"`
	Offload     *float64 `json:"offload"` // over the window; null: no P2P media
	// Lifetime totals, in bytes.
	BytesIn         uint64   `json:"bytesIn"`
	BytesOut        uint64   `json:"bytesOut"` // RTSP + HLS + P2P
	RTSPBytesOut    uint64   `json:"rtspBytesOut"`
	HLSBytesOut     uint64   `json:"hlsBytesOut"`
	P2PBytesOut     uint64   `json:"p2pBytesOut"`
	OffloadLifetime *float64 `json:"offloadLifetime"`
	RTSPReaders     int      `json:"rtspReaders"`
	Peers           int      `json:"peers"`
	Continuity      *float64 `json:"continuity"`
}

// Figures computes every stream's figures from the samples.
func (h *History) Figures() []Figures {
	ss := h.samples()
	if len(ss) == 0 {
		return []Figures{}
	}
	last := ss[len(ss)-1]
	out := make([]Figures, 0, len(last.streams))
	for path, now := range last.streams {
		f := Figures{Path: path, BytesIn: now.BytesIn, RTSPBytesOut: now.RTSPBytesOut, HLSBytesOut: now.HLSBytesOut,
			P2PBytesOut: now.P2PBytesOut, RTSPReaders: now.RTSPReaders, Peers: now.Peers}
		f.BytesOut = f.RTSPBytesOut + f.HLSBytesOut + f.P2PBytesOut
		if now.HasP2P {
			f.Continuity = ptr(now.Continuity)
			f.OffloadLifetime = share(now.PeerBytesFromPeers, now.PeerBytesFromServer)
		}
		// The oldest sample of this stream within the window.
		var then *sample
		for i := len(ss) - 1; i >= 0; i-- {
			if last.at.Sub(ss[i].at) > LiveWindow {
				break
			}
			if _, ok := ss[i].streams[path]; ok {
				then = &ss[i]
			}
		}
		if then != nil && then != &ss[len(ss)-1] {
			old := then.streams[path]
			secs := last.at.Sub(then.at).Seconds()
			f.WindowSeconds = secs
			rate := func(a, b uint64) float64 {
				if b < a { // a counter restarted (plugin or publisher)
					return 0
				}
				return float64(b-a) * 8 / 1000 / secs
			}
			f.IngestKbps = rate(old.BytesIn, now.BytesIn)
			f.RTSPOutKbps = rate(old.RTSPBytesOut, now.RTSPBytesOut)
			f.HLSOutKbps = rate(old.HLSBytesOut, now.HLSBytesOut)
			f.P2POutKbps = rate(old.P2PBytesOut, now.P2PBytesOut)
			f.OutKbps = f.RTSPOutKbps + f.HLSOutKbps + f.P2POutKbps
			if now.HasP2P && now.PeerBytesFromPeers >= old.PeerBytesFromPeers && now.PeerBytesFromServer >= old.PeerBytesFromServer {
				f.Offload = share(now.PeerBytesFromPeers-old.PeerBytesFromPeers, now.PeerBytesFromServer-old.PeerBytesFromServer)
			}
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// share is peers ÷ (peers + server), nil when both are zero.
func share(peers, server uint64) *float64 {
	if peers+server == 0 {
		return nil
	}
	return ptr(float64(peers) / float64(peers+server))
}

func ptr[T any](v T) *T { return &v }

// Point is one second of a stream's history for the plots.
type Point struct {
	// T is the sample time in Unix milliseconds.
	T           int64    `json:"t"`
	IngestKbps  float64  `json:"ingestKbps"`
	OutKbps     float64  `json:"outKbps"`
	RTSPReaders int      `json:"rtspReaders"`
	Peers       int      `json:"peers"`
	Offload     *float64 `json:"offload"`
	Continuity  *float64 `json:"continuity"`
}

// Series returns each stream's per-sample points, oldest first. Offload
// is over a 10 s sliding window (one second of chunks is too few).
func (h *History) Series() map[string][]Point {
	ss := h.samples()
	out := map[string][]Point{}
	const offloadWindow = 10
	for i := 1; i < len(ss); i++ {
		secs := ss[i].at.Sub(ss[i-1].at).Seconds()
		if secs <= 0 {
			continue
		}
		for path, now := range ss[i].streams {
			old, ok := ss[i-1].streams[path]
			if !ok {
				continue
			}
			rate := func(a, b uint64) float64 {
				if b < a {
					return 0
				}
				return float64(b-a) * 8 / 1000 / secs
			}
			p := Point{T: ss[i].at.UnixMilli(), IngestKbps: rate(old.BytesIn, now.BytesIn),
				OutKbps:     rate(old.RTSPBytesOut, now.RTSPBytesOut) + rate(old.HLSBytesOut, now.HLSBytesOut) + rate(old.P2PBytesOut, now.P2PBytesOut),
				RTSPReaders: now.RTSPReaders, Peers: now.Peers}
			if now.HasP2P {
				p.Continuity = ptr(now.Continuity)
				j := max(0, i-offloadWindow)
				if back, ok := ss[j].streams[path]; ok && now.PeerBytesFromPeers >= back.PeerBytesFromPeers && now.PeerBytesFromServer >= back.PeerBytesFromServer {
					p.Offload = share(now.PeerBytesFromPeers-back.PeerBytesFromPeers, now.PeerBytesFromServer-back.PeerBytesFromServer)
				}
			}
			out[path] = append(out[path], p)
		}
	}
	return out
}

// P2PStream is one swarm in /v1/p2p, with camelCase keys, the lifetime
// offload and the offload over the last minute.
type P2PStream struct {
	Stream              string   `json:"stream"`
	Peers               int      `json:"peers"`
	LiveEdge            uint64   `json:"liveEdge"`
	Segments            uint64   `json:"segments"`
	ServerMediaBytes    uint64   `json:"serverMediaBytes"`
	ServerControlBytes  uint64   `json:"serverControlBytes"`
	PeerBytesFromServer uint64   `json:"peerBytesFromServer"`
	PeerBytesFromPeers  uint64   `json:"peerBytesFromPeers"`
	Continuity          float64  `json:"continuity"`
	RefusedJoins        uint64   `json:"refusedJoins"`
	Banned              uint64   `json:"banned"`
	OffloadLifetime     float64  `json:"offloadLifetime"`
	OffloadLastMinute   *float64 `json:"offloadLastMinute"`
	// Epoch is the stream instance the swarm serves.
	Epoch uint64 `json:"epoch"`
	// A relayed stream's (an edge's): the key its peers verify with (hex:
	// the origin's), its upstream and the relay's figures there.
	StreamKey            string `json:"streamKey,omitempty"`
	Upstream             string `json:"upstream,omitempty"`
	RelayBytesFromServer uint64 `json:"relayBytesFromServer,omitempty"`
	RelayBytesFromPeers  uint64 `json:"relayBytesFromPeers,omitempty"`
	RelayConnected       bool   `json:"relayConnected,omitempty"`
	RelayPartners        int    `json:"relayPartners,omitempty"`
}

// P2PProcess is the plugin process's report with camelCase keys.
type P2PProcess struct {
	Goroutines       uint64            `json:"goroutines"`
	MemoryBytes      uint64            `json:"memoryBytes"`
	HeapBytes        uint64            `json:"heapBytes"`
	MemoryLimitBytes uint64            `json:"memoryLimitBytes"`
	Rejected         map[string]uint64 `json:"rejected"`
}

// P2PView is /v1/p2p: the plugin host's status with camelCase keys all
// the way down.
type P2PView struct {
	pluginhost.Status
	Streams []P2PStream `json:"streams"`
	Process P2PProcess  `json:"process"`
}

func newP2PView(st pluginhost.Status, figs []Figures) P2PView {
	live := map[string]*float64{}
	for _, f := range figs {
		live[f.Path] = f.Offload
	}
	v := P2PView{Status: st, Streams: make([]P2PStream, 0, len(st.Streams)), Process: P2PProcess{
		Goroutines: st.Process.Goroutines, MemoryBytes: st.Process.MemoryBytes, HeapBytes: st.Process.HeapBytes,
		MemoryLimitBytes: st.Process.MemoryLimitBytes, Rejected: st.Process.Rejected,
	}}
	for _, s := range st.Streams {
		v.Streams = append(v.Streams, p2pStream(s, live[s.Stream]))
	}
	return v
}

func p2pStream(s pluginapi.StreamStats, lastMinute *float64) P2PStream {
	return P2PStream{Stream: s.Stream, Peers: s.Peers, LiveEdge: s.LiveEdge, Segments: s.Segments,
		ServerMediaBytes: s.ServerMediaBytes, ServerControlBytes: s.ServerControlBytes,
		PeerBytesFromServer: s.PeerBytesFromServer, PeerBytesFromPeers: s.PeerBytesFromPeers,
		Continuity: s.Continuity, RefusedJoins: s.RefusedJoins, Banned: s.Banned,
		OffloadLifetime: s.Offload(), OffloadLastMinute: lastMinute, Epoch: s.Epoch,
		StreamKey: hex.EncodeToString(s.StreamKey), Upstream: s.Upstream, RelayBytesFromServer: s.RelayBytesFromServer,
		RelayBytesFromPeers: s.RelayBytesFromPeers, RelayConnected: s.RelayConnected, RelayPartners: s.RelayPartners}
}
