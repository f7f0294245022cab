package placement

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/cluster/registry"
)

func node(id string, peers, readers int, streams ...string) registry.Node {
	n := registry.Node{ID: id, Role: registry.RoleOrigin,
		Addr: registry.Addresses{RTSP: id + ":8554", HLS: id + ":8888", Peer: id + ":7070"},
		Load: registry.Load{Peers: peers, Readers: readers}}
	for _, s := range streams {
		n.Streams = append(n.Streams, registry.Claim{Stream: s})
	}
	return n
}

func TestDecide(t *testing.T) {
	lim := Limits{MaxPeers: 10, MaxReaders: 5}
	noHLS := node("c", 0, 0, "live/a")
	noHLS.Addr.HLS = ""
	cases := []struct {
		name  string
		nodes []registry.Node
		lim   Limits
		req   Request
		extra map[string]int
		want  string // "" : serve here
	}{
		{"below its limit a node serves the client itself",
			[]registry.Node{node("a", 9, 0, "live/a"), node("b", 0, 0, "live/a")}, lim,
			Request{Stream: "live/a", Kind: Peer, Load: 9}, nil, ""},
		{"at its limit it redirects to a node with room",
			[]registry.Node{node("a", 10, 0, "live/a"), node("b", 3, 0, "live/a")}, lim,
			Request{Stream: "live/a", Kind: Peer, Load: 10}, nil, "b"},
		{"a limit of 0 never redirects",
			[]registry.Node{node("a", 10, 0, "live/a"), node("b", 0, 0, "live/a")}, Limits{},
			Request{Stream: "live/a", Kind: Peer, Load: 1000}, nil, ""},
		{"never to itself, even when its entry shows room",
			[]registry.Node{node("a", 0, 0, "live/a")}, lim,
			Request{Stream: "live/a", Kind: Peer, Load: 10}, nil, ""},
		{"never to a node at its limit (no ping-pong)",
			[]registry.Node{node("a", 10, 0, "live/a"), node("b", 10, 0, "live/a")}, lim,
			Request{Stream: "live/a", Kind: Peer, Load: 10}, nil, ""},
		{"never to a node that does not serve the stream",
			[]registry.Node{node("a", 10, 0, "live/a"), node("b", 0, 0, "live/other")}, lim,
			Request{Stream: "live/a", Kind: Peer, Load: 10}, nil, ""},
		{"the least loaded target first",
			[]registry.Node{node("a", 10, 0, "live/a"), node("b", 7, 0, "live/a"), node("c", 2, 0, "live/a")}, lim,
			Request{Stream: "live/a", Kind: Peer, Load: 10}, nil, "c"},
		{"ties go to the lowest id",
			[]registry.Node{node("a", 10, 0, "live/a"), node("c", 2, 0, "live/a"), node("b", 2, 0, "live/a")}, lim,
			Request{Stream: "live/a", Kind: Peer, Load: 10}, nil, "b"},
		{"clients already sent count as load",
			[]registry.Node{node("a", 10, 0, "live/a"), node("b", 2, 0, "live/a"), node("c", 4, 0, "live/a")}, lim,
			Request{Stream: "live/a", Kind: Peer, Load: 10}, map[string]int{"b": 3}, "c"},
		{"a target filled by clients already sent is skipped",
			[]registry.Node{node("a", 10, 0, "live/a"), node("b", 2, 0, "live/a")}, lim,
			Request{Stream: "live/a", Kind: Peer, Load: 10}, map[string]int{"b": 8}, ""},
		{"readers use the readers limit and load",
			[]registry.Node{node("a", 0, 5, "live/a"), node("b", 100, 1, "live/a")}, lim,
			Request{Stream: "live/a", Kind: RTSP, Load: 5}, nil, "b"},
		{"a reader is not sent by the peer figures",
			[]registry.Node{node("a", 50, 0, "live/a"), node("b", 0, 0, "live/a")}, lim,
			Request{Stream: "live/a", Kind: HLS, Load: 4}, nil, ""},
		{"a node without the protocol's address is no target",
			[]registry.Node{node("a", 0, 5, "live/a"), noHLS}, lim,
			Request{Stream: "live/a", Kind: HLS, Load: 5}, nil, ""},
		{"an unknown kind is served here",
			[]registry.Node{node("a", 10, 10, "live/a"), node("b", 0, 0, "live/a")}, lim,
			Request{Stream: "live/a", Kind: Kind(9), Load: 10}, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, ok := Decide(registry.View{Nodes: c.nodes}, "a", c.lim, c.req, c.extra)
			if c.want == "" {
				require.False(t, ok, "redirected to %s", n.ID)
				return
			}
			require.True(t, ok)
			require.Equal(t, c.want, n.ID)
		})
	}
}

