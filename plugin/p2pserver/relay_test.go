package p2pserver

import (
	"context"
	"crypto/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/tcpnode"
	"github.com/coopstreaming/coop/plugin/jointoken"
	"github.com/coopstreaming/coop/plugin/pluginapi"
)

// pushLoop pushes numbered random segments of two layers until the test ends.
func pushLoop(t *testing.T, s *Service, stream string) {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		for seq := uint64(0); ; seq++ {
			chunks := [][]byte{make([]byte, 8000), make([]byte, 4000)}
			_, _ = rand.Read(chunks[0])
			_ = s.PushSegment(context.Background(), pluginapi.Segment{Stream: stream, Seq: seq, DurationMs: 250, RandomAccess: seq%4 == 0, Chunks: chunks})
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
}

// TestARelayReServesTheUpstreamsSignedSegments: an edge plugin relays an
// origin plugin's stream; peers attached to the edge, pinned to the
// origin's key, play with no bad data (the edge serves the origin's
// manifests unchanged: it cannot sign with the origin's key); the edge
// reports the origin's key and epoch; the host gets the header and the
// segments in order.
func TestARelayReServesTheUpstreamsSignedSegments(t *testing.T) {
	origin, oconf := configure(t, "secret")
	edge, econf := configure(t, "secret")
	require.NotEqual(t, oconf.StreamPublicKey, econf.StreamPublicKey)
	ctx := context.Background()
	require.NoError(t, origin.AnnounceStream(ctx, pluginapi.StreamInfo{Name: "live/x", Header: []byte("hdr"), SegmentDurationMs: 250, Layers: 2, Epoch: 77}))
	pushLoop(t, origin, "live/x")

	var mu sync.Mutex
	var seqs, epochs []uint64
	var headers int
	rctx, cancel := context.WithCancel(ctx)
	relayDone := make(chan struct{})
	var relayErr error
	go func() {
		defer close(relayDone)
		relayErr = edge.Relay(rctx, pluginapi.RelayRequest{Stream: "live/x", Upstream: oconf.PeerAddress, StreamKey: oconf.StreamPublicKey},
			func(ev pluginapi.RelayEvent) error {
				mu.Lock()
				defer mu.Unlock()
				if ev.Header != nil {
					headers++
				}
				if ev.Segment != nil {
					seqs, epochs = append(seqs, ev.Segment.Seq), append(epochs, ev.Epoch)
				}
				return nil
			})
	}()
	t.Cleanup(func() { cancel(); <-relayDone })

	var peers []*tcpnode.Node
	for range 2 {
		p := &tcpnode.Node{Listen: "127.0.0.1:0", Server: econf.PeerAddress, Config: engine.Config{
			Stream: "live/x", Layers: 2, Partners: 2, PlayoutDelay: 2 * time.Second, MinStartSlack: time.Second,
			StreamKey: oconf.StreamPublicKey, Token: mintFor(t, "secret", "live/x"),
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
	}, 30*time.Second, 100*time.Millisecond, "the edge's peers play the relayed stream")
	for _, p := range peers {
		var st engine.Stats
		var epoch uint64
		_ = p.Do(func(e *engine.Engine) { st, epoch = e.Stats(), e.Epoch() })
		require.Zero(t, st.BadData)
		require.Zero(t, st.Banned)
		require.Equal(t, uint64(77), epoch, "the edge's peers follow the origin's epoch")
	}
	stats, err := edge.Stats(ctx)
	require.NoError(t, err)
	require.Len(t, stats, 1)
	require.Equal(t, oconf.StreamPublicKey, stats[0].StreamKey)
	require.Equal(t, oconf.PeerAddress, stats[0].Upstream)
	require.Equal(t, uint64(77), stats[0].Epoch)
	require.True(t, stats[0].RelayConnected)
	require.NotZero(t, stats[0].RelayBytesFromServer)
	require.Equal(t, 2, stats[0].Peers)

	mu.Lock()
	require.NotZero(t, headers)
	require.NotEmpty(t, seqs)
	for i := 1; i < len(seqs); i++ {
		require.Greater(t, seqs[i], seqs[i-1], "segments reach the host in order")
	}
	for _, e := range epochs {
		require.Equal(t, uint64(77), e, "segment events carry the origin's epoch")
	}
	mu.Unlock()

	err = edge.AnnounceStream(ctx, pluginapi.StreamInfo{Name: "live/x", Header: []byte("h"), SegmentDurationMs: 250, Layers: 2})
	require.ErrorIs(t, err, pluginapi.ErrInvalid, "a relayed stream is not published at the edge too")
	cancel()
	<-relayDone
	require.NoError(t, relayErr)
	stats, err = edge.Stats(ctx)
	require.NoError(t, err)
	require.Empty(t, stats, "the relayed swarm ends with the relay")
}

func mintFor(t *testing.T, secret, stream string) string {
	t.Helper()
	return jointoken.Mint([]byte(secret), stream, time.Now().Add(time.Hour))
}

func TestReorderReleasesInOrderAndSkipsAStaleGap(t *testing.T) {
	now := time.Unix(1000, 0)
	seg := func(seq uint64, at time.Time) pendingSeg {
		return pendingSeg{relayItem: relayItem{seq: seq}, man: &manifest.Manifest{DurationMs: 500}, at: at}
	}
	seqsOf := func(l []pendingSeg) []uint64 {
		out := []uint64{}
		for _, p := range l {
			out = append(out, p.seq)
		}
		return out
	}
	var o reorder
	o.reset(10)
	ready, late := o.add(seg(10, now))
	require.False(t, late)
	require.Equal(t, []uint64{10}, seqsOf(ready))
	ready, _ = o.add(seg(12, now))
	require.Empty(t, ready, "12 waits for 11")
	ready, _ = o.add(seg(11, now))
	require.Equal(t, []uint64{11, 12}, seqsOf(ready))

	ready, _ = o.add(seg(14, now))
	require.Empty(t, ready)
	require.Empty(t, o.due(now.Add(100*time.Millisecond)), "13 is still waited for")
	require.Equal(t, []uint64{14}, seqsOf(o.due(now.Add(600*time.Millisecond))), "after one segment duration 13 is skipped")
	_, late = o.add(seg(13, now))
	require.True(t, late, "13 after 14 is late")

	for _, s := range []uint64{16, 17, 18} {
		ready, _ = o.add(seg(s, now))
		require.Empty(t, ready)
	}
	o.add(seg(19, now))
	require.Equal(t, []uint64{16, 17, 18, 19}, seqsOf(o.due(now)), "relayHold segments behind a gap release it at once")
}

// TestARelayFollowsTheUpstreamsRestart: the origin restarts the stream
// (a new epoch, segment numbers from zero): the relayed swarm restarts
// under the new epoch and the edge's peers follow it and play on.
func TestARelayFollowsTheUpstreamsRestart(t *testing.T) {
	origin, oconf := configure(t, "")
	edge, econf := configure(t, "")
	ctx := context.Background()
	info := pluginapi.StreamInfo{Name: "live/r", Header: []byte("hdr"), SegmentDurationMs: 250, Layers: 2, Epoch: 5}
	require.NoError(t, origin.AnnounceStream(ctx, info))
	var restart atomic.Bool
	stop, pushed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(pushed)
		for seq := uint64(100); ; seq++ {
			if restart.Swap(false) {
				info.Epoch = 6
				_ = origin.AnnounceStream(ctx, info)
				seq = 0
			}
			chunks := [][]byte{make([]byte, 6000), make([]byte, 3000)}
			_, _ = rand.Read(chunks[0])
			_ = origin.PushSegment(ctx, pluginapi.Segment{Stream: "live/r", Seq: seq, DurationMs: 250, RandomAccess: seq%4 == 0, Chunks: chunks})
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-pushed })
	rctx, cancel := context.WithCancel(ctx)
	relayDone := make(chan struct{})
	var mu sync.Mutex
	var lastEpoch uint64
	go func() {
		defer close(relayDone)
		_ = edge.Relay(rctx, pluginapi.RelayRequest{Stream: "live/r", Upstream: oconf.PeerAddress, StreamKey: oconf.StreamPublicKey},
			func(ev pluginapi.RelayEvent) error {
				mu.Lock()
				defer mu.Unlock()
				if ev.Segment != nil {
					lastEpoch = ev.Epoch
				}
				return nil
			})
	}()
	t.Cleanup(func() { cancel(); <-relayDone })
	p := &tcpnode.Node{Listen: "127.0.0.1:0", Server: econf.PeerAddress, Config: engine.Config{
		Stream: "live/r", Layers: 2, Partners: 2, PlayoutDelay: 2 * time.Second, MinStartSlack: time.Second,
		StreamKey: oconf.StreamPublicKey,
	}}
	require.NoError(t, p.Start())
	t.Cleanup(p.Close)
	played := func(epoch uint64, n uint64) func() bool {
		return func() bool {
			var st engine.Stats
			var e uint64
			_ = p.Do(func(en *engine.Engine) { st, e = en.Stats(), en.Epoch() })
			return e == epoch && st.BaseOnTime >= n && st.BadData == 0
		}
	}
	require.Eventually(t, played(5, 4), 30*time.Second, 100*time.Millisecond, "the edge's peer plays epoch 5")
	restart.Store(true)
	require.Eventually(t, played(6, 4), 30*time.Second, 100*time.Millisecond, "the edge's peer follows the origin's restart")
	stats, err := edge.Stats(ctx)
	require.NoError(t, err)
	require.Len(t, stats, 1)
	require.Equal(t, uint64(6), stats[0].Epoch)
	mu.Lock()
	require.Equal(t, uint64(6), lastEpoch, "the host's events carry the new epoch")
	mu.Unlock()
}
