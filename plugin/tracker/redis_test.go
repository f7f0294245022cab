package tracker

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/cluster/redistest"
	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/wire"
)

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func client(t *testing.T, srv *redistest.Server) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 500 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	return c
}

// fast are short periods so the tests wait little; the contract is the
// same at the defaults.
func fast(c redis.UniversalClient, stream, node string) RedisOptions {
	return RedisOptions{Client: c, Stream: stream, Node: node, TTL: 600 * time.Millisecond,
		Sync: 100 * time.Millisecond, Refresh: 50 * time.Millisecond}
}

func newRedis(t *testing.T, o RedisOptions) *Redis {
	r, err := NewRedis(o)
	require.NoError(t, err)
	t.Cleanup(r.Close)
	return r
}

// syncing calls Sync on the test goroutine, standing in for the engine
// goroutine (the tracker is used from one goroutine at a time).
func candidateIDs(tr engine.Tracker, asker wire.PeerID) []wire.PeerID {
	return ids(tr.Candidates(query(asker, 16)))
}

// TestTrackerContract runs the single-node contract on both backends:
// a Redis tracker with no other node answers exactly as Memory.
func TestTrackerContract(t *testing.T) {
	srv := redistest.Start(t)
	type tracker interface {
		engine.Tracker
		Len() int
	}
	for _, b := range []struct {
		name string
		open func(t *testing.T) tracker
	}{
		{"memory", func(*testing.T) tracker { return NewMemory() }},
		{"redis", func(t *testing.T) tracker {
			return newRedis(t, fast(client(t, srv), fmt.Sprintf("contract-%d", time.Now().UnixNano()), "a"))
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			tr := b.open(t)
			tr.Join(2, view{"a:1", 100_000, 20 * time.Millisecond, 3})
			tr.Join(3, view{"a:2", 1_000_000, 20 * time.Millisecond, 3})
			tr.Join(4, view{"", 1_000_000, 20 * time.Millisecond, 3})
			tr.Join(5, view{"a:3", 1_000_000, 20 * time.Millisecond, 10})
			tr.Join(6, view{"a:4", 50_000, 20 * time.Millisecond, 3})
			require.Equal(t, []wire.PeerID{3, 2, 5}, candidateIDs(tr, 6))
			require.Len(t, tr.Candidates(query(6, 1)), 1)
			tr.Leave(3)
			require.Equal(t, 4, tr.Len())
			require.NotContains(t, candidateIDs(tr, 6), wire.PeerID(3))
			require.Equal(t, tr.Candidates(query(100, 16)), tr.Candidates(query(100, 16)), "deterministic per seed")
		})
	}
}

func TestRedisPeersOfOneNodeAreCandidatesOnTheOther(t *testing.T) {
	srv := redistest.Start(t)
	c := client(t, srv)
	a := newRedis(t, fast(c, "live/x", "node-a"))
	b := newRedis(t, fast(c, "live/x", "node-b"))
	other := newRedis(t, fast(c, "live/other", "node-b")) // another stream's swarm: never mixed in
	a.Join(10, view{"10.0.0.1:1", 500_000, 20 * time.Millisecond, 2})
	b.Join(20, view{"10.0.0.2:1", 900_000, 30 * time.Millisecond, 1})
	b.Join(21, view{"10.0.0.2:2", 100_000, 30 * time.Millisecond, 1})
	other.Join(30, view{"10.0.0.3:1", 900_000, 30 * time.Millisecond, 1})

	eventually(t, "node-b's peers reach node-a", func() bool { return len(candidateIDs(a, 10)) == 2 })
	got := a.Candidates(query(10, 16))
	require.ElementsMatch(t, []wire.PeerID{20, 21}, ids(got))
	for _, cand := range got {
		if cand.Peer == 20 {
			require.Equal(t, "10.0.0.2:1", cand.Addr)
			require.Equal(t, uint64(900_000), cand.UploadRate)
			require.Equal(t, uint32(30_000), cand.RTTMicros)
		}
	}
	eventually(t, "and node-a's reach node-b", func() bool {
		return slicesContain(candidateIDs(b, 20), 10)
	})

	b.Leave(21)
	eventually(t, "a peer that left node-b is withdrawn", func() bool { return !slicesContain(candidateIDs(a, 10), 21) })

	// node-b dies: no withdrawal, its writes stop; its peers expire.
	b.cancel()
	b.wg.Wait()
	died := time.Now()
	eventually(t, "a dead node's peers vanish", func() bool { return len(candidateIDs(a, 10)) == 0 })
	require.GreaterOrEqual(t, time.Since(died), 300*time.Millisecond, "kept until about its TTL, not dropped at once")
}

