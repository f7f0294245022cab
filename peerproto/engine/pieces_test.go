package engine_test

import (
	"crypto/ed25519"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// piecesOf cuts a chunk into Data messages as a sender does.
func piecesOf(m *manifest.Manifest, raw []byte, seq uint64, chunk []byte) []*wire.Data {
	var out []*wire.Data
	for i := range m.Pieces(0) {
		d := &wire.Data{Seq: seq, Piece: uint16(i), Payload: m.Piece(chunk, i)}
		if i == 0 {
			d.Manifest = raw
		}
		out = append(out, d)
	}
	return out
}

// A chunk is held (played, served, announced) only when its last piece is
// in; each piece is verified on arrival, in any order, and a bad piece
// bans its sender without touching what was held.
func TestAChunkIsHeldWhenItsLastVerifiedPieceArrives(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	chunk := make([]byte, 40000) // 3 pieces
	for i := range chunk {
		chunk[i] = byte(i/100 + i)
	}
	m := manifest.New("s", 5, 500, 1, [][]byte{chunk})
	raw, err := manifest.Sign(priv, m)
	require.NoError(t, err)

	env := newRecEnv()
	var done [][]byte
	peer := engine.New(engine.Config{ID: 2, Stream: "s", StreamKey: pub, Layers: 1,
		OnSegment: func(seq uint64, _ []byte, layers [][]byte) { done = append(done, layers[0]) }}, env)
	srv := &wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: wire.RoleServer, Stream: "s", Peer: 1}
	require.NoError(t, peer.Admit(srv, false))
	peer.Connected(srv, true)
	other := &wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: wire.RolePeer, Stream: "s", Peer: 3, ListenAddr: "127.0.0.1:1"}
	require.NoError(t, peer.Admit(other, true))
	peer.Connected(other, false)

	ds := piecesOf(m, raw, 5, chunk)
	require.Len(t, ds, 3)
	peer.Receive(1, ds[2]) // manifest comes with piece 0: piece 2 alone cannot be checked
	require.Equal(t, uint64(1), peer.Stats().Unverifiable)
	peer.Receive(1, ds[0])
	peer.Receive(1, ds[0]) // a duplicate piece
	require.Equal(t, uint64(len(ds[0].Payload)), peer.Stats().DuplicateBytes)
	bad := &wire.Data{Seq: 5, Piece: 1, Payload: append([]byte{}, ds[1].Payload...)}
	bad.Payload[0] ^= 1
	peer.Receive(3, bad)
	require.True(t, peer.Banned(3), "a piece that fails its hash bans the sender")
	require.Empty(t, done, "2 of 3 pieces: not held")
	peer.Receive(1, ds[1])
	require.Empty(t, done)
	peer.Receive(1, ds[2])
	require.Len(t, done, 1, "the last piece completes the chunk")
	require.Equal(t, chunk, done[0])
	require.Zero(t, peer.Stats().BadData-1, "only the tampered piece was bad")
}
