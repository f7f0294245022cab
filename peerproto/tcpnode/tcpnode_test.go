package tcpnode

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/wire"
)

const stream = "live/tcp"

func startServer(t *testing.T, priv ed25519.PrivateKey) *Node {
	t.Helper()
	srv := &Node{Listen: "127.0.0.1:0", Config: engine.Config{
		Role: wire.RoleServer, ID: 1, Stream: stream, SegmentDuration: 500 * time.Millisecond, SignKey: priv,
		UploadCap: 360000, CheckToken: func(_, tok string) bool { return tok == "good" },
	}}
	require.NoError(t, srv.Start())
	t.Cleanup(srv.Close)
	return srv
}

// produce feeds the server synthetic 3-layer segments every 500 ms.
func produce(t *testing.T, srv *Node, priv ed25519.PrivateKey, stop <-chan struct{}) {
	seq := uint64(0)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		chunks := [][]byte{make([]byte, 30000), make([]byte, 15000), make([]byte, 15000)}
		for _, c := range chunks {
			_, _ = rand.Read(c)
		}
		raw, err := manifest.Sign(priv, manifest.New(stream, seq, 500, 1, chunks))
		require.NoError(t, err)
		s := seq
		_ = srv.Do(func(e *engine.Engine) { _ = e.AddSegment(s, raw, chunks) })
		seq++
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

func TestPeersOverTCPPlayAndShare(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	srv := startServer(t, priv)
	stop := make(chan struct{})
	defer close(stop)
	go produce(t, srv, priv, stop)

	var peers []*Node
	for i := 0; i < 8; i++ {
		p := &Node{Listen: "127.0.0.1:0", Config: engine.Config{
			Stream: stream, Token: "good", StreamKey: pub, Partners: 4, UploadCap: 250000, PlayoutDelay: 3 * time.Second,
		}}
		require.NoError(t, p.Start())
		t.Cleanup(p.Close)
		p.Connect(srv.Addr().String())
		peers = append(peers, p)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		ready := 0
		for _, p := range peers {
			var st engine.Stats
			_ = p.Do(func(e *engine.Engine) { st = e.Stats() })
			if st.Started && st.Due >= 10 {
				ready++
			}
		}
		if ready == len(peers) {
			break
		}
	}
	var fromPeers uint64
	for i, p := range peers {
		var st engine.Stats
		var partners int
		_ = p.Do(func(e *engine.Engine) { st = e.Stats(); partners = len(e.Partners()) })
		t.Logf("peer %d: continuity %.3f over %d, from server %d, from peers %d, partners %d, bad %d",
			i, st.Continuity(), st.Due, st.UsefulFromServer, st.UsefulFromPeers, partners, st.BadData)
		require.True(t, st.Started, "peer %d plays", i)
		require.GreaterOrEqual(t, st.Due, uint64(10), "peer %d played 10 segments", i)
		require.Zero(t, st.BadData)
		require.Greater(t, partners, 1, "peer %d has partners besides the server", i)
		fromPeers += st.UsefulFromPeers
	}
	require.Positive(t, fromPeers, "peers exchanged segments over TCP")
}

func TestWrongTokenAndGarbageAreRefused(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	srv := startServer(t, priv)
	refused := make(chan error, 4)
	p := &Node{Config: engine.Config{Stream: stream, Token: "bad", StreamKey: pub},
		OnAdmitError: func(_ string, err error) { refused <- err }}
	require.NoError(t, p.Start())
	t.Cleanup(p.Close)
	p.Connect(srv.Addr().String())
	select {
	case err := <-refused:
		require.ErrorContains(t, err, "refused by peer")
	case <-time.After(5 * time.Second):
		t.Fatal("a wrong token was not refused")
	}

	for _, garbage := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0xff, 0xff, 0xff, 0xff, 1}, // a 4 GiB frame
		{0, 0, 0, 1, 200},           // unknown type
	} {
		c, err := net.Dial("tcp", srv.Addr().String())
		require.NoError(t, err)
		_, _ = c.Write(garbage)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		var rerr error
		for rerr == nil {
			_, rerr = c.Read(buf)
		}
		require.NotContains(t, rerr.Error(), "timeout", "garbage client must be dropped")
		c.Close()
	}
	var alive bool
	require.NoError(t, srv.Do(func(e *engine.Engine) { alive = e.IsServer() }))
	require.True(t, alive)
}

func TestDialableFillsUnspecifiedHosts(t *testing.T) {
	remote := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5555}
	require.Equal(t, "10.1.2.3:7000", dialable(":7000", remote))
	require.Equal(t, "10.1.2.3:7000", dialable("0.0.0.0:7000", remote))
	require.Equal(t, "10.1.2.3:7000", dialable("[::]:7000", remote))
	require.Equal(t, "192.168.0.9:7000", dialable("192.168.0.9:7000", remote))
	require.Equal(t, "peer.example:7000", dialable("peer.example:7000", remote))
	require.Equal(t, "", dialable("", remote))
}
