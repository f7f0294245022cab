package tcpnode

import (
	"crypto/ed25519"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// deadAddr is a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// redirector answers every Hello with a redirect to *to and counts the
// connections it took.
func redirector(t *testing.T, to *atomic.Pointer[string]) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := ReadHello(nc); err != nil {
					return
				}
				_, _ = nc.Write(wire.Marshal(&wire.Reject{Reason: wire.RejectRedirect, Addr: *to.Load()}))
			}()
		}
	}()
	return ln.Addr().String(), &n
}

func startPeer(t *testing.T, pub ed25519.PublicKey, first string, more ...string) *Node {
	t.Helper()
	p := &Node{Config: engine.Config{Stream: stream, Token: "good", StreamKey: pub}, Server: first, Servers: more,
		ServerRetry: 100 * time.Millisecond}
	require.NoError(t, p.Start())
	t.Cleanup(p.Close)
	return p
}

// waitServer waits until p is connected to the server at addr.
func waitServer(t *testing.T, p *Node, addr string) {
	t.Helper()
	require.Eventually(t, func() bool {
		has := false
		_ = p.Do(func(e *engine.Engine) { has = e.HasServer() })
		return has && p.ServerAddr() == addr
	}, 20*time.Second, 20*time.Millisecond, "connected to the server at %s (now: %q)", addr, p.ServerAddr())
}

func TestADeadFirstServerAddressFallsThroughToTheNext(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	srv := startServer(t, priv)
	p := startPeer(t, pub, deadAddr(t), srv.Addr().String())
	waitServer(t, p, srv.Addr().String())
	require.Equal(t, uint64(1), p.Counters().ServerConnects.Load())
}

func TestALostServerIsReplacedByTheNextAddress(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	a, b := startServer(t, priv), startServer(t, priv)
	p := startPeer(t, pub, a.Addr().String(), b.Addr().String())
	waitServer(t, p, a.Addr().String())
	a.Close()
	waitServer(t, p, b.Addr().String())
	require.Equal(t, uint64(2), p.Counters().ServerConnects.Load())
}

func TestARedirectIsFollowed(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	srv := startServer(t, priv)
	var to atomic.Pointer[string]
	target := srv.Addr().String()
	to.Store(&target)
	redir, _ := redirector(t, &to)
	p := startPeer(t, pub, redir)
	waitServer(t, p, target)
	require.Equal(t, uint64(1), p.Counters().ServerRedirects.Load())
}

func TestRedirectLoopsAreBounded(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	var toA, toB atomic.Pointer[string]
	a, nA := redirector(t, &toA)
	b, nB := redirector(t, &toB)
	toA.Store(&b) // a sends to b, b sends to a
	toB.Store(&a)
	p := &Node{Config: engine.Config{Stream: stream, StreamKey: pub}, Server: a, MaxRedirects: 3,
		ServerRetry: time.Hour, ServerRetryMax: time.Hour}
	require.NoError(t, p.Start())
	t.Cleanup(p.Close)
	// 1 attempt + 3 redirects followed, then the 4th redirect counts as
	// a failed round and the hour-long backoff starts.
	require.Eventually(t, func() bool { return nA.Load()+nB.Load() >= 4 }, 20*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		var notBefore time.Time
		_ = p.Do(func(*engine.Engine) { notBefore = p.srv.notBefore })
		return time.Until(notBefore) > 30*time.Minute
	}, 20*time.Second, 10*time.Millisecond, "the loop ends in the backoff")
	require.Equal(t, int64(4), nA.Load()+nB.Load(), "no attempt past the bound")
	require.Equal(t, uint64(3), p.Counters().ServerRedirects.Load())
}

// silentServer completes the handshake as a server partner and then
// sends nothing (a node that hangs, or a network path that went black).
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				r, _, err := ReadHello(nc)
				if err != nil {
					return
				}
				h := &wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: wire.RoleServer,
					Stream: stream, Peer: 99, Features: wire.FeatureManifest | wire.FeatureLayers}
				if _, err := nc.Write(wire.Marshal(h)); err != nil {
					return
				}
				for { // read and drop, answer nothing
					if _, _, err := r.Read(); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestASilentServerIsReplacedAfterServerIdleTimeout(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	silent := silentServer(t)
	srv := startServer(t, priv)
	p := &Node{Config: engine.Config{Stream: stream, Token: "good", StreamKey: pub}, Server: silent,
		Servers: []string{srv.Addr().String()}, ServerRetry: 100 * time.Millisecond, ServerIdleTimeout: 300 * time.Millisecond}
	require.NoError(t, p.Start())
	t.Cleanup(p.Close)
	waitServer(t, p, silent)
	// The engine alone drops a partner silent for 12 s (checked at its
	// pings); ServerIdleTimeout replaces the server well before.
	require.Eventually(t, func() bool { return p.ServerAddr() == srv.Addr().String() }, 6*time.Second, 20*time.Millisecond,
		"the silent server replaced within 6 s (ServerIdleTimeout 300 ms; the engine's own timeout is 12 s)")
}
