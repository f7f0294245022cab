package engine_test

import (
	"crypto/ed25519"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/lab/sim"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/manifest"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// recEnv is a driver that records what the engine does (unit tests only).
type recEnv struct {
	now          time.Time
	rng          *rand.Rand
	sent         []wire.Message
	to           []wire.PeerID
	disconnected []wire.PeerID
}

func newRecEnv() *recEnv { return &recEnv{now: time.Unix(1000, 0), rng: rand.New(rand.NewPCG(1, 2))} }

func (r *recEnv) Now() time.Time   { return r.now }
func (r *recEnv) Rand() *rand.Rand { return r.rng }
func (r *recEnv) UploadBacklog() int {
	return 0
}
func (r *recEnv) Send(to wire.PeerID, m wire.Message) {
	r.sent, r.to = append(r.sent, m), append(r.to, to)
}
func (r *recEnv) Dial(wire.Candidate)       {}
func (r *recEnv) Disconnect(to wire.PeerID) { r.disconnected = append(r.disconnected, to) }

// signedManifest is a manifest for chunks signed with a throwaway key (the
// server only reads its piece geometry).
func signedManifest(t *testing.T, seq uint64, chunks [][]byte) []byte {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	raw, err := manifest.Sign(priv, manifest.New("s", seq, 1000, 1, chunks))
	require.NoError(t, err)
	return raw
}

func connectPeer(t *testing.T, srv *engine.Engine, id wire.PeerID) {
	t.Helper()
	h := &wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: wire.RolePeer, Stream: "s", Peer: id,
		ListenAddr: "127.0.0.1:1"}
	require.NoError(t, srv.Admit(h, true))
	srv.Connected(h, false)
}

func TestTwoSybilsAccusingAnHonestPeerGetNobodyBanned(t *testing.T) {
	env := newRecEnv()
	srv := engine.New(engine.Config{Role: wire.RoleServer, ID: 1, Stream: "s"}, env)
	for id := wire.PeerID(2); id <= 4; id++ {
		connectPeer(t, srv, id)
	}
	env.sent, env.to = nil, nil
	srv.Receive(3, &wire.Accuse{Peer: 2, Reason: "hash mismatch"})
	srv.Receive(4, &wire.Accuse{Peer: 2, Reason: "hash mismatch"})
	require.False(t, srv.Banned(2), "the server bans nobody on the word of peers")
	require.NotContains(t, env.disconnected, wire.PeerID(2))
	for _, m := range env.sent {
		require.NotEqual(t, wire.TypeAccuse, m.Type(), "no verdict goes out")
	}
	require.Contains(t, srv.Partners(), wire.PeerID(2))
	require.Equal(t, uint64(2), srv.Stats().Accusations)
	h := &wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: wire.RolePeer, Stream: "s", Peer: 2}
	srv.Disconnected(2)
	require.NoError(t, srv.Admit(h, true), "the accused peer may come back")

	// A peer takes no verdict from another peer.
	penv := newRecEnv()
	peer := engine.New(engine.Config{ID: 9, Stream: "s"}, penv)
	peer.Connected(&wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: wire.RolePeer, Stream: "s", Peer: 3}, true)
	peer.Receive(3, &wire.Accuse{Peer: 2})
	require.False(t, peer.Banned(2))
}

// The server checks an accused peer itself: it asks it for a chunk and
// compares the bytes. The honest peer passes; a polluter is banned.
func TestTheServerBansOnlyWhatItVerifiedItself(t *testing.T) {
	env := newRecEnv()
	srv := engine.New(engine.Config{Role: wire.RoleServer, ID: 1, Stream: "s"}, env)
	chunk := []byte("the real base layer")
	require.NoError(t, srv.AddSegment(0, signedManifest(t, 0, [][]byte{chunk}), [][]byte{chunk}))
	for id := wire.PeerID(2); id <= 5; id++ {
		connectPeer(t, srv, id)
		srv.Receive(id, &wire.Have{Entries: []wire.HaveEntry{{Seq: 0, Layer: 0}}})
	}
	probed := func(id wire.PeerID) bool {
		for i, m := range env.sent {
			if r, ok := m.(*wire.Request); ok && env.to[i] == id && r.Seq == 0 {
				return true
			}
		}
		return false
	}
	srv.Receive(3, &wire.Accuse{Peer: 2})
	srv.Receive(4, &wire.Accuse{Peer: 2})
	require.True(t, probed(2), "the server asks the accused for a chunk")
	srv.Receive(2, &wire.Data{Seq: 0, Payload: chunk})
	require.False(t, srv.Banned(2), "the honest peer served the right bytes")

	srv.Receive(3, &wire.Accuse{Peer: 5})
	require.True(t, probed(5))
	srv.Receive(5, &wire.Data{Seq: 0, Payload: []byte("polluted base layer")})
	require.True(t, srv.Banned(5), "bad bytes the server received itself are evidence")
	require.Contains(t, env.disconnected, wire.PeerID(5))
}

