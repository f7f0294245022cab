package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// chaosAttacks lists the attacks of the hostile-load harness, one per
// class of issue 12: partial readers, idle/half-open/slowloris connections
// on every port, stalled and flooding peers, handshake-slot holders,
// accusation floods and sybils, frame-size bombs, garbage. Each attack
// uses one attacking host's worth of connections, bounded in count and
// time, on loopback.
func chaosAttacks() []attack {
	return []attack{
		{"rtsp partial-track readers", attackPartialReaders},
		{"rtsp idle connections (200)", func(ctx context.Context, env *chaosEnv) attackReport {
			return holdConns(ctx, env.o.rtsp, 200, 100, nil, nil)
		}},
		{"rtsp slowloris (100)", func(ctx context.Context, env *chaosEnv) attackReport {
			return holdConns(ctx, env.o.rtsp, 100, 100, []byte("OPTIONS rtsp://"+env.o.rtsp+"/ RTSP/1.0\r\n"), []byte("X-Slow: 1\r\n"))
		}},
		{"http slowloris (100)", func(ctx context.Context, env *chaosEnv) attackReport {
			return holdConns(ctx, env.o.httpAddr, 100, 100, []byte("GET / HTTP/1.1\r\nHost: x\r\n"), []byte("X-Slow: 1\r\n"))
		}},
		{"http idle keep-alive (100)", func(ctx context.Context, env *chaosEnv) attackReport {
			return holdConns(ctx, env.o.httpAddr, 100, 100, []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), nil)
		}},
		{"rtmp idle and garbage (100)", func(ctx context.Context, env *chaosEnv) attackReport {
			garbage := make([]byte, 4096)
			_, _ = rand.Read(garbage)
			a := holdConns(ctx, env.o.rtmp, 50, 100, nil, nil)
			b := holdConns(ctx, env.o.rtmp, 50, 100, garbage, nil)
			a.Conns += b.Conns
			a.ClosedIn2xTimeout += b.ClosedIn2xTimeout
			a.CloseMaxS = max(a.CloseMaxS, b.CloseMaxS)
			return a
		}},
		{"peer no-Hello holders (50/s for 12 s) + a joiner", attackHandshakeHolders},
		{"peer garbage (100)", func(ctx context.Context, env *chaosEnv) attackReport {
			garbage := make([]byte, 4096)
			_, _ = rand.Read(garbage)
			return holdConns(ctx, env.peerAddr, 100, 100, garbage, nil)
		}},
		{"peer stalled reader (tiny window, never reads, reconnects)", attackStalledReader},
		{"peer request flood (1, sustained at the live edge)", attackSustainedFlood},
		{"peer accuse: sybils + random-id flood", attackAccuse},
		{"peer frame-size bombs (150 x 8 MiB declared)", attackFrameBombs},
	}
}

// holdConns opens n connections to addr at rate per second, writes first
// (if any), then trickles trickle once a second, and records when the
// server closes each one. Connections still open when ctx ends are closed.
func holdConns(ctx context.Context, addr string, n, rate int, first, trickle []byte) attackReport {
	var mu sync.Mutex
	var opened, closed []time.Time
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := 0; i < n; i++ {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		if ctx.Err() != nil {
			break
		}
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			continue
		}
		mu.Lock()
		idx := len(opened)
		opened = append(opened, time.Now())
		closed = append(closed, time.Time{})
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			if first != nil {
				_, _ = c.Write(first)
			}
			gone := make(chan struct{})
			go func() {
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						mu.Lock()
						if ctx.Err() == nil {
							closed[idx] = time.Now()
						}
						mu.Unlock()
						close(gone)
						return
					}
				}
			}()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					c.Close()
					<-gone
					return
				case <-gone:
					return
				case <-t.C:
					if trickle != nil {
						_, _ = c.Write(trickle)
					}
				}
			}
		}()
	}
	<-ctx.Done()
	wg.Wait()
	rep := attackReport{Conns: len(opened)}
	for i := range opened {
		if closed[i].IsZero() {
			continue
		}
		d := closed[i].Sub(opened[i]).Seconds()
		rep.CloseMaxS = max(rep.CloseMaxS, d)
		if d <= 2*chaosTimeout.Seconds() {
			rep.ClosedIn2xTimeout++
		}
	}
	return rep
}

// attackPartialReaders runs video-only and audio-only RTSP readers (TCP)
// beside the canaries: legitimate clients that once ended the stream.
func attackPartialReaders(ctx context.Context, env *chaosEnv) attackReport {
	var mu sync.Mutex
	var notes []string
	var wg sync.WaitGroup
	for _, media := range []string{"video", "audio", "video", "audio"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, _ := ctx.Deadline()
			r := playArgs(ctx, env.o.rtspURL("chaos"), time.Until(d)-time.Second, "-allowed_media_types", media, "-rtsp_transport", "tcp")
			mu.Lock()
			notes = append(notes, fmt.Sprintf("%s-only: %d frames %d errors", media, r.frames, len(r.errors)))
			mu.Unlock()
		}()
	}
	wg.Wait()
	return attackReport{Notes: strings.Join(notes, "; ")}
}

// rawPeer is a hand-driven peer connection (the attacker's side).
type rawPeer struct {
	c       net.Conn
	r       *wire.Reader
	welcome *wire.Welcome
}

