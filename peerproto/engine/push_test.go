package engine_test

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/lab/sim"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// pushPair is a server with the given upload cap and one peer, fed one
// segment of 3 layers (30 KB) every 500 ms for 10 s.
func pushPair(t *testing.T, serverCap float64) (srv, peer *engine.Engine) {
	pub, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	net := sim.New(7)
	s := net.AddNode(1, 1e7, 0, func(env engine.Env) *engine.Engine {
		return engine.New(engine.Config{Role: wire.RoleServer, ID: 1, Stream: "s", SegmentDuration: 500 * time.Millisecond, UploadCap: serverCap}, env)
	})
	p := net.AddNode(2, 1e6, 1e7, func(env engine.Env) *engine.Engine {
		return engine.New(engine.Config{ID: 2, Stream: "s", StreamKey: pub, PlayoutDelay: 3 * time.Second, UploadCap: 1e6}, env)
	})
	net.Connect(2, 1)
	for i := 0; i < 20; i++ {
		seq := uint64(i)
		net.At(sim.Epoch.Add(time.Duration(i)*500*time.Millisecond), func() {
			chunks := [][]byte{make([]byte, 15000), make([]byte, 7500), make([]byte, 7500)}
			chunks[0][0] = byte(seq)
			raw, err := manifest.Sign(priv, manifest.New("s", seq, 500, 1, chunks))
			require.NoError(t, err)
			require.NoError(t, s.Engine.AddSegment(seq, raw, chunks))
		})
	}
	net.Run(sim.Epoch.Add(12800 * time.Millisecond)) // segment 19 is due at 12.57 s
	return s.Engine, p.Engine
}

func TestTheServerPushesFreshChunksToTheRootsItAdmits(t *testing.T) {
	srv, peer := pushPair(t, 1e6)
	st := peer.Stats()
	require.Positive(t, st.Subscribes)
	require.Positive(t, srv.Stats().Pushes, "the server pushed to its root")
	require.Positive(t, st.PushedBytesIn, "chunks arrived unrequested")
	require.Zero(t, st.BadData)
	require.Zero(t, st.DuplicatePushBytes)
	require.Equal(t, 1.0, st.Continuity())
}

func TestAServerWithoutBudgetForRootsIsPulledFrom(t *testing.T) {
	// 40 kB/s: 0.7 of it for 4 sub-streams is 7 kB/s each, less than one
	// sub-stream's base layer (7.5 kB/s): every subscription is refused.
	srv, peer := pushPair(t, 40e3)
	st := peer.Stats()
	require.Positive(t, st.Subscribes)
	require.Zero(t, srv.Stats().Pushes)
	require.Zero(t, st.PushedBytesIn)
	require.Positive(t, st.UsefulFromServer, "the peer pulled instead")
}
