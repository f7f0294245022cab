package tcpnode

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// tcpPair is a connected loopback pair (client, server side).
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	b := <-acc
	require.NotNil(t, b)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// The delay line keeps the order of frames, delivers none before its
// write time + delay, and delays a burst once, not once per frame.
func TestDelayLineKeepsOrderAndNeverDeliversEarly(t *testing.T) {
	const (
		delay  = 60 * time.Millisecond
		frames = 300
		size   = 16
	)
	a, b := tcpPair(t)
	dc := newDelayConn(a, delay, 0)
	t.Cleanup(func() { dc.Close() })

	written := make([]time.Time, frames)
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		buf := make([]byte, size)
		for i := range frames {
			binary.BigEndian.PutUint32(buf, uint32(i))
			written[i] = time.Now() // before Write: the stamp is later
			if _, err := dc.Write(buf); err != nil {
				return
			}
			// A burst of 100, then frames 2 ms apart (pacing of the
			// load, not synchronisation).
			if i >= 100 {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}()
	arrived := make([]time.Time, frames)
	buf := make([]byte, size)
	_ = b.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := range frames {
		_, err := io.ReadFull(b, buf)
		require.NoError(t, err)
		arrived[i] = time.Now()
		require.Equal(t, uint32(i), binary.BigEndian.Uint32(buf), "frames in order")
	}
	<-wrote
	var worst time.Duration
	for i := range frames {
		got := arrived[i].Sub(written[i])
		require.GreaterOrEqual(t, got, delay, "frame %d arrived before its delay", i)
		worst = max(worst, got)
	}
	burst := arrived[99].Sub(written[0])
	t.Logf("delay %v: every frame after ≥ %v, the slowest after %v; the burst of 100 took %v", delay, delay, worst, burst)
	// One sleep per frame would take 100 × 60 ms = 6 s; a delay line
	// about one delay. A generous bound: half of the serial time.
	require.Less(t, burst, 50*delay, "a burst is delayed once, not once per frame")
}

// A receiver that stops reading fills the line up to its bound; then
// Write waits until the write deadline and fails as a stalled socket
// does (a timeout), so the node's stall handling applies. Close then
// ends the releaser although the receiver never reads.
func TestDelayLineIsBoundedAndAStalledReceiverTimesOut(t *testing.T) {
	const limit = 64 << 10
	a, b := net.Pipe() // b never reads: every write to a blocks
	t.Cleanup(func() { a.Close(); b.Close() })
	dc := newDelayConn(a, 5*time.Millisecond, limit)
	require.NoError(t, dc.SetWriteDeadline(time.Now().Add(500*time.Millisecond)))
	frame := make([]byte, 1024)
	var err error
	written := 0
	for written < 10*limit {
		if _, err = dc.Write(frame); err != nil {
			break
		}
		written += len(frame)
		bytes, _ := dc.queued()
		require.LessOrEqual(t, bytes, limit, "the line holds at most its bound")
	}
	require.Error(t, err, "writes stop when the line is full")
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "a full line is a write timeout: %v", err)
	bytes, n := dc.queued()
	t.Logf("accepted %d bytes before the timeout; %d bytes in %d frames in the line", written, bytes, n)
	require.LessOrEqual(t, written, limit+len(frame), "nothing beyond the bound was taken (one frame is on the wire)")

	require.NoError(t, dc.Close())
	select {
	case <-dc.released:
	case <-time.After(20 * time.Second):
		t.Fatal("the releaser did not end after Close with a stalled receiver")
	}
	_, err = dc.Write(frame)
	require.ErrorIs(t, err, net.ErrClosed)
}

// What the line holds when the connection closes (a goodbye, a Reject)
// still arrives, after its delay, and then the other side sees EOF.
func TestDelayLineDeliversWhatItHoldsOnClose(t *testing.T) {
	const delay = 80 * time.Millisecond
	a, b := tcpPair(t)
	dc := newDelayConn(a, delay, 0)
	start := time.Now()
	_, err := dc.Write([]byte("goodbye"))
	require.NoError(t, err)
	require.NoError(t, dc.Close())
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(b)
	require.NoError(t, err)
	require.Equal(t, "goodbye", string(got))
	require.GreaterOrEqual(t, time.Since(start), delay, "not before the delay")
}

