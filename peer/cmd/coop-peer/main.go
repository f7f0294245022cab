// Command coop-peer joins a CoopStreaming swarm and re-serves the stream to
// local players:
//
//	coop-peer --server HOST:7070 --stream live/KEY
//	ffplay -analyzeduration 500000 http://127.0.0.1:8090/stream.ts
//
// --server takes several addresses (comma-separated or repeated: the
// nodes of a cluster): coop-peer attaches to the first that admits it,
// follows a node's redirect to another, and when it loses its server it
// goes on with the next address while its partners keep it playing.
//
// It attaches to the plugin's peer port (the server partner and tracker),
// gets partners from it, exchanges buffer maps and segments with them, and
// plays the stream out as HTTP MPEG-TS, local RTSP (--rtsp, default
// rtsp://127.0.0.1:8555/STREAM), local HLS (/STREAM/index.m3u8) and a web
// page with a player and live stats (/; --open launches a browser). A
// status line shows partners, layers, continuity and the share of media
// from peers; GET /stats returns the full counters as JSON.
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/coopstreaming/coop/peer/playout"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/partners"
	"github.com/coopstreaming/coop/peerproto/playback"
	"github.com/coopstreaming/coop/peerproto/rtcnode"
	"github.com/coopstreaming/coop/peerproto/tcpnode"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// exitRefused is the exit code when the server refuses to let us join.
const exitRefused = 3

// Defaults of --server and --server-timeout. A live server sends a Have
// per segment and answers the peer's pings every 4 s, so 10 s of silence
// is a dead one.
const (
	defaultServer        = "127.0.0.1:7070"
	defaultServerTimeout = 10 * time.Second
)

// defaultProcs is --procs, the Go scheduler's processors (GOMAXPROCS). A
// peer is I/O-bound (about 2% of a core at 1 Mbit/s, ~12% at 6 Mbit/s),
// and each message hands off between goroutines; with more than one
// processor the runtime wakes and parks idle threads for each hand-off.
// One processor cut the real swarm bench's peer CPU p95 from 2.23/2.23/
// 1.97% to 1.97/1.93/2.07% (-bf 3, 3 runs) with the same delivery.
const defaultProcs = 1

// addrList is --server: addresses, comma-separated and/or repeated; the
// first use replaces the default.
type addrList struct {
	list []string
	set  bool
}

func (a *addrList) String() string {
	if a == nil {
		return ""
	}
	return strings.Join(a.list, ",")
}

func (a *addrList) Set(v string) error {
	if !a.set {
		a.list, a.set = nil, true
	}
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(s); err != nil {
			return fmt.Errorf("%q is not HOST:PORT: %w", s, err)
		}
		a.list = append(a.list, s)
	}
	if len(a.list) == 0 {
		return errors.New("no address")
	}
	return nil
}

type options struct {
	stream, token, listen, advertise, httpAddr, streamKey, logLevel string
	servers                                                         addrList
	serverTimeout                                                   time.Duration
	uploadKbps, partners                                            int
	playoutDelay, statusEvery                                       time.Duration
	quiet                                                           bool
	rtspAddr                                                        string
	open                                                            bool
	// rtcURL is the plugin's signalling endpoint (WebRTC to peers; ""
	// off); rtcLoopback limits ICE to loopback host candidates.
	rtcURL      string
	rtcLoopback bool
	// cpuProfile, when set, receives a CPU profile of the whole run.
	cpuProfile string
	// procs is GOMAXPROCS (0: the Go default); the GOMAXPROCS variable,
	// when set, wins.
	procs int
}