func TestDialable(t *testing.T) {
	require.Equal(t, "10.0.0.5:8554", Dialable(":8554", "10.0.0.5"))
	require.Equal(t, "node-b:7070", Dialable("[::]:7070", "node-b"))
	require.Equal(t, "127.0.0.1:8554", Dialable("0.0.0.0:8554", "127.0.0.1"))
	require.Equal(t, "[::1]:8554", Dialable(":8554", "::1"))
	require.Equal(t, "b.example:8554", Dialable("b.example:8554", "a.example"))
	require.Equal(t, "10.0.0.9:8554", Dialable("10.0.0.9:8554", "10.0.0.5"))
	require.Equal(t, ":8554", Dialable(":8554", ""))
	require.Equal(t, "garbage", Dialable("garbage", "h"))
}

// failing is a registry whose View fails.
type failing struct{ registry.Registry }

func (failing) View(context.Context) (registry.View, error) {
	return registry.View{}, errors.New("down")
}

func TestRedirectorUsesAFreshViewOnly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := registry.NewMemory(registry.Options{})
	for _, n := range []registry.Node{node("a", 10, 0, "live/a"), node("b", 8, 0, "live/a")} {
		require.NoError(t, reg.Heartbeat(ctx, n))
	}
	r := &Redirector{Registry: reg, Self: "a", Limits: Limits{MaxPeers: 10}, Refresh: 20 * time.Millisecond}
	req := Request{Stream: "live/a", Kind: Peer, Load: 10}
	_, ok := r.Target(req)
	require.False(t, ok, "no view read yet: serve here")
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(rctx) }()
	require.Eventually(t, func() bool { _, ok := r.Target(req); return ok }, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, uint64(1), r.Redirects(Peer))
	stop()
	<-done
	// b has 8 of 10: two clients sent fill it until the next view.
	r.mu.Lock()
	r.at, r.extra = time.Now(), nil
	r.mu.Unlock()
	_, ok = r.Target(req)
	require.True(t, ok, "b has room for two")
	_, ok = r.Target(req)
	require.True(t, ok, "b has room for one more")
	_, ok = r.Target(req)
	require.False(t, ok, "b is full with the two sent")
	require.Equal(t, uint64(3), r.Redirects(Peer))

	down := &Redirector{Registry: failing{}, Self: "a", Limits: Limits{MaxPeers: 10}, Refresh: 10 * time.Millisecond}
	down.mu.Lock()
	down.view, down.at = registry.View{Nodes: []registry.Node{node("b", 0, 0, "live/a")}}, time.Now().Add(-time.Minute)
	down.mu.Unlock()
	go down.Run(ctx)
	_, ok = down.Target(req)
	require.False(t, ok, "a view older than MaxAge (registry unreachable) redirects nobody")
}

func TestAnInactiveRedirectorNeverRedirects(t *testing.T) {
	var nilR *Redirector
	_, ok := nilR.Target(Request{Kind: Peer, Load: 1 << 20})
	require.False(t, ok)
	r := &Redirector{Registry: failing{}, Self: "a"}
	require.False(t, r.Active())
	_, ok = r.Target(Request{Kind: Peer, Load: 1 << 20})
	require.False(t, ok)
}