func TestParseNetDelay(t *testing.T) {
	d, err := ParseNetDelay([]byte(`{"defaultMs": 3, "oneWayMs": {"127.0.0.1:1": {"127.0.0.1:2": 12.5}}}`))
	require.NoError(t, err)
	require.Equal(t, 12500*time.Microsecond, d.Between("127.0.0.1:1", "127.0.0.1:2"))
	require.Equal(t, 3*time.Millisecond, d.Between("127.0.0.1:2", "127.0.0.1:1"), "one-way: the reverse pair takes the default")
	b, err := d.Marshal()
	require.NoError(t, err)
	back, err := ParseNetDelay(b)
	require.NoError(t, err)
	require.Equal(t, d, back)

	for name, bad := range map[string]string{
		"not json":      `{"oneWayMs": `,
		"negative":      `{"oneWayMs": {"127.0.0.1:1": {"127.0.0.1:2": -1}}}`,
		"too long":      `{"oneWayMs": {"127.0.0.1:1": {"127.0.0.1:2": 1e9}}}`,
		"bad default":   `{"defaultMs": -2}`,
		"not host:port": `{"oneWayMs": {"peer-one": {"127.0.0.1:2": 1}}}`,
		"bad remote":    `{"oneWayMs": {"127.0.0.1:1": {"x": 1}}}`,
	} {
		_, err := ParseNetDelay([]byte(bad))
		require.Error(t, err, name)
	}
	_, err = LoadNetDelay(filepath.Join(t.TempDir(), "missing.json"))
	require.Error(t, err)
	big := filepath.Join(t.TempDir(), "big.json")
	require.NoError(t, os.WriteFile(big, make([]byte, maxNetDelayFile+1), 0o644))
	_, err = LoadNetDelay(big)
	require.ErrorContains(t, err, "larger than")
}

// loopbackAddr returns a loopback address whose port was free.
func loopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// Two nodes given a delay table (the server through $COOP_NETDELAY_FILE,
// as the plugin process gets it) see the round trip: the Hello exchange
// takes at least both one-way delays, and the peer plays.
func TestNodesOverTheDelayShimSeeTheRoundTrip(t *testing.T) {
	const d = 150 * time.Millisecond
	srvAddr, peerAddr := loopbackAddr(t), loopbackAddr(t)
	table := &NetDelay{OneWay: map[string]map[string]time.Duration{
		srvAddr: {peerAddr: d}, peerAddr: {srvAddr: d},
	}}
	raw, err := table.Marshal()
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "delays.json")
	require.NoError(t, os.WriteFile(file, raw, 0o644))
	t.Setenv(EnvNetDelayFile, file)

	pub, priv, _ := ed25519.GenerateKey(nil)
	srv := &Node{Listen: srvAddr, HandshakeTimeout: time.Second, Config: engine.Config{
		Role: wire.RoleServer, ID: 1, Stream: stream, SegmentDuration: 500 * time.Millisecond, SignKey: priv,
	}}
	require.NoError(t, srv.Start())
	t.Cleanup(srv.Close)
	require.NotNil(t, srv.NetDelay, "the server took the table from the environment")
	stop := make(chan struct{})
	defer close(stop)
	go produce(t, srv, priv, stop)

	// A short handshake timeout: the handshake's deadline must not
	// outlive the handshake on the delayed connection.
	peer := &Node{Listen: peerAddr, NetDelay: table, HandshakeTimeout: time.Second, Config: engine.Config{
		Stream: stream, StreamKey: pub, Partners: 1, PlayoutDelay: 3 * time.Second,
	}}
	require.NoError(t, peer.Start())
	t.Cleanup(peer.Close)
	start := time.Now()
	peer.Connect(srvAddr)
	require.Eventually(t, func() bool {
		var ok bool
		_ = peer.Do(func(e *engine.Engine) { ok = e.HasServer() })
		return ok
	}, 20*time.Second, 5*time.Millisecond)
	handshake := time.Since(start)
	t.Logf("Hello exchange over a %v one-way delay took %v", d, handshake)
	require.GreaterOrEqual(t, handshake, 2*d, "both Hellos were delayed")
	require.Eventually(t, func() bool { st := peerStats(peer); return st.Started && st.Due >= 4 },
		30*time.Second, 100*time.Millisecond, "the peer plays over the delayed connection")
	// And goes on playing over the same connection, well past the
	// handshake timeout (both directions delayed).
	before := peerStats(peer)
	require.Eventually(t, func() bool { return peerStats(peer).Due >= before.Due+8 },
		30*time.Second, 100*time.Millisecond, "4 s more of playback")
	after := peerStats(peer)
	due, onTime := after.Due-before.Due, after.BaseOnTime-before.BaseOnTime
	t.Logf("after the start: %d/%d segments on time; server connections %d, closed for slowness %d",
		onTime, due, srv.Counters().Conns.Load(), srv.Counters().SlowDisconnects.Load())
	require.Equal(t, due, onTime, "every segment on time")
	require.EqualValues(t, 1, srv.Counters().Conns.Load(), "the server kept the peer's connection")
	require.EqualValues(t, 1, peer.Counters().Conns.Load(), "the peer kept the server's connection")
}