func main() {
	var o options
	o.servers = addrList{list: []string{defaultServer}}
	flag.Var(&o.servers, "server", "plugin peer port of the origin (HOST:PORT); several, comma-separated or repeated, are tried in turn and on failover")
	flag.DurationVar(&o.serverTimeout, "server-timeout", defaultServerTimeout, "replace a server partner that sends nothing for this long")
	flag.StringVar(&o.stream, "stream", "", "stream to join, e.g. live/KEY (required)")
	flag.StringVar(&o.token, "token", "", "join token (when the operator set plugin.tokenSecret)")
	flag.StringVar(&o.listen, "listen", ":0", "address partners connect to (port 0: any)")
	flag.StringVar(&o.advertise, "advertise", "", "address to tell partners, when -listen is not reachable as is")
	flag.StringVar(&o.httpAddr, "http", "127.0.0.1:8090", "local player endpoint: /stream.ts (MPEG-TS) and /stats (JSON)")
	flag.StringVar(&o.streamKey, "stream-key", "", "pin the stream's Ed25519 public key (hex; default: learnt from the server)")
	flag.IntVar(&o.uploadKbps, "upload-kbps", 0, "upload cap for partners in kbit/s (0: none)")
	flag.IntVar(&o.partners, "partners", partners.DefaultTarget, "target number of partners M")
	flag.DurationVar(&o.playoutDelay, "playout-delay", playback.DefaultPlayoutDelay, "target delay behind the server's live edge")
	flag.DurationVar(&o.statusEvery, "status-interval", 2*time.Second, "status line interval")
	flag.BoolVar(&o.quiet, "quiet", false, "no status line")
	flag.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.StringVar(&o.rtspAddr, "rtsp", "127.0.0.1:8555", "local RTSP server (rtsp://ADDR/STREAM); empty: off")
	flag.BoolVar(&o.open, "open", false, "open the player page in the system browser (xdg-open)")
	flag.StringVar(&o.rtcURL, "rtc", "", "speak WebRTC to peers through the plugin's signalling endpoint (ws://HOST:7071/rtc/signal); with -listen \"\" WebRTC only")
	flag.BoolVar(&o.rtcLoopback, "rtc-loopback", false, "WebRTC over loopback host candidates only (tests on one host)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	flag.IntVar(&o.procs, "procs", defaultProcs, "processors for the Go scheduler (GOMAXPROCS; 0: one per core; the GOMAXPROCS variable wins)")
	flag.Parse()
	if o.procs > 0 && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(o.procs)
	}
	code, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coop-peer:", err)
	}
	os.Exit(code)
}

func run(o options) (int, error) {
	if o.stream == "" {
		return 2, errors.New("-stream is required (e.g. -stream live/KEY)")
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return 2, fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 2, fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return 2, fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var key ed25519.PublicKey
	if o.streamKey != "" {
		b, err := hex.DecodeString(o.streamKey)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return 2, errors.New("-stream-key: want 64 hex digits (an Ed25519 public key)")
		}
		key = b
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	out := playout.New(log)
	go out.Run(ctx)
	view := newViewer(ctx, o.stream, o.rtspAddr, log)
	defer view.close()
	refused := make(chan error, 1)
	var rtc *rtcnode.Transport
	var node *tcpnode.Node
	id := wire.PeerID(mrand.Uint64() | 1)
	if o.rtcURL != "" {
		rtc = &rtcnode.Transport{URL: o.rtcURL, Stream: o.stream, Token: o.token, Peer: id,
			Options: rtcnode.Options{Loopback: o.rtcLoopback}, Log: log.With("component", "rtc"),
			Accept: func(c net.Conn) { node.HandOff(c, nil, nil) }}
	}
	node = &tcpnode.Node{
		Listen: o.listen, Advertise: o.advertise, Server: o.servers.list[0], Servers: o.servers.list[1:], Log: log,
		ServerIdleTimeout: o.serverTimeout,
		Config: engine.Config{
			ID: id, Stream: o.stream, Token: o.token, StreamKey: key, Partners: o.partners,
			UploadCap: float64(o.uploadKbps) * 1000 / 8, PlayoutDelay: o.playoutDelay,
			OnPlay:   func(seq uint64, layers [][]byte) { out.Play(seq, layers); view.play(seq, layers) },
			OnHeader: func(h []byte) { out.SetHeader(h); view.header(h) },
		},
		OnServer: func(addr string, err error) {
			var rej *tcpnode.RejectedError
			if !errors.As(err, &rej) {
				return
			}
			switch rej.Reason {
			case wire.RejectAuth, wire.RejectBanned, wire.RejectVersion:
				select {
				case refused <- fmt.Errorf("the server at %s refused to let us join %s: %w", addr, o.stream, err):
				default:
				}
			case wire.RejectNotFound:
				log.Warn("the server has no such stream (yet); retrying", "server", addr, "stream", o.stream)
			}
		},
	}
	if rtc != nil {
		node.Transport = rtc
	}
	if err := node.Start(); err != nil {
		return 1, err
	}
	defer node.Close()
	if rtc != nil {
		if err := rtc.Start(); err != nil {
			return 2, fmt.Errorf("-rtc: %w", err)
		}
		defer rtc.Close()
	}

	ln, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return 1, fmt.Errorf("-http: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /stream.ts", out)
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(snapshot(node, rtc, out, o.stream))
	})
	view.register(mux, ln.Addr().String())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	p2pListen := "none (WebRTC only)"
	if a := node.Addr(); a != nil {
		p2pListen = a.String()
	}
	log.Info("joining", "server", o.servers.String(), "stream", o.stream, "p2p_listen", p2pListen, "rtc", o.rtcURL,
		"play", "http://"+ln.Addr().String()+"/stream.ts")
	if o.open {
		view.open("http://" + ln.Addr().String() + "/")
	}

	tick := time.NewTicker(o.statusEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("leaving")
			return 0, nil
		case err := <-refused:
			return exitRefused, err
		case <-tick.C:
			if !o.quiet {
				fmt.Fprintln(os.Stderr, statusLine(snapshot(node, rtc, out, o.stream)))
			}
		}
	}
}

