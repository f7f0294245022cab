package engine_test

import (
	"crypto/ed25519"
	"testing"
	"time"

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

// A child that pulls a chunk elsewhere cancels it at its push parent: the
// parent pushes it none of that chunk's pieces, also those that reach the
// parent later (the Cancel comes before the chunk).
func TestACancelledChunkIsNotPushed(t *testing.T) {
	env := newRecEnv()
	srv := engine.New(engine.Config{Role: wire.RoleServer, ID: 1, Stream: "s", UploadCap: 1e7, Layers: 2,
		SegmentDuration: 500 * time.Millisecond}, env)
	h := &wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: wire.RolePeer, Stream: "s", Peer: 2,
		ListenAddr: "127.0.0.1:1", UploadCap: 1e6}
	require.NoError(t, srv.Admit(h, true))
	srv.Connected(h, false)
	chunks := [][]byte{make([]byte, 20000), make([]byte, 5000)}
	require.NoError(t, srv.AddSegment(0, signedManifest(t, 0, chunks), chunks))
	srv.Receive(2, &wire.Subscribe{Substream: 0, Substreams: 4, Layers: 2})
	granted := false
	for i, m := range env.sent {
		if s, ok := m.(*wire.Subscribed); ok && env.to[i] == 2 && s.Layers == 2 {
			granted = true
		}
	}
	require.True(t, granted, "the server takes the peer as a root of sub-stream 0")
	srv.Receive(2, &wire.Cancel{Seq: 4, Layer: 0}) // segment 4 is sub-stream 0's next
	env.sent, env.to = nil, nil
	for seq := uint64(1); seq <= 4; seq++ {
		env.now = env.now.Add(500 * time.Millisecond)
		require.NoError(t, srv.AddSegment(seq, signedManifest(t, seq, chunks), chunks))
		srv.Tick()
	}
	pushed := map[int]int{}
	for i, m := range env.sent {
		if d, ok := m.(*wire.Data); ok && env.to[i] == 2 && d.Seq == 4 {
			pushed[int(d.Layer)]++
		}
	}
	require.Zero(t, pushed[0], "the cancelled base chunk is not pushed")
	require.Equal(t, 1, pushed[1], "the rest of the segment is")
}
