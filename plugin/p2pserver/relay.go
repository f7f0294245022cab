package p2pserver

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/tcpnode"
	"github.com/coopstreaming/coop/peerproto/wire"
	"github.com/coopstreaming/coop/plugin/jointoken"
	"github.com/coopstreaming/coop/plugin/pluginapi"
)

// This file is the edge's relay (pluginapi.Relayer): a peer of the
// upstream node's swarm whose verified segments the plugin re-serves,
// signed manifests unchanged, in its own swarm of the same name.

// Relay defaults.
const (
	// relayUploadCap is the upload the relay declares (and may spend)
	// when the plugin has no upload cap: high, so the upstream's server
	// partner picks it as a seed of fresh segments (1 Gbit/s).
	relayUploadCap = 125_000_000
	// relayQueue bounds the segments and headers waiting between the
	// relay's engine and its re-serving loop; a full queue drops (counted).
	relayQueue = 64
	// relayEmitQueue bounds the events waiting for the host; a slow host
	// loses events (counted), never the relay's swarm.
	relayEmitQueue = 32
	// relayHold bounds the segments held back behind a missing one: the
	// server partner takes segments in order only, so a segment completed
	// before its predecessor waits for it at most relayHold segments or
	// one segment duration, then the predecessor is skipped.
	relayHold = 4
	// relayTokenValidity is the life of the join token a relay mints
	// with the plugin's token secret.
	relayTokenValidity = 365 * 24 * time.Hour
)

// relayRun is one Relay call, registered so a newer call for the same
// stream (the host restarted it) or Close can end it.
type relayRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// relayItem is what the relay's engine hands the re-serving loop.
type relayItem struct {
	header []byte
	seq    uint64
	raw    []byte
	layers [][]byte
}

type pendingSeg struct {
	relayItem
	man *manifest.Manifest
	at  time.Time
}

// relayer runs one relay; its fields belong to the run loop's goroutine
// except the counters.
type relayer struct {
	s    *Service
	req  pluginapi.RelayRequest
	log  *slog.Logger
	peer *tcpnode.Node
	in   chan relayItem
	out  chan pluginapi.RelayEvent
	sw   *swarm

	header  []byte
	started bool
	epoch   uint64
	order   reorder

	// dropped counts items and events lost to full queues, late the
	// segments that completed after a successor was served.
	dropped, late atomic.Uint64
	// warn rate-limits the warnings the upstream can trigger.
	warn rate.Sometimes
}

var _ pluginapi.Relayer = (*Service)(nil)

// Relay implements pluginapi.Relayer.
func (s *Service) Relay(ctx context.Context, req pluginapi.RelayRequest, emit func(pluginapi.RelayEvent) error) error {
	if err := req.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.key == nil || s.ln == nil {
		s.mu.Unlock()
		return errors.New("relay before configure")
	}
	if sw := s.streams[req.Stream]; sw != nil && sw.relay == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: stream %s is published here, it cannot be relayed too", pluginapi.ErrInvalid, req.Stream)
	}
	if s.relays == nil {
		s.relays = make(map[string]*relayRun)
	}
	old := s.relays[req.Stream]
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	run := &relayRun{cancel: cancel, done: make(chan struct{})}
	s.relays[req.Stream] = run
	st := s.settings
	listen := net.JoinHostPort(hostOf(s.ln.Addr().String()), "0")
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.relays[req.Stream] == run {
			delete(s.relays, req.Stream)
		}
		s.mu.Unlock()
		close(run.done)
	}()
	if old != nil { // a newer call replaces the old: its swarm goes first
		old.cancel()
		select {
		case <-old.done:
		case <-ctx.Done():
			return nil
		}
	}
	token := req.Token
	if token == "" && st.TokenSecret != "" {
		token = jointoken.Mint([]byte(st.TokenSecret), req.Stream, time.Now().Add(relayTokenValidity))
	}
	upCap := float64(st.UploadCap)
	if upCap <= 0 {
		upCap = relayUploadCap
	}
	r := &relayer{s: s, req: req, log: s.Log.With("stream", req.Stream, "upstream", req.Upstream),
		in: make(chan relayItem, relayQueue), out: make(chan pluginapi.RelayEvent, relayEmitQueue),
		warn: rate.Sometimes{Interval: 10 * time.Second}}
	r.peer = &tcpnode.Node{
		Listen: listen, Server: req.Upstream, Log: r.log.With("component", "relay"),
		Config: engine.Config{
			Stream: req.Stream, Token: token, StreamKey: ed25519.PublicKey(slices.Clone(req.StreamKey)),
			Partners: st.Partners, UploadCap: upCap, DisableQoS: true,
			OnHeader: func(h []byte) { r.offer(relayItem{header: slices.Clone(h)}) },
			OnSegment: func(seq uint64, raw []byte, layers [][]byte) {
				r.offer(relayItem{seq: seq, raw: raw, layers: layers})
			},
		},
		OnAdmitError: func(remote string, err error) {
			// Refusals that stop a relay (a bad token, a ban, another
			// version, no such stream); a full partner is routine.
			var rej *tcpnode.RejectedError
			if errors.As(err, &rej) && rej.Reason != wire.RejectFull {
				r.warn.Do(func() {
					r.log.Warn("the relay was refused (logged at most once per 10 s)", "remote", remote, "err", err)
				})
			}
		},
	}
	if err := r.peer.Start(); err != nil {
		return fmt.Errorf("relay %s: %w", req.Stream, err)
	}
	r.log.Info("relaying the upstream's swarm", "listen", r.peer.Addr().String())
	err := r.run(ctx, emit)
	r.close()
	r.log.Info("relay ended", "err", err, "dropped", r.dropped.Load(), "late", r.late.Load())
	return err
}

