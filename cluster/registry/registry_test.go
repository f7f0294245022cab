package registry

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/cluster/redistest"
)

// backend is one registry implementation under the contract; restart,
// when set, empties the backing store as a server restart does.
type backend struct {
	name    string
	open    func(t *testing.T, o Options) Registry
	restart func(t *testing.T)
}

func backends(t *testing.T) []backend {
	mem := backend{name: "memory", open: func(_ *testing.T, o Options) Registry { return NewMemory(o) }}
	var srv *redistest.Server
	red := backend{name: "redis",
		open: func(sub *testing.T, o Options) Registry {
			if srv == nil {
				srv = redistest.Start(t) // the parent's: it outlives the cases
			}
			c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: time.Second})
			sub.Cleanup(func() { c.Close() })
			o.Prefix = fmt.Sprintf("t%d:", time.Now().UnixNano()) // one namespace per case
			return NewRedis(c, o)
		},
		restart: func(t *testing.T) { srv.Restart() },
	}
	return []backend{mem, red}
}

func node(id string, role Role, streams ...string) Node {
	n := Node{ID: id, Role: role, Addr: Addresses{RTSP: "127.0.0.1:8554", Peer: "127.0.0.1:7070"},
		Load: Load{Peers: 3, Readers: 1, EgressBytesPerSec: 1000}}
	for _, s := range streams {
		n.Streams = append(n.Streams, Claim{Stream: s, Epoch: 7, PublicKey: []byte("k-" + id), Peers: 3})
	}
	return n
}

func ids(v View) []string {
	out := []string{}
	for _, n := range v.Nodes {
		out = append(out, n.ID)
	}
	return out
}