// Snapshot is what /stats returns.
type Snapshot struct {
	Stream string `json:"stream"`
	// State is "connecting" (no server), "waiting for stream" (connected,
	// nothing played lately) or "playing".
	State           string `json:"state"`
	Epoch           uint64 `json:"epoch"`
	Restarts        uint64 `json:"streamRestarts"`
	ServerConnected bool   `json:"serverConnected"`
	// Server is the address of the server partner now ("" when none);
	// ServerConnects counts the times a server admitted us (more than
	// one: reconnections and failovers), ServerRedirects the redirects
	// followed.
	Server          string        `json:"server"`
	ServerConnects  uint64        `json:"serverConnects"`
	ServerRedirects uint64        `json:"serverRedirects"`
	Partners        int           `json:"partners"`
	Layers          int           `json:"layers"`
	MaxLayers       int           `json:"maxLayers"`
	Started         bool          `json:"started"`
	StartupDelayMs  int64         `json:"startupDelayMs"`
	Due             uint64        `json:"due"`
	BaseOnTime      uint64        `json:"baseOnTime"`
	Continuity      float64       `json:"continuity"`
	Quality         float64       `json:"quality"`
	Offload         float64       `json:"offload"`
	FromServer      uint64        `json:"usefulFromServer"`
	FromPeers       uint64        `json:"usefulFromPeers"`
	MediaBytesOut   uint64        `json:"mediaBytesOut"`
	UploadRate      float64       `json:"uploadBytesPerSec"`
	LiveEdge        uint64        `json:"liveEdge"`
	BadData         uint64        `json:"badData"`
	Banned          uint64        `json:"banned"`
	Playout         playout.Stats `json:"playout"`
	// RecentPlays are the last segments played out (for latency
	// measurements against the origin's ingest times).
	RecentPlays []Play `json:"recentPlays"`
	// RTC is the WebRTC transport's figures (absent without -rtc).
	RTC *RTCStats `json:"rtc,omitempty"`
}

// RTCStats are the WebRTC transport's figures: bytes carried over data
// channels (all messages, both ways), open connections, sessions.
type RTCStats struct {
	BytesIn      uint64  `json:"bytesIn"`
	BytesOut     uint64  `json:"bytesOut"`
	Conns        int64   `json:"conns"`
	Dials        uint64  `json:"dials"`
	DialFailures uint64  `json:"dialFailures"`
	Accepted     uint64  `json:"accepted"`
	Oversized    uint64  `json:"oversized"`
	SetupMeanMs  float64 `json:"setupMeanMs"`
}