func TestAnAccuseFloodWithRandomIDsLeavesNoState(t *testing.T) {
	env := newRecEnv()
	srv := engine.New(engine.Config{Role: wire.RoleServer, ID: 1, Stream: "s"}, env)
	connectPeer(t, srv, 2)
	connectPeer(t, srv, 3)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 100000; i++ {
		id := wire.PeerID(rng.Uint64())
		srv.Receive(2, &wire.Accuse{Peer: id, Reason: "x"})
		srv.Receive(3, &wire.Accuse{Peer: id, Reason: "x"})
		env.sent, env.to = env.sent[:0], env.to[:0]
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew %d bytes over 200k accusations; %d bans", grown, srv.BanCount())
	require.Zero(t, srv.BanCount())
	require.Less(t, grown, int64(4<<20), "accusations leave no state behind")
}

func TestLocalBansAreCappedAndExpire(t *testing.T) {
	env := newRecEnv()
	pub, priv, _ := ed25519Key(t)
	peer := engine.New(engine.Config{ID: 9, Stream: "s", StreamKey: pub}, env)
	good := [][]byte{[]byte("base")}
	raw, err := manifest.Sign(priv, manifest.New("s", 5, 1000, 1, good))
	require.NoError(t, err)
	// Polluters from ever new ids each send a chunk that fails its hash.
	for i := 0; i < engine.MaxBans+500; i++ {
		id := wire.PeerID(100 + i)
		peer.Connected(&wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: wire.RolePeer, Stream: "s", Peer: id}, true)
		peer.Receive(id, &wire.Data{Seq: 5, Manifest: raw, Payload: []byte("BASE")})
		peer.Disconnected(id)
	}
	require.LessOrEqual(t, peer.BanCount(), engine.MaxBans)
	last := wire.PeerID(100 + engine.MaxBans + 499)
	require.True(t, peer.Banned(last))
	require.False(t, peer.Banned(100), "the oldest ban was evicted")
	env.now = env.now.Add(engine.BanTTL + time.Second)
	require.False(t, peer.Banned(last), "a ban is temporary")
}

// A stream that restarts (segment numbers from zero, new epoch) is
// followed by a connected peer: it resets and plays again.
func TestAPeerFollowsAStreamRestartToANewEpoch(t *testing.T) {
	p := newPair(t, "ok")
	p.net.Connect(2, 1)
	add := func(epoch, seq uint64) {
		chunks := [][]byte{[]byte("base layer"), []byte("enhancement")}
		m := manifest.New("s", seq, 1000, 1, chunks)
		m.Epoch = epoch
		raw, err := manifest.Sign(p.priv, m)
		require.NoError(t, err)
		require.NoError(t, p.server.Engine.AddSegment(seq, raw, chunks))
	}
	for i := 0; i < 40; i++ {
		seq := uint64(i)
		p.net.At(sim.Epoch.Add(time.Duration(i)*time.Second), func() { add(0, seq) })
	}
	// At 40 s the stream restarts: epoch 77, numbered from 0 again.
	p.net.At(sim.Epoch.Add(40*time.Second+500*time.Millisecond), func() { p.server.Engine.Restart(77) })
	for i := 0; i < 20; i++ {
		seq := uint64(i)
		p.net.At(sim.Epoch.Add(time.Duration(41+i)*time.Second), func() { add(77, seq) })
	}
	p.net.Run(sim.Epoch.Add(61 * time.Second))
	st := p.peer.Engine.Stats()
	require.Equal(t, uint64(1), st.Epochs, "the peer saw one restart")
	require.Equal(t, uint64(77), p.peer.Engine.Epoch())
	require.True(t, st.Started, "playing again after the restart")
	require.GreaterOrEqual(t, st.Due, uint64(10), "segments of the new instance were played")
	require.Equal(t, 1.0, st.Continuity(), "the stats count the new instance only")
}

func ed25519Key(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey, error) {
	t.Helper()
	return ed25519.GenerateKey(nil)
}