func slicesContain(list []wire.PeerID, id wire.PeerID) bool {
	for _, x := range list {
		if x == id {
			return true
		}
	}
	return false
}

func TestRedisRestartRebuildsMembersFromTheNextResync(t *testing.T) {
	srv := redistest.Start(t)
	ca, cb := client(t, srv), client(t, srv)
	a := newRedis(t, fast(ca, "live/x", "node-a"))
	b := newRedis(t, fast(cb, "live/x", "node-b"))
	b.Join(20, view{"10.0.0.2:1", 900_000, 30 * time.Millisecond, 1})
	eventually(t, "node-b's peer reaches node-a", func() bool { return slicesContain(candidateIDs(a, 10), 20) })

	// A key nobody rewrites shows that the restarted server is empty:
	// node-b's members key cannot, since its writer re-syncs every 100 ms
	// and may have rebuilt it already (it did, on a loaded machine).
	require.NoError(t, ca.Set(context.Background(), "restart-sentinel", "1", 0).Err())
	srv.Restart() // empty: every key is gone
	n, err := ca.Exists(context.Background(), "restart-sentinel").Result()
	if err == nil {
		require.Zero(t, n, "the restarted server is empty")
	}
	b.Join(22, view{"10.0.0.2:3", 900_000, 30 * time.Millisecond, 1}) // a change while the writer reconnects
	eventually(t, "state rebuilt after the restart", func() bool {
		got := candidateIDs(a, 10)
		return slicesContain(got, 20) && slicesContain(got, 22)
	})
}

func TestRedisDownNeverBlocksTheEngineAndCountsDrops(t *testing.T) {
	srv := redistest.Start(t)
	o := fast(client(t, srv), "live/x", "node-a")
	o.Queue = 8
	a := newRedis(t, o)
	srv.Stop()
	// With Redis gone the engine's calls still return (the test would
	// hang otherwise) and the queue overflows into counted drops.
	for i := range 5000 {
		a.Join(wire.PeerID(i+2), view{"10.0.0.1:1", 1000, time.Millisecond, 1})
		if i%10 == 0 {
			a.Candidates(query(2, 16))
		}
	}
	a.Sync()
	require.Positive(t, a.Stats().Dropped, "changes beyond the queue are dropped and counted")
	require.Equal(t, 5000, a.Len(), "the local directory is whole")
	require.Len(t, a.Candidates(query(2, 16)), 16)
	eventually(t, "failures counted", func() bool { return a.Stats().Errors > 0 })
}

func TestRedisReadsAreBounded(t *testing.T) {
	srv := redistest.Start(t)
	c := client(t, srv)
	o := fast(c, "live/x", "node-a")
	o.MaxMembers = 50
	a := newRedis(t, o)
	b := newRedis(t, fast(c, "live/x", "node-b"))
	for i := range 300 {
		b.Join(wire.PeerID(1000+i), view{"10.0.0.2:1", 1000, time.Millisecond, 1})
	}
	b.Sync()
	eventually(t, "node-b's peers read", func() bool { return a.Stats().Remote > 0 })
	eventually(t, "all it may hold", func() bool { return a.Stats().Remote == 50 })

	// Values another node wrote are checked: a corrupt or oversized one is
	// skipped, the good ones kept.
	y := newRedis(t, fast(c, "live/y", "node-a"))
	z := newRedis(t, fast(c, "live/y", "node-z"))
	z.Join(5, view{"10.0.0.5:1", 1000, time.Millisecond, 1})
	z.Sync()
	eventually(t, "node-z written", func() bool { return c.HLen(context.Background(), z.membersKey("node-z")).Val() == 1 })
	z.cancel() // stop its writer so the bad values stay
	z.wg.Wait()
	require.NoError(t, c.HSet(context.Background(), z.membersKey("node-z"), "77", strings.Repeat("x", 600), "nope", "a 1 2 3", "78", "a 1 2").Err())
	rs, err := y.read(context.Background())
	require.NoError(t, err)
	require.Equal(t, []wire.PeerID{5}, rs.ids)
}