func rtcStats(t *rtcnode.Transport) *RTCStats {
	if t == nil {
		return nil
	}
	c := t.Counters()
	s := &RTCStats{BytesIn: c.BytesIn.Load(), BytesOut: c.BytesOut.Load(), Conns: c.Conns.Load(),
		Dials: c.Dials.Load(), DialFailures: c.DialFailures.Load(), Accepted: c.Accepted.Load(), Oversized: c.Oversized.Load()}
	if ok := s.Dials - s.DialFailures; ok > 0 && s.Dials >= s.DialFailures {
		s.SetupMeanMs = float64(c.SetupNanos.Load()) / float64(ok) / 1e6
	}
	return s
}

// Play is one segment reaching its playback deadline.
type Play struct {
	Seq      uint64 `json:"seq"`
	AtUnixMs int64  `json:"atUnixMs"`
	Layers   int    `json:"layers"`
}

func snapshot(n *tcpnode.Node, rtc *rtcnode.Transport, out *playout.Playout, stream string) Snapshot {
	s := Snapshot{Stream: stream, Playout: out.Stats(), Server: n.ServerAddr(), RTC: rtcStats(rtc),
		ServerConnects: n.Counters().ServerConnects.Load(), ServerRedirects: n.Counters().ServerRedirects.Load()}
	_ = n.Do(func(e *engine.Engine) {
		st := e.Stats()
		s.ServerConnected = e.HasServer()
		s.Partners = len(e.Partners())
		if s.ServerConnected {
			s.Partners-- // the server is counted apart
		}
		// Layers as the stream has them: a single-layer stream is 1/1.
		s.Layers, s.MaxLayers = e.Layers(), st.Layers
		if n := len(st.PlayedAt); n > 0 && st.PlayedAt[n-1].SegLayers > 0 {
			s.MaxLayers = st.PlayedAt[n-1].SegLayers
			s.Layers = min(s.Layers, s.MaxLayers)
		}
		s.Epoch, s.Restarts = e.Epoch(), st.Epochs
		s.State = "connecting"
		if s.ServerConnected {
			s.State = "waiting for stream"
			// Playing: a segment with its base layer was played out within
			// the last few segment durations.
			for i := len(st.PlayedAt) - 1; i >= 0 && i >= len(st.PlayedAt)-4; i-- {
				if r := st.PlayedAt[i]; r.Layers > 0 && time.Since(r.At) < 5*time.Second {
					s.State = "playing"
					break
				}
			}
		}
		s.Started, s.StartupDelayMs = st.Started, st.StartupDelay.Milliseconds()
		s.Due, s.BaseOnTime, s.Continuity, s.Quality = st.Due, st.BaseOnTime, st.Continuity(), st.Quality()
		s.Offload, s.FromServer, s.FromPeers = st.Offload(), st.UsefulFromServer, st.UsefulFromPeers
		s.MediaBytesOut, s.UploadRate = st.MediaBytesOut, e.UploadRate()
		s.LiveEdge, _ = e.LiveEdge()
		s.BadData, s.Banned = st.BadData, st.Banned
		for _, r := range st.PlayedAt[max(0, len(st.PlayedAt)-64):] {
			s.RecentPlays = append(s.RecentPlays, Play{Seq: r.Seq, AtUnixMs: r.At.UnixMilli(), Layers: r.Layers})
		}
	})
	return s
}

func statusLine(s Snapshot) string {
	return fmt.Sprintf("%s | %s | partners %d | layers %d/%d | continuity %.3f (%d/%d) | from peers %.0f%% | up %.0f kB/s | players %d",
		s.Stream, s.State, s.Partners, s.Layers, s.MaxLayers, s.Continuity, s.BaseOnTime, s.Due,
		100*s.Offload, s.UploadRate/1000, s.Playout.Clients)
}
