package p2pserver

import (
	"context"
	"crypto/rand"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/tcpnode"
	"github.com/coopstreaming/coop/peerproto/wire"
	"github.com/coopstreaming/coop/plugin/jointoken"
	"github.com/coopstreaming/coop/plugin/pluginapi"
)

func configure(t *testing.T, secret string) (*Service, pluginapi.Configured) {
	t.Helper()
	s := &Service{}
	conf, err := s.Configure(context.Background(), pluginapi.Settings{
		PeerAddress: "127.0.0.1:0", KeyFile: filepath.Join(t.TempDir(), "k.pem"), Seeds: 1, TokenSecret: secret,
	})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	require.Len(t, conf.StreamPublicKey, 32)
	return s, conf
}

// TestPeersLearnTheKeyAndPlay: peers given no key learn it from the
// server's Welcome, verify every manifest with it and play.
func TestPeersLearnTheKeyAndPlay(t *testing.T) {
	s, conf := configure(t, "")
	ctx := context.Background()
	require.NoError(t, s.AnnounceStream(ctx, pluginapi.StreamInfo{Name: "live/x", Header: []byte("hdr"), SegmentDurationMs: 250, Layers: 2}))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for seq := uint64(0); ; seq++ {
			chunks := [][]byte{make([]byte, 8000), make([]byte, 4000)}
			_, _ = rand.Read(chunks[0])
			_ = s.PushSegment(ctx, pluginapi.Segment{Stream: "live/x", Seq: seq, DurationMs: 250, RandomAccess: seq%4 == 0, Chunks: chunks})
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	var peers []*tcpnode.Node
	for range 3 {
		p := &tcpnode.Node{Listen: "127.0.0.1:0", Server: conf.PeerAddress, Config: engine.Config{
			Stream: "live/x", Layers: 2, Partners: 2, PlayoutDelay: 2 * time.Second, MinStartSlack: time.Second,
		}}
		require.NoError(t, p.Start())
		t.Cleanup(p.Close)
		peers = append(peers, p)
	}
	require.Eventually(t, func() bool {
		for _, p := range peers {
			var st engine.Stats
			_ = p.Do(func(e *engine.Engine) { st = e.Stats() })
			if st.BaseOnTime < 6 {
				return false
			}
		}
		return true
	}, 20*time.Second, 100*time.Millisecond)
	for _, p := range peers {
		var st engine.Stats
		_ = p.Do(func(e *engine.Engine) { st = e.Stats() })
		require.Zero(t, st.BadData)
		require.Zero(t, st.Banned)
	}
	stats, err := s.Stats(ctx)
	require.NoError(t, err)
	require.Len(t, stats, 1)
	require.Equal(t, 3, stats[0].Peers)
	require.Positive(t, stats[0].ServerMediaBytes)
}

func TestUnknownStreamAndBadTokenAreRefused(t *testing.T) {
	s, conf := configure(t, "secret")
	require.NoError(t, s.AnnounceStream(context.Background(), pluginapi.StreamInfo{Name: "live/x", SegmentDurationMs: 500, Layers: 1}))
	hello := func(stream, token string) error {
		c, err := net.Dial("tcp", conf.PeerAddress)
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Write(wire.Marshal(&wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: wire.RolePeer,
			Stream: stream, Peer: 77, Token: token}))
		require.NoError(t, err)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _, err = tcpnode.ReadHello(c)
		return err
	}
	var rej *tcpnode.RejectedError
	require.ErrorAs(t, hello("live/none", ""), &rej)
	require.Equal(t, wire.RejectNotFound, rej.Reason)
	require.ErrorAs(t, hello("live/x", "v1.1.bad"), &rej)
	require.Equal(t, wire.RejectAuth, rej.Reason)
	require.NoError(t, hello("live/x", jointoken.Mint([]byte("secret"), "live/x", time.Now().Add(time.Hour))))
	require.ErrorIs(t, s.PushSegment(context.Background(), pluginapi.Segment{Stream: "live/none", Seq: 1, Chunks: [][]byte{{1}}}), pluginapi.ErrUnknownStream)
	require.ErrorIs(t, s.PushSegment(context.Background(), pluginapi.Segment{Stream: "live/x", Seq: 1, Chunks: [][]byte{{1}, {2}}}), pluginapi.ErrInvalid)
}
