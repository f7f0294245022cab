package upload

import (
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/wire"
)

func TestAdmission(t *testing.T) {
	const capBps = 100_000.0
	for _, tc := range []struct {
		name  string
		req   Request
		admit bool
	}{
		{"a peer with room admits", Request{UploadCap: capBps, QueuedBytes: 10_000, ChunkSize: 30_000}, true},
		{"a peer refuses past a second of upload queued", Request{UploadCap: capBps, QueuedBytes: 80_000, ChunkSize: 30_000}, false},
		{"a peer without a cap refuses past MaxQueue requests", Request{QueueLen: MaxQueue}, false},
		{"a peer without a cap admits under MaxQueue", Request{QueueLen: MaxQueue - 1, QueuedBytes: 1 << 30}, true},
		{"nobody holds more than MaxPerPartner of one partner", Request{UploadCap: capBps, PerPartner: MaxPerPartner}, false},
		{"the server keeps half a second queued", Request{Server: true, UploadCap: capBps, QueuedBytes: 30_000, ChunkSize: 30_000}, false},
		{"the server admits under half a second", Request{Server: true, UploadCap: capBps, QueuedBytes: 10_000, ChunkSize: 30_000}, true},
		{"the server never refuses a seed", Request{Server: true, UploadCap: capBps, QueuedBytes: 500_000, ChunkSize: 30_000, Seed: true}, true},
		{"a seed still counts against MaxPerPartner", Request{Server: true, UploadCap: capBps, Seed: true, PerPartner: MaxPerPartner}, false},
		{"an urgent fallback passes under a second queued", Request{Server: true, UploadCap: capBps, QueuedBytes: 90_000, ChunkSize: 30_000, Urgent: true}, true},
		{"an urgent fallback is refused past a second queued", Request{Server: true, UploadCap: capBps, QueuedBytes: 100_000, ChunkSize: 30_000, Urgent: true}, false},
		{"a newcomer passes under a second queued", Request{Server: true, UploadCap: capBps, QueuedBytes: 90_000, ChunkSize: 30_000, Newcomer: true}, true},
		{"a server without a cap bounds its queue by ServerQueue", Request{Server: true, ServerQueue: 4, QueueLen: 4}, false},
		{"a server without a cap admits under ServerQueue", Request{Server: true, ServerQueue: 4, QueueLen: 3}, true},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.admit, Admit(tc.req)) })
	}
}

func TestContribution(t *testing.T) {
	for _, tc := range []struct {
		name     string
		recv     float64
		age      time.Duration
		server   bool
		declared uint64
		want     float64
	}{
		{"an established partner scores what it delivered", 5000, time.Minute, false, 0, 5000},
		{"a newcomer gets the optimistic slot", 5000, time.Second, false, 0, 5000 + OptimisticBonus},
		{"the server ranks by declared upload", 5000, time.Second, true, 42, 42},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, Contribution(tc.recv, tc.age, tc.server, tc.declared))
		})
	}
}

func TestOrder(t *testing.T) {
	seeds := map[wire.PeerID]bool{2: true}
	fresh := map[wire.PeerID]bool{3: true}
	scores := map[wire.PeerID]float64{4: 10, 5: 20}
	order := func(server bool) Order {
		return Order{Server: server, Seed: func(id wire.PeerID) bool { return seeds[id] },
			Newcomer: func(id wire.PeerID) bool { return fresh[id] }, Score: func(id wire.PeerID) float64 { return scores[id] }}
	}
	q := []Queued{{From: 4, Layer: 1}, {From: 5, Layer: 1}, {From: 4, Layer: 0}, {From: 3, Layer: 2}, {From: 6, Layer: 2, Urgent: true}, {From: 2, Layer: 2}}
	sorted := func(o Order) []Queued {
		out := slices.Clone(q)
		sort.SliceStable(out, func(i, j int) bool { return o.Less(out[i], out[j]) })
		return out
	}
	t.Run("the server: seeds, urgent fallbacks, newcomers, then base first and contribution", func(t *testing.T) {
		require.Equal(t, []Queued{{From: 2, Layer: 2}, {From: 6, Layer: 2, Urgent: true}, {From: 3, Layer: 2},
			{From: 4, Layer: 0}, {From: 5, Layer: 1}, {From: 4, Layer: 1}}, sorted(order(true)))
	})
	t.Run("the server: its base-layer pushes to the roots before everything, its other pushes as seeds' entries", func(t *testing.T) {
		// A seed's urgent repair waits behind a base-layer push (it kept
		// the server's pushes queued until they expired at N = 5000).
		pq := append(slices.Clone(q), Queued{From: 7, Layer: 1, Push: true}, Queued{From: 7, Layer: 0, Push: true},
			Queued{From: 2, Layer: 1, Urgent: true})
		seeds[7] = true
		defer delete(seeds, 7)
		out := slices.Clone(pq)
		sort.SliceStable(out, func(i, j int) bool { return order(true).Less(out[i], out[j]) })
		require.Equal(t, []Queued{{From: 7, Layer: 0, Push: true}, {From: 2, Layer: 1, Urgent: true}, {From: 7, Layer: 1, Push: true},
			{From: 2, Layer: 2}, {From: 6, Layer: 2, Urgent: true}, {From: 3, Layer: 2}, {From: 4, Layer: 0}, {From: 5, Layer: 1},
			{From: 4, Layer: 1}}, out)
	})
	t.Run("a peer: base layer first, then the partner that contributes most", func(t *testing.T) {
		require.Equal(t, []Queued{{From: 2, Layer: 2}, {From: 4, Layer: 0}, {From: 5, Layer: 1}, {From: 4, Layer: 1},
			{From: 3, Layer: 2}, {From: 6, Layer: 2, Urgent: true}}, sorted(order(false)))
	})
}

func TestEnhancementWaitsWhileTheUplinkIsHalfBackedUp(t *testing.T) {
	for _, c := range []struct {
		layer        int
		committed    bool
		backlog, max int
		waits        bool
	}{
		{0, false, 1 << 20, 1 << 17, false}, // the base layer never waits here
		{1, false, 0, 1 << 17, false},
		{1, false, 65535, 1 << 17, false},
		{1, false, 65536, 1 << 17, true},
		{2, true, 1 << 17, 1 << 17, true},
		// A small bound: best effort waits at half of it, a committed
		// push never below the floor of two pieces.
		{1, false, 8192, 16384, true},
		{1, true, 16384, 16384, false},
		{1, true, EnhancementFloor - 1, 16384, false},
		{1, true, EnhancementFloor, 16384, true},
	} {
		require.Equal(t, c.waits, EnhancementWaits(c.layer, c.committed, c.backlog, c.max), "%+v", c)
	}
}

func TestCommittedPushesGoFirstAboveTheBaseAtAPeer(t *testing.T) {
	o := Order{Seed: func(wire.PeerID) bool { return false }, Newcomer: func(wire.PeerID) bool { return false },
		Score: func(id wire.PeerID) float64 { return float64(id) }}
	q := []Queued{{From: 9, Layer: 1}, {From: 1, Layer: 2, Push: true, Committed: true}, {From: 8, Layer: 0},
		{From: 7, Layer: 1, Push: true}}
	sort.SliceStable(q, func(i, j int) bool { return o.Less(q[i], q[j]) })
	require.Equal(t, []Queued{{From: 8, Layer: 0}, {From: 1, Layer: 2, Push: true, Committed: true},
		{From: 7, Layer: 1, Push: true}, {From: 9, Layer: 1}}, q)
}
