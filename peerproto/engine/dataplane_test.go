package engine_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/buffermap"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// peerWithServerAndPartner is a peer (id 2) connected to the server (id 1,
// live edge 10, holding 0–10) and to one peer partner (id 3).
func peerWithServerAndPartner(t *testing.T) (*engine.Engine, *recEnv) {
	t.Helper()
	env := newRecEnv()
	e := engine.New(engine.Config{ID: 2, Stream: "s", SkipVerify: true}, env)
	srv := &wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: wire.RoleServer, Stream: "s", Peer: 1}
	require.NoError(t, e.Admit(srv, false))
	e.Connected(srv, true)
	e.Receive(1, &wire.Welcome{Peer: 1, SegmentDurationMs: 500, LiveEdge: 10, Layers: 3, Epoch: 5})
	bm := buffermap.New(0, 64, 3)
	for s := uint64(0); s <= 10; s++ {
		for l := range 3 {
			bm.Set(s, l)
		}
	}
	e.Receive(1, bm.Encode())
	p := &wire.Hello{Protocol: wire.ProtocolID, Version: wire.Version, Role: wire.RolePeer, Stream: "s", Peer: 3}
	require.NoError(t, e.Admit(p, false))
	e.Connected(p, true)
	return e, env
}

func requested(env *recEnv, to wire.PeerID, seq uint64) bool {
	for i, m := range env.sent {
		if r, ok := m.(*wire.Request); ok && env.to[i] == to && r.Seq == seq {
			return true
		}
	}
	return false
}

// A partner's announcement of a segment past the server's last one means
// the server holds it (everything a peer holds came from the server): the
// peer fetches it at once instead of waiting for the server's own
// announcement, which then need name only the newest segment.
func TestAPartnersAnnouncementImpliesTheServerHoldsTheSegment(t *testing.T) {
	e, env := peerWithServerAndPartner(t)
	env.now = env.now.Add(100 * time.Millisecond)
	env.sent, env.to = nil, nil
	e.Receive(3, &wire.Have{Entries: []wire.HaveEntry{{Seq: 11, Layer: 0}}})
	require.True(t, requested(env, 3, 11), "segment 11 asked of the partner that has it: %v", env.sent)
}

// A lying partner cannot move the peer far past the server's edge.
func TestImpliedHoldingsAreBoundedNearTheServersEdge(t *testing.T) {
	e, env := peerWithServerAndPartner(t)
	env.now = env.now.Add(100 * time.Millisecond)
	env.sent, env.to = nil, nil
	e.Receive(3, &wire.Have{Entries: []wire.HaveEntry{{Seq: 40, Layer: 0}}})
	require.False(t, requested(env, 3, 40), "30 segments past the server's edge: not scheduled")
	require.False(t, requested(env, 1, 40), "nor asked of the server")
}

// The "no QoS" ablation switches off QoS only: every layer from the
// start, not slow start stuck at the base layer (which measured
// base-only and was labelled "no QoS").
func TestDisableQoSFetchesEveryLayerFromTheStart(t *testing.T) {
	require.Equal(t, 3, engine.New(engine.Config{ID: 2, Stream: "s", Layers: 3, DisableQoS: true}, newRecEnv()).Layers())
	require.Equal(t, 1, engine.New(engine.Config{ID: 2, Stream: "s", Layers: 3}, newRecEnv()).Layers(), "slow start otherwise")
}

// blockedEnv never drains its send queue, so admitted requests stay queued.
type blockedEnv struct{ *recEnv }

func (blockedEnv) UploadBacklog() int { return 1 << 30 }

// Admission is layer-aware: queued enhancement requests do not get a
// base request refused (the queue serves lower layers first).
func TestQueuedUpperLayersDoNotCrowdOutTheBase(t *testing.T) {
	env := blockedEnv{newRecEnv()}
	srv := engine.New(engine.Config{Role: wire.RoleServer, ID: 1, Stream: "s", UploadCap: 100e3, Layers: 3}, env)
	for id := wire.PeerID(2); id <= 5; id++ {
		connectPeer(t, srv, id)
	}
	chunk := make([]byte, 20000)
	require.NoError(t, srv.AddSegment(0, signedManifest(t, 0, [][]byte{chunk, chunk, chunk}), [][]byte{chunk, chunk, chunk}))
	seed := map[wire.PeerID]bool{}
	for i, m := range env.sent {
		if h, ok := m.(*wire.Have); ok && h.Flags&wire.HaveSeed != 0 {
			seed[env.to[i]] = true
		}
	}
	var others []wire.PeerID
	for id := wire.PeerID(2); id <= 5; id++ {
		if !seed[id] {
			others = append(others, id)
		}
	}
	require.GreaterOrEqual(t, len(others), 2)
	env.now = env.now.Add(10 * time.Second) // nobody is a newcomer
	env.sent, env.to = nil, nil
	srv.Receive(others[0], &wire.Request{Seq: 0, Layer: 1})
	srv.Receive(others[0], &wire.Request{Seq: 0, Layer: 2}) // 40 kB queued: most of half a second of upload
	srv.Receive(others[1], &wire.Request{Seq: 0, Layer: 0})
	for i, m := range env.sent {
		if r, ok := m.(*wire.Reject); ok && env.to[i] == others[1] {
			t.Fatalf("base request refused behind queued enhancement: %+v", r)
		}
	}
}

// backlogEnv has some bytes queued on the uplink, below the engine's
// MaxBacklog.
type backlogEnv struct {
	*recEnv
	backlog int
}

func (b backlogEnv) UploadBacklog() int { return b.backlog }

// With its uplink busy the server serves its seeds and holds back
// repairs, so fresh chunks never wait behind them on the link.
func TestTheServerServesSeedsBeforeRepairsOnABusyLink(t *testing.T) {
	env := backlogEnv{newRecEnv(), 8000} // 80 ms of a 100 kB/s cap, under MaxBacklog (16 KiB)
	srv := engine.New(engine.Config{Role: wire.RoleServer, ID: 1, Stream: "s", UploadCap: 100e3, Layers: 1, DisablePush: true}, env)
	for id := wire.PeerID(2); id <= 5; id++ {
		connectPeer(t, srv, id)
	}
	require.NoError(t, srv.AddSegment(0, signedManifest(t, 0, [][]byte{make([]byte, 40000)}), [][]byte{make([]byte, 40000)})) // 80 kB/s: one seed
	var seed, other wire.PeerID
	for i, m := range env.sent {
		if h, ok := m.(*wire.Have); ok && h.Flags&wire.HaveSeed != 0 {
			seed = env.to[i]
		}
	}
	require.NotZero(t, seed)
	for id := wire.PeerID(2); id <= 5 && other == 0; id++ {
		if id != seed {
			other = id
		}
	}
	env.now = env.now.Add(10 * time.Second)
	env.sent, env.to = nil, nil
	srv.Receive(other, &wire.Request{Seq: 0, Layer: 0, Flags: wire.RequestUrgent})
	srv.Receive(seed, &wire.Request{Seq: 0, Layer: 0})
	served := map[wire.PeerID]bool{}
	for i, m := range env.sent {
		if _, ok := m.(*wire.Data); ok {
			served[env.to[i]] = true
		}
	}
	require.True(t, served[seed], "the seed is served")
	require.False(t, served[other], "the repair waits while the link is busy")
}
