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

type pair struct {
	net          *sim.Network
	server, peer *sim.Node
	priv         ed25519.PrivateKey
	played       []int
}

func newPair(t *testing.T, token string) *pair { return newPairWith(t, token, nil) }

// newPairWith is newPair with the peer's config changed by tune.
func newPairWith(t *testing.T, token string, tune func(*engine.Config)) *pair {
	pub, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	p := &pair{net: sim.New(1), priv: priv}
	p.server = p.net.AddNode(1, 1e6, 0, func(env engine.Env) *engine.Engine {
		return engine.New(engine.Config{Role: wire.RoleServer, ID: 1, Stream: "s", SegmentDuration: time.Second,
			CheckToken: func(_, tok string) bool { return tok == "ok" }}, env)
	})
	p.peer = p.net.AddNode(2, 1e6, 1e7, func(env engine.Env) *engine.Engine {
		c := engine.Config{ID: 2, Stream: "s", Token: token, StreamKey: pub, PlayoutDelay: 3 * time.Second,
			OnPlay: func(_ uint64, layers [][]byte) { p.played = append(p.played, len(layers)) }}
		if tune != nil {
			tune(&c)
		}
		return engine.New(c, env)
	})
	return p
}

func (p *pair) addSegment(t *testing.T, seq uint64, corrupt bool) {
	chunks := [][]byte{[]byte("base layer"), []byte("enhancement")}
	raw, err := manifest.Sign(p.priv, manifest.New("s", seq, 1000, 1, chunks))
	require.NoError(t, err)
	if corrupt {
		chunks = [][]byte{[]byte("BASE layer"), []byte("enhancement")}
	}
	require.NoError(t, p.server.Engine.AddSegment(seq, raw, chunks))
}

// addSegments schedules segments 0..n-1 at the server, one a second
// (the pair's segment duration) from the epoch.
func (p *pair) addSegments(t *testing.T, n int) {
	for i := range n {
		seq := uint64(i)
		p.net.At(sim.Epoch.Add(time.Duration(i)*time.Second), func() { p.addSegment(t, seq, false) })
	}
}

func TestAPeerFetchesVerifiesAndPlaysFromTheServer(t *testing.T) {
	p := newPair(t, "ok")
	p.net.Connect(2, 1)
	p.addSegments(t, 10)
	p.net.Run(sim.Epoch.Add(12 * time.Second)) // the last segment is due at 12.1 s
	st := p.peer.Engine.Stats()
	require.True(t, st.Started)
	require.Equal(t, 1.0, st.Continuity())
	require.NotEmpty(t, p.played)
	for _, n := range p.played {
		require.Positive(t, n, "the base layer of every segment played")
	}
	require.Equal(t, 2, p.played[len(p.played)-1], "slow start reached both layers")
	require.Zero(t, st.BadData)
	require.Contains(t, p.peer.Engine.Partners(), wire.PeerID(1))
}

func TestABadChunkGetsItsSenderBannedAndIsNeverPlayed(t *testing.T) {
	p := newPair(t, "ok")
	p.net.Connect(2, 1)
	p.net.At(sim.Epoch.Add(100*time.Millisecond), func() { p.addSegment(t, 0, true) })
	p.net.Run(sim.Epoch.Add(5 * time.Second))
	st := p.peer.Engine.Stats()
	require.Equal(t, uint64(1), st.BadData)
	require.True(t, p.peer.Engine.Banned(1))
	require.NotContains(t, p.peer.Engine.Partners(), wire.PeerID(1))
	for _, n := range p.played {
		require.Zero(t, n, "nothing from the bad segment is played")
	}
}

func TestAdmitRefusesWrongTokenStreamAndVersion(t *testing.T) {
	p := newPair(t, "nope")
	srv := p.server.Engine
	h := p.peer.Engine.Hello()
	require.ErrorIs(t, srv.Admit(h, true), engine.ErrAuth)
	h.Token = "ok"
	require.NoError(t, srv.Admit(h, true))
	h2 := *h
	h2.Stream = "other"
	require.ErrorIs(t, srv.Admit(&h2, true), engine.ErrProtocol)
	h3 := *h
	h3.Version = 9
	require.ErrorIs(t, srv.Admit(&h3, true), engine.ErrProtocol)
}

func TestAPeerAcceptsAtMostMaxPartners(t *testing.T) {
	net := sim.New(2)
	var nodes []*sim.Node
	for i := 1; i <= 5; i++ {
		id := wire.PeerID(i)
		nodes = append(nodes, net.AddNode(id, 1e6, 1e6, func(env engine.Env) *engine.Engine {
			return engine.New(engine.Config{ID: id, Stream: "s", Partners: 1, MaxPartners: 2}, env)
		}))
	}
	for i := 2; i <= 5; i++ {
		net.Connect(wire.PeerID(i), 1)
	}
	net.Run(sim.Epoch.Add(time.Second))
	require.Len(t, nodes[0].Engine.Partners(), 2)
}