// Behind the delay shim a receiver that stops reading still stalls only
// itself: the delay line fills to its bound, the send queue behind it
// grows, the server skips that partner and closes it after StallTimeout
// (as without the shim: an unbounded line would never stall the writer),
// while a delayed honest peer keeps playing.
func TestAStalledReceiverBehindTheDelayShimStallsOnlyItself(t *testing.T) {
	// Every pair 30 ms apart (the attacker's Hello names no address: the
	// default applies to it).
	table := &NetDelay{Default: 30 * time.Millisecond, LineBytes: 256 << 10}
	pub, priv, _ := ed25519.GenerateKey(nil)
	srv := &Node{Listen: "127.0.0.1:0", NetDelay: table, StallTimeout: 2 * time.Second, Config: engine.Config{
		Role: wire.RoleServer, ID: 1, Stream: stream, SegmentDuration: 500 * time.Millisecond, SignKey: priv,
	}}
	require.NoError(t, srv.Start())
	t.Cleanup(srv.Close)
	stop := make(chan struct{})
	defer close(stop)
	go produce(t, srv, priv, stop)

	honest := &Node{Listen: "127.0.0.1:0", NetDelay: table, Config: engine.Config{
		Stream: stream, StreamKey: pub, Partners: 1, PlayoutDelay: 3 * time.Second,
	}}
	require.NoError(t, honest.Start())
	t.Cleanup(honest.Close)
	honest.Connect(srv.Addr().String())
	require.Eventually(t, func() bool { st := peerStats(honest); return st.Started && st.Due >= 4 },
		30*time.Second, 100*time.Millisecond, "the honest peer starts playing")

	c := dialTinyWindow(t, srv.Addr().String())
	_, err := c.Write(wire.Marshal(&wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: wire.RolePeer,
		Stream: stream, Peer: 666}))
	require.NoError(t, err)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r, _, err := ReadHello(c)
	require.NoError(t, err)
	var edge uint64
	for edge == 0 {
		m, _, err := r.Read()
		require.NoError(t, err)
		if w, ok := m.(*wire.Welcome); ok {
			edge = w.LiveEdge
		}
	}
	before := peerStats(honest)
	skipped := func() uint64 {
		var n uint64
		_ = srv.Do(func(e *engine.Engine) { n = e.Stats().SkippedBacklog })
		return n
	}
	// Requests, never reading, until the server closes us (bounded).
	until := time.Now().Add(30 * time.Second)
	for i := 0; time.Now().Before(until) && srv.Counters().SlowDisconnects.Load() == 0; i++ {
		seq := edge + uint64(i/10)
		var batch []byte
		for back := uint64(0); back < 4 && back <= seq; back++ {
			for l := uint8(0); l < 3; l++ {
				batch = wire.AppendFrame(batch, &wire.Request{Seq: seq - back, Layer: l, Flags: wire.RequestManifest})
			}
		}
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(batch); err != nil {
			break // the server closed us: stalled and dropped
		}
		time.Sleep(50 * time.Millisecond) // pacing of the attack, not synchronisation
	}
	// The honest peer over the attack, plus 4 s more.
	mid := peerStats(honest)
	require.Eventually(t, func() bool { return peerStats(honest).Due >= mid.Due+8 }, 30*time.Second, 100*time.Millisecond)
	after := peerStats(honest)
	due, onTime := after.Due-before.Due, after.BaseOnTime-before.BaseOnTime
	t.Logf("stalled receiver: skipped %d times, slow disconnects %d; honest peer %d/%d on time",
		skipped(), srv.Counters().SlowDisconnects.Load(), onTime, due)
	require.Positive(t, skipped(), "the stalled partner's requests were passed over")
	require.Positive(t, srv.Counters().SlowDisconnects.Load(), "the stalled partner was closed")
	require.GreaterOrEqual(t, float64(onTime)/float64(due), 0.99, "the honest peer kept playing")
}

// FuzzParseNetDelay: any bytes give a table or an error, never a panic,
// and a table's entries are delays within the bounds.
func FuzzParseNetDelay(f *testing.F) {
	f.Add([]byte(`{"defaultMs": 3, "oneWayMs": {"127.0.0.1:1": {"127.0.0.1:2": 12.5}}}`))
	f.Add([]byte(`{"oneWayMs": {"[::1]:7000": {"127.0.0.1:2": 0}}}`))
	f.Add([]byte(`{"defaultMs": -1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		d, err := ParseNetDelay(b)
		if err != nil {
			return
		}
		require.GreaterOrEqual(t, d.Default, time.Duration(0))
		require.LessOrEqual(t, d.Default, maxOneWay)
		for _, row := range d.OneWay {
			for _, v := range row {
				require.GreaterOrEqual(t, v, time.Duration(0))
				require.LessOrEqual(t, v, maxOneWay)
			}
		}
	})
}

// A bad table named by the environment stops the node with a clear error
// (a benchmark must not run undelayed by mistake).
func TestStartRefusesABadDelayTable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "delays.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"oneWayMs": {"127.0.0.1:1": {"127.0.0.1:2": -5}}}`), 0o644))
	t.Setenv(EnvNetDelayFile, file)
	n := &Node{Listen: "127.0.0.1:0", Config: engine.Config{Stream: stream}}
	err := n.Start()
	require.ErrorContains(t, err, EnvNetDelayFile)
	require.ErrorContains(t, err, "not a delay")
}