// dialRawPeer handshakes with the plugin as a peer; rcvbuf > 0 shrinks its
// receive buffer (a peer that will not read).
func dialRawPeer(addr, stream string, rcvbuf int) (*rawPeer, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	id, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	hello := &wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Features: wire.FeatureManifest | wire.FeatureLayers,
		Role: wire.RolePeer, Stream: stream, Peer: wire.PeerID(id.Uint64() + 1), ListenAddr: "127.0.0.1:9"}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(wire.Marshal(hello)); err != nil {
		c.Close()
		return nil, err
	}
	rp := &rawPeer{c: c, r: wire.NewReader(bufio.NewReader(c))}
	for i := 0; i < 8 && rp.welcome == nil; i++ {
		m, _, err := rp.r.Read()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("handshake: %w", err)
		}
		switch m := m.(type) {
		case *wire.Welcome:
			rp.welcome = m
		case *wire.Reject:
			c.Close()
			return nil, fmt.Errorf("rejected: reason %d", m.Reason)
		}
	}
	_ = c.SetDeadline(time.Time{})
	if rp.welcome == nil {
		c.Close()
		return nil, fmt.Errorf("no Welcome")
	}
	return rp, nil
}

func (p *rawPeer) send(ms ...wire.Message) error {
	var b []byte
	for _, m := range ms {
		b = wire.AppendFrame(b, m)
	}
	_ = p.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, err := p.c.Write(b)
	return err
}

// discard reads and drops everything until the connection ends.
func (p *rawPeer) discard() {
	for {
		if _, _, err := p.r.Read(); err != nil {
			return
		}
	}
}

// requests asks for the last n segments before the live edge, all layers.
func requests(edge uint64, n int) []wire.Message {
	var ms []wire.Message
	for s := edge - uint64(min(int(edge), n)); s <= edge; s++ {
		for l := uint8(0); l < 3; l++ {
			ms = append(ms, &wire.Request{Seq: s, Layer: l})
		}
	}
	return ms
}

// attackAccuse: two sybils accuse the canaries (whose ids the tracker hands
// out), and a flood of accusations of random ids.
func attackAccuse(ctx context.Context, env *chaosEnv) attackReport {
	var sybils []*rawPeer
	for range 2 {
		p, err := dialRawPeer(env.peerAddr, env.stream, 0)
		if err != nil {
			return attackReport{Notes: "dial: " + err.Error()}
		}
		sybils = append(sybils, p)
	}
	defer func() {
		for _, p := range sybils {
			p.c.Close()
		}
	}()
	// Learn the canaries' ids from the tracker.
	ids := map[wire.PeerID]bool{}
	_ = sybils[0].send(&wire.GetCandidates{Max: 32})
	_ = sybils[0].c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < 200; i++ {
		m, _, err := sybils[0].r.Read()
		if err != nil {
			break
		}
		if cs, ok := m.(*wire.Candidates); ok {
			for _, c := range cs.List {
				ids[c.Peer] = true
			}
			break
		}
	}
	_ = sybils[0].c.SetReadDeadline(time.Time{})
	for _, p := range sybils {
		go p.discard()
	}
	sent := 0
	for ctx.Err() == nil && sent < 2_000_000 {
		var batch []wire.Message
		for id := range ids {
			batch = append(batch, &wire.Accuse{Peer: id, Reason: "bad hash"})
		}
		for range 200 {
			batch = append(batch, &wire.Accuse{Peer: wire.PeerID(mrand.Uint64()), Reason: "bad hash"})
		}
		for _, p := range sybils {
			if p.send(batch...) == nil {
				sent += len(batch)
			}
		}
		time.Sleep(10 * time.Millisecond) // pacing of the flood (~40 k/s), not synchronisation
	}
	return attackReport{Notes: fmt.Sprintf("%d canary ids accused; %d accusations sent", len(ids), sent)}
}

// attackFrameBombs: handshaken connections that each declare an 8 MiB
// frame and then trickle its bytes.
func attackFrameBombs(ctx context.Context, env *chaosEnv) attackReport {
	var mu sync.Mutex
	var peers []*rawPeer
	var wg sync.WaitGroup
	for range 150 {
		if ctx.Err() != nil {
			break
		}
		p, err := dialRawPeer(env.peerAddr, env.stream, 0)
		if err != nil {
			continue
		}
		mu.Lock()
		peers = append(peers, p)
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.c.Close()
			go p.discard()
			hdr := []byte{0x00, 0x7f, 0xff, 0xff, byte(wire.TypeData)}
			if _, err := p.c.Write(hdr); err != nil {
				return
			}
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if _, err := p.c.Write(make([]byte, 64)); err != nil {
						return
					}
				}
			}
		}()
	}
	<-ctx.Done()
	wg.Wait()
	return attackReport{Notes: fmt.Sprintf("%d connections declared 8 MiB frames", len(peers))}
}

// attackHandshakeHolders: connections that never send a Hello hold the
// pending-handshake slots, while a real coop-peer tries to join.
func attackHandshakeHolders(ctx context.Context, env *chaosEnv) attackReport {
	var rep attackReport
	done := make(chan struct{})
	go func() {
		defer close(done)
		rep = holdConns(ctx, env.peerAddr, 600, 50, nil, nil)
	}()
	// Let the holders fill the slots, then join.
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
	joined := "did not play within the attack"
	start := time.Now()
	p := startPeer(env.t, env.peerAddr, env.stream)
	for ctx.Err() == nil {
		if p.playing(1) {
			joined = fmt.Sprintf("a new coop-peer played after %.1f s", time.Since(start).Seconds())
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	<-done
	rep.Notes = joined
	return rep
}

// playArgs is play with extra input options before -i.
func playArgs(ctx context.Context, url string, d time.Duration, inputOpts ...string) playResult {
	return playWith(ctx, url, d, inputOpts)
}