// The server announces its edge to a peer only every few seconds (and
// over its control budget skips even those); the peer extrapolates the
// server's holdings on its playback clock, so a peer that only has the
// server still fetches and plays every segment.
func TestServerThatSeldomAnnouncesLosesNoSegment(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	net := sim.New(3)
	server := net.AddNode(1, 1e6, 0, func(env engine.Env) *engine.Engine {
		return engine.New(engine.Config{Role: wire.RoleServer, ID: 1, Stream: "s", SegmentDuration: time.Second,
			UploadCap: 1e6, Seeds: 1, ControlShare: 0.00001}, env) // 10 B/s: most announcements are skipped
	})
	var peers []*sim.Node
	for id := wire.PeerID(2); id <= 3; id++ {
		peers = append(peers, net.AddNode(id, 1e6, 1e7, func(env engine.Env) *engine.Engine {
			// No peer partners: everything comes from the server.
			return engine.New(engine.Config{ID: id, Stream: "s", StreamKey: pub, PlayoutDelay: 3 * time.Second, Partners: 1, MaxPartners: 1}, env)
		}))
		net.Connect(id, 1)
	}
	for i := 0; i < 20; i++ {
		seq := uint64(i)
		net.At(sim.Epoch.Add(time.Duration(i)*time.Second), func() {
			chunks := [][]byte{[]byte("base layer"), []byte("enhancement")}
			raw, err := manifest.Sign(priv, manifest.New("s", seq, 1000, 1, chunks))
			require.NoError(t, err)
			require.NoError(t, server.Engine.AddSegment(seq, raw, chunks))
		})
	}
	net.Run(sim.Epoch.Add(22 * time.Second))
	// The seed hears of every segment; announcing every segment to the
	// other peer too (as before edge syncs) made 1728 B here, this 1392.
	srv := server.Engine.Stats()
	require.Less(t, srv.ControlOutByType[wire.TypeHave], uint64(1500), "announcements: %d B", srv.ControlOutByType[wire.TypeHave])
	for _, p := range peers {
		st := p.Engine.Stats()
		require.True(t, st.Started)
		require.Equal(t, 1.0, st.Continuity(), "peer %d", p.ID)
	}
}

func TestOnSegmentHandsOnEachWholeSegmentWithItsSignedManifestBeforeItPlays(t *testing.T) {
	p := newPair(t, "ok")
	type got struct {
		seq    uint64
		raw    []byte
		layers int
		at     time.Time
	}
	var segs []got
	pub := p.priv.Public().(ed25519.PublicKey)
	p.peer = p.net.AddNode(3, 1e6, 1e7, func(env engine.Env) *engine.Engine {
		return engine.New(engine.Config{ID: 3, Stream: "s", Token: "ok", StreamKey: pub, PlayoutDelay: 3 * time.Second, DisableQoS: true,
			OnSegment: func(seq uint64, raw []byte, layers [][]byte) {
				segs = append(segs, got{seq, raw, len(layers), p.net.Now()})
			}}, env)
	})
	p.net.Connect(3, 1)
	p.addSegments(t, 6)
	p.net.Run(sim.Epoch.Add(8 * time.Second))
	require.NotEmpty(t, segs)
	for _, s := range segs {
		require.Equal(t, 2, s.layers)
		man, err := manifest.Verify(pub, s.raw)
		require.NoError(t, err, "the manifest is handed on unchanged")
		require.Equal(t, s.seq, man.Seq)
		require.True(t, s.at.Before(p.peer.Engine.Deadline(s.seq)), "segment %d handed on before its deadline", s.seq)
	}
}

// A peer extrapolates the server's holdings on its clock, but not past a
// segment the server said it does not hold: when the publisher stops,
// the peer's view of the live edge stops one segment later, and the
// server is asked for that segment about once, not at every tick.
func TestExtrapolationStopsWhenTheStreamStops(t *testing.T) {
	p := newPair(t, "ok")
	p.net.Connect(2, 1)
	p.addSegments(t, 6)
	p.net.Run(sim.Epoch.Add(30 * time.Second))
	edge, ok := p.peer.Engine.LiveEdge()
	require.True(t, ok)
	require.LessOrEqual(t, edge, uint64(6), "the peer's live edge")
	// One Reject is ~15 bytes: a few, not one per tick (600 in 30 s).
	require.Less(t, p.server.Engine.Stats().ControlOutByType[wire.TypeReject], uint64(20*15))
}

// TestAPeerPlaysEveryLayerThatArrived: QoS decides what a peer fetches,
// not what it plays. A newcomer starts fetching the base layer only (slow
// start), but its parent pushes one layer ahead; the segments that got
// both layers play both (before, the player cut them to the layers
// subscribed, and quality counted only those).
func TestAPeerPlaysEveryLayerThatArrived(t *testing.T) {
	// A root pushed every layer from the start (no newcomer base-only
	// period) while QoS fetches fewer.
	p := newPairWith(t, "ok", func(c *engine.Config) { c.NewcomerBaseOnly = -1 })
	p.net.Connect(2, 1)
	p.addSegments(t, 10)
	p.net.Run(sim.Epoch.Add(12 * time.Second))
	st := p.peer.Engine.Stats()
	above := 0
	for _, r := range st.PlayedAt {
		require.LessOrEqual(t, r.Layers, 2, "segment %d: more layers than the stream has", r.Seq)
		if r.Layers > r.Subscribed {
			above++
		}
	}
	require.Positive(t, above, "no segment played a layer above those fetched: %+v", st.PlayedAt)
	require.Equal(t, len(st.PlayedAt), len(p.played))
	for i, r := range st.PlayedAt {
		require.Equal(t, r.Layers, p.played[i], "OnPlay gets every layer played")
	}
}