// hostOf is the host part of a listen address ("" when it has none).
func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return host
}

// offer runs on the relay engine's goroutine: it never blocks.
func (r *relayer) offer(it relayItem) {
	select {
	case r.in <- it:
	default:
		r.dropped.Add(1)
	}
}

// emitEvent queues an event for the host; it never blocks.
func (r *relayer) emitEvent(ev pluginapi.RelayEvent) {
	select {
	case r.out <- ev:
	default:
		r.dropped.Add(1)
	}
}

func (r *relayer) run(ctx context.Context, emit func(pluginapi.RelayEvent) error) error {
	errc := make(chan error, 1)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-r.out:
				if err := emit(ev); err != nil {
					errc <- err
					return
				}
			}
		}
	}()
	defer func() { <-sent }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return fmt.Errorf("relay %s: to the host: %w", r.req.Stream, err)
		case it := <-r.in:
			if err := r.handle(it, time.Now()); err != nil {
				return err
			}
		case now := <-tick.C:
			if err := r.flushStale(now); err != nil {
				return err
			}
		}
	}
}

func (r *relayer) handle(it relayItem, now time.Time) error {
	if it.header != nil {
		r.header = it.header
		if r.sw != nil {
			_ = r.sw.node.Do(func(e *engine.Engine) { e.SetHeader(it.header) })
		}
		r.emitEvent(pluginapi.RelayEvent{Epoch: r.epoch, Header: it.header})
		return nil
	}
	// The engine verified the manifest with the stream key; it is decoded
	// here for its epoch, duration and flags.
	man, _, err := manifest.Decode(it.raw)
	if err != nil {
		return nil
	}
	switch {
	case !r.started:
		r.started, r.epoch = true, man.Epoch
		r.order.reset(it.seq)
	case man.Epoch != r.epoch: // the upstream restarted the stream
		r.epoch = man.Epoch
		r.order.reset(it.seq)
		if r.sw != nil {
			r.sw.epoch.Store(man.Epoch)
			h := r.header
			_ = r.sw.node.Do(func(e *engine.Engine) { e.SetHeader(h); e.Restart(man.Epoch) })
		}
		r.log.Info("the upstream restarted the stream", "epoch", man.Epoch)
		if r.header != nil {
			r.emitEvent(pluginapi.RelayEvent{Epoch: r.epoch, Header: r.header})
		}
	}
	ready, late := r.order.add(pendingSeg{relayItem: it, man: man, at: now})
	if late {
		r.late.Add(1)
	}
	if err := r.serveAll(ready); err != nil {
		return err
	}
	return r.serveAll(r.order.due(now))
}

func (r *relayer) flushStale(now time.Time) error { return r.serveAll(r.order.due(now)) }

func (r *relayer) serveAll(list []pendingSeg) error {
	for _, p := range list {
		if err := r.serve(p); err != nil {
			return err
		}
	}
	return nil
}

// reorder puts completed segments back in sequence order: the server
// partner takes segments in order only, and a segment may complete
// before its predecessor. A missing segment is waited for until relayHold
// successors, or one segment duration, wait behind it; then it is skipped.
type reorder struct {
	next    uint64
	pending map[uint64]pendingSeg
}

// reset starts again at seq (the first segment, or a new epoch's).
func (o *reorder) reset(seq uint64) {
	o.next = seq
	o.pending = make(map[uint64]pendingSeg)
}

