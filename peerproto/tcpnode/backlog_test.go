package tcpnode

import (
	"crypto/ed25519"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// dialTinyWindow connects with a 1 KiB receive buffer: a receiver whose
// window stays full as soon as it stops reading.
func dialTinyWindow(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func peerStats(p *Node) engine.Stats {
	var st engine.Stats
	_ = p.Do(func(e *engine.Engine) { st = e.Stats() })
	return st
}

// A peer that handshakes, requests and never reads must not stall the
// server partner for anyone else: its own queue fills, it is skipped (and
// later closed), the others go on being served.
func TestAPeerThatNeverReadsStallsOnlyItself(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	srv := &Node{Listen: "127.0.0.1:0", Config: engine.Config{
		Role: wire.RoleServer, ID: 1, Stream: stream, SegmentDuration: 500 * time.Millisecond, SignKey: priv,
	}}
	require.NoError(t, srv.Start())
	t.Cleanup(srv.Close)
	stop := make(chan struct{})
	defer close(stop)
	go produce(t, srv, priv, stop)

	honest := &Node{Listen: "127.0.0.1:0", Config: engine.Config{
		Stream: stream, StreamKey: pub, Partners: 1, PlayoutDelay: 3 * time.Second,
	}}
	require.NoError(t, honest.Start())
	t.Cleanup(honest.Close)
	honest.Connect(srv.Addr().String())
	require.Eventually(t, func() bool { st := peerStats(honest); return st.Started && st.Due >= 4 },
		30*time.Second, 100*time.Millisecond, "the honest peer starts playing")

	// The attacker: handshake, learn the live edge, then request chunks
	// without ever reading again.
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
	attackDone := make(chan struct{})
	go func() {
		defer close(attackDone)
		until := time.Now().Add(12 * time.Second)
		for i := 0; time.Now().Before(until); i++ {
			seq := edge + uint64(i/10)
			var batch []byte
			for back := uint64(0); back < 4 && back <= seq; back++ {
				for l := uint8(0); l < 3; l++ {
					batch = wire.AppendFrame(batch, &wire.Request{Seq: seq - back, Layer: l, Flags: wire.RequestManifest})
				}
			}
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(batch); err != nil {
				return // the server closed us (stalled): that is fine
			}
			time.Sleep(50 * time.Millisecond) // pacing of the attack, not synchronisation
		}
	}()

	before := peerStats(honest)
	<-attackDone
	after := peerStats(honest)
	due, onTime := after.Due-before.Due, after.BaseOnTime-before.BaseOnTime
	var skipped uint64
	_ = srv.Do(func(e *engine.Engine) { skipped = e.Stats().SkippedBacklog })
	t.Logf("honest peer over the attack: %d/%d on time; server skipped the stalled peer %d times, slow disconnects %d",
		onTime, due, skipped, srv.Counters().SlowDisconnects.Load())
	require.GreaterOrEqual(t, due, uint64(16), "segments fell due during the attack")
	require.GreaterOrEqual(t, float64(onTime)/float64(due), 0.99, "the honest peer kept playing")
	require.Positive(t, skipped, "the stalled peer's requests were passed over")
}