func TestMemberRoundTrip(t *testing.T) {
	for _, m := range []member{
		{addr: "10.0.0.1:7000", up: 123456, rtt: 42 * time.Millisecond, partners: 6},
		{addr: "", up: 0, rtt: 0, partners: 0},
		{addr: "[::1]:1", up: 1e12, rtt: time.Second, partners: 64},
	} {
		got, err := decodeMember(encodeMember(m))
		require.NoError(t, err)
		require.Equal(t, m, got)
	}
	for _, bad := range []string{"", "a 1 2", "a 1 2 3 4", "a x 2 3", "a 1 -2 3", "a 1 2 99999999", strings.Repeat("a", 600)} {
		_, err := decodeMember(bad)
		require.Error(t, err, "%q", bad)
	}
}

func FuzzDecodeMember(f *testing.F) {
	f.Add("10.0.0.1:7000 123456 42000 6")
	f.Add("- 0 0 0")
	f.Add("a 1 2")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := decodeMember(s)
		if err != nil {
			return
		}
		if len(m.addr) > 256 || m.partners > 65535 {
			t.Fatalf("accepted %q: %+v", s, m)
		}
		again, err := decodeMember(encodeMember(m))
		if err != nil || again != m {
			t.Fatalf("no round trip for %q: %+v vs %+v (%v)", s, m, again, err)
		}
	})
}

// TestRedisTrackerControlCost measures the Redis tracker's control cost
// per peer: 1000 synthetic members on 2 nodes (500 each) with churn,
// over a bounded window; figures from the server's INFO counters.
// COOP_SCALE_MEASURE=1 runs it (docs/scale.md quotes it).
func TestRedisTrackerControlCost(t *testing.T) {
	if os.Getenv("COOP_SCALE_MEASURE") == "" {
		t.Skip("COOP_SCALE_MEASURE=1 measures the tracker's control cost")
	}
	srv := redistest.Start(t)
	c := client(t, srv)
	ctx := context.Background()
	const perNode, window = 500, 10 * time.Second
	var nodes []*Redis
	for i := range 2 {
		o := RedisOptions{Client: c, Stream: "live/x", Node: fmt.Sprintf("node-%d", i)} // defaults: 2 s re-sync, 1 s reads
		nodes = append(nodes, newRedis(t, o))
	}
	for i, n := range nodes {
		for j := range perNode {
			n.Join(wire.PeerID(i*100_000+j+2), view{fmt.Sprintf("10.%d.%d.%d:40000", i, j/250, j%250), 250_000, 30 * time.Millisecond, 6})
		}
		n.Sync()
	}
	eventually(t, "both nodes see each other", func() bool {
		return nodes[0].Stats().Remote == perNode && nodes[1].Stats().Remote == perNode
	})
	info := func() (cmds, in, out float64) {
		s, err := c.Info(ctx, "stats").Result()
		require.NoError(t, err)
		for _, line := range strings.Split(s, "\r\n") {
			k, v, _ := strings.Cut(line, ":")
			x, _ := strconv.ParseFloat(v, 64)
			switch k {
			case "total_commands_processed":
				cmds = x
			case "total_net_input_bytes":
				in = x
			case "total_net_output_bytes":
				out = x
			}
		}
		return
	}
	c0, i0, o0 := info()
	start := time.Now()
	churn := 0
	for time.Since(start) < window { // bounded in time; churn: 5 leave+join per second per node (1% of its peers)
		for i, n := range nodes {
			id := wire.PeerID(i*100_000 + churn%perNode + 2)
			n.Leave(id)
			n.Join(id, view{"10.9.9.9:40000", 250_000, 30 * time.Millisecond, 6})
			if churn%10 == 0 {
				n.Sync() // as Drive does every 2 s
			}
		}
		churn++
		time.Sleep(200 * time.Millisecond) // pacing of the synthetic churn, not a synchronisation
	}
	el := time.Since(start).Seconds()
	c1, i1, o1 := info()
	peers := float64(2 * perNode)
	t.Logf("tracker control cost, %d peers on 2 nodes, %.1f s: %.3f Redis commands/peer/s, %.1f B/peer/s into Redis, %.1f B/peer/s out of Redis (%.0f cmds/s, %.0f kB/s total)",
		int(peers), el, (c1-c0)/el/peers, (i1-i0)/el/peers, (o1-o0)/el/peers, (c1-c0)/el, (i1-i0+o1-o0)/el/1000)
}