// add takes a segment and returns those now ready, in order; late tells
// that the segment came after a successor was released (it is dropped).
func (o *reorder) add(p pendingSeg) (ready []pendingSeg, late bool) {
	if p.seq < o.next {
		return nil, true
	}
	if _, dup := o.pending[p.seq]; !dup && len(o.pending) < 4*relayHold {
		o.pending[p.seq] = p
	}
	return o.release(nil), false
}

func (o *reorder) release(ready []pendingSeg) []pendingSeg {
	for {
		p, ok := o.pending[o.next]
		if !ok {
			return ready
		}
		delete(o.pending, o.next)
		o.next++
		ready = append(ready, p)
	}
}

// due skips the missing segments before the first held one when they
// have been waited for long enough, and returns what that releases.
func (o *reorder) due(now time.Time) []pendingSeg {
	var ready []pendingSeg
	for len(o.pending) > 0 {
		first := uint64(math.MaxUint64)
		var oldest time.Time
		var wait time.Duration
		for seq, p := range o.pending {
			first = min(first, seq)
			if oldest.IsZero() || p.at.Before(oldest) {
				oldest, wait = p.at, time.Duration(max(p.man.DurationMs, 100))*time.Millisecond
			}
		}
		if len(o.pending) < relayHold && now.Sub(oldest) < wait {
			break
		}
		o.next = first // every held segment is after next
		ready = o.release(ready)
	}
	return ready
}

// serve adds one segment to the relayed swarm (creating it at the first)
// and hands it to the host.
func (r *relayer) serve(p pendingSeg) error {
	if r.sw == nil {
		if err := r.openSwarm(p); err != nil {
			return err
		}
	}
	var addErr error
	if err := r.sw.node.Do(func(e *engine.Engine) { addErr = e.AddSegment(p.seq, p.raw, p.layers) }); err != nil {
		return fmt.Errorf("relay %s: %w", r.req.Stream, err)
	}
	if addErr != nil {
		r.warn.Do(func() {
			r.log.Warn("relayed segment not served (logged at most once per 10 s)", "seq", p.seq, "err", addErr)
		})
		return nil
	}
	r.sw.segments.Add(1)
	r.emitEvent(pluginapi.RelayEvent{Epoch: r.epoch, Segment: &pluginapi.Segment{
		Stream: r.req.Stream, Seq: p.seq, DurationMs: p.man.DurationMs, RandomAccess: p.man.Flags&1 != 0, Chunks: p.layers,
	}})
	return nil
}

// openSwarm starts the relayed swarm with the upstream's key, epoch and
// layer count (from the relay's Welcome) at its first segment.
func (r *relayer) openSwarm(p pendingSeg) error {
	layers := len(p.layers)
	_ = r.peer.Do(func(e *engine.Engine) { layers = max(layers, e.Stats().Layers) })
	info := pluginapi.StreamInfo{
		Name: r.req.Stream, Header: r.header, Layers: min(layers, pluginapi.MaxLayers), Epoch: r.epoch,
		SegmentDurationMs: min(max(p.man.DurationMs, 1), 60000),
	}
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if sw := s.streams[r.req.Stream]; sw != nil {
		if sw.relay == nil {
			return fmt.Errorf("%w: stream %s was published here meanwhile", pluginapi.ErrInvalid, r.req.Stream)
		}
		delete(s.streams, r.req.Stream) // a relay that ended badly left it
		go sw.close()
	}
	sw, err := s.newSwarm(info, presentKey(r.req.StreamKey))
	if err != nil {
		return err
	}
	sw.relay, sw.upstream, sw.streamKey = r.peer, r.req.Upstream, slices.Clone(r.req.StreamKey)
	s.streams[r.req.Stream] = sw
	r.sw = sw
	r.log.Info("relayed swarm open", "epoch", r.epoch, "layers", info.Layers, "segment_ms", info.SegmentDurationMs)
	return nil
}

// close ends the relayed swarm and the relay peer.
func (r *relayer) close() {
	if r.sw != nil {
		s := r.s
		s.mu.Lock()
		if s.streams[r.req.Stream] == r.sw {
			delete(s.streams, r.req.Stream)
		}
		s.mu.Unlock()
		r.sw.close()
	}
	r.peer.Close()
}

// presentKey is a private key whose public half is pub and whose seed is
// zero. The engine's server partner hands its peers the key of
// Config.SignKey.Public() in its Welcome and signs nothing itself; a
// relayed swarm never signs (its manifests are the upstream's), so it
// gets this key, which presents the upstream's public key and whose
// signatures would verify under no key anyone trusts.
// TODO(engine): a server-side Config field for the key to present would
// make this unnecessary.
func presentKey(pub []byte) ed25519.PrivateKey {
	k := make([]byte, ed25519.PrivateKeySize)
	copy(k[ed25519.SeedSize:], pub)
	return k
}