// eventually polls cond with a generous deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRegistryContract(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Run("nodes streams and totals", func(t *testing.T) {
				r := b.open(t, Options{})
				require.NoError(t, r.Heartbeat(ctx, node("b", RoleOrigin, "live/x", "live/y")))
				require.NoError(t, r.Heartbeat(ctx, node("a", RoleOrigin, "live/x")))
				require.NoError(t, r.Heartbeat(ctx, node("e1", RoleEdge, "live/x")))
				v, err := r.View(ctx)
				require.NoError(t, err)
				require.Equal(t, b.name, v.Backend)
				require.Equal(t, []string{"a", "b", "e1"}, ids(v))
				require.Equal(t, Totals{Nodes: 3, Streams: 2, Peers: 9, Readers: 3, EgressBytesPerSec: 3000}, v.Totals)
				require.Len(t, v.Streams, 2)
				x := v.Streams[0]
				require.Equal(t, "live/x", x.Name)
				require.Equal(t, "a", x.Origin, "the lowest id among origins")
				require.Equal(t, []string{"b"}, x.OtherOrigins, "a second origin for the same name is reported")
				require.Equal(t, []string{"e1"}, x.Edges)
				require.Equal(t, uint64(7), x.Epoch)
				require.Equal(t, []byte("k-a"), x.PublicKey)
				require.Equal(t, 9, x.Peers)
				require.Equal(t, "127.0.0.1:7070", v.Nodes[0].Addr.Peer)

				// A heartbeat replaces the list: live/y is withdrawn.
				require.NoError(t, r.Heartbeat(ctx, node("b", RoleOrigin, "live/x")))
				v, err = r.View(ctx)
				require.NoError(t, err)
				require.Len(t, v.Streams, 1)

				require.NoError(t, r.Leave(ctx, "a"))
				v, err = r.View(ctx)
				require.NoError(t, err)
				require.Equal(t, []string{"b", "e1"}, ids(v))
				require.Equal(t, "b", v.Streams[0].Origin)
			})
			t.Run("refuses bad entries", func(t *testing.T) {
				r := b.open(t, Options{})
				require.ErrorIs(t, r.Heartbeat(ctx, Node{Role: RoleOrigin}), ErrInvalid)
				require.ErrorIs(t, r.Heartbeat(ctx, Node{ID: "x", Role: "boss"}), ErrInvalid)
				v, err := r.View(ctx)
				require.NoError(t, err)
				require.Empty(t, v.Nodes)
			})
			t.Run("a silent node is gone within its TTL", func(t *testing.T) {
				const ttl = 400 * time.Millisecond
				r := b.open(t, Options{TTL: ttl})
				require.NoError(t, r.Heartbeat(ctx, node("dead", RoleOrigin, "live/x")))
				start := time.Now()
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() { // "alive" keeps beating
					defer close(done)
					for {
						_ = r.Heartbeat(ctx, node("alive", RoleOrigin, "live/y"))
						select {
						case <-stop:
							return
						case <-time.After(ttl / 4):
						}
					}
				}()
				t.Cleanup(func() { close(stop); <-done })
				eventually(t, "dead node expires", func() bool {
					v, err := r.View(ctx)
					return err == nil && len(v.Nodes) == 1 && v.Nodes[0].ID == "alive" && len(v.Streams) == 1
				})
				require.GreaterOrEqual(t, time.Since(start), ttl*9/10, "not before its TTL")
			})
			t.Run("caps evict the oldest node and truncate stream lists", func(t *testing.T) {
				r := b.open(t, Options{MaxNodes: 3, MaxStreamsPerNode: 2, MaxStreams: 3})
				for i := range 5 {
					require.NoError(t, r.Heartbeat(ctx, node(fmt.Sprintf("n%d", i), RoleOrigin,
						fmt.Sprintf("s%d", i), fmt.Sprintf("t%d", i), fmt.Sprintf("u%d", i))))
					time.Sleep(2 * time.Millisecond) // distinct heartbeat times (ms scores in Redis); not a synchronisation
				}
				v, err := r.View(ctx)
				require.NoError(t, err)
				require.Equal(t, []string{"n2", "n3", "n4"}, ids(v), "the two oldest evicted")
				for _, n := range v.Nodes {
					require.Len(t, n.Streams, 2, "a node's list is capped")
				}
				require.Len(t, v.Streams, 3, "the view's stream count is capped")
				require.Positive(t, v.Dropped)
			})
			if b.restart != nil {
				t.Run("state rebuilt after a backend restart", func(t *testing.T) {
					r := b.open(t, Options{})
					require.NoError(t, r.Heartbeat(ctx, node("a", RoleOrigin, "live/x")))
					b.restart(t)
					v, err := r.View(ctx)
					if err == nil { // the client may still be reconnecting
						require.Empty(t, v.Nodes, "a restarted store is empty")
					}
					eventually(t, "heartbeat after restart", func() bool {
						return r.Heartbeat(ctx, node("a", RoleOrigin, "live/x")) == nil
					})
					v, err = r.View(ctx)
					require.NoError(t, err)
					require.Equal(t, []string{"a"}, ids(v))
					require.Equal(t, "a", v.Streams[0].Origin)
				})
			}
		})
	}
}

func TestHeartbeaterBeatsAndLeaves(t *testing.T) {
	r := NewMemory(Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	beats := 0
	h := &Heartbeater{Registry: r, Interval: 10 * time.Millisecond, Self: func() Node { beats++; return node("me", RoleOrigin, "live/x") }}
	go func() { h.Run(ctx); close(done) }()
	eventually(t, "registered", func() bool { v, _ := r.View(ctx); return len(v.Nodes) == 1 })
	cancel()
	<-done
	require.GreaterOrEqual(t, beats, 1)
	v, _ := r.View(context.Background())
	require.Empty(t, v.Nodes, "a stopped heartbeater leaves")
}

func FuzzDecodeNode(f *testing.F) {
	b, _ := encodeNode(node("a", RoleOrigin, "live/x"))
	f.Add(b)
	f.Add([]byte(`{"id":"","role":"origin"}`))
	f.Add([]byte(`{"id":"x","role":"edge","streams":[{"stream":"s","publicKey":"AAAA"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := decodeNode(b, 8)
		if err != nil {
			return
		}
		if n.ID == "" || len(n.Streams) > 8 {
			t.Fatalf("accepted a bad entry: %+v", n)
		}
	})
}
