package scheduler

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/buffermap"
)

var t0 = time.Unix(1000, 0)

func mapWith(chunks ...Chunk) *buffermap.Map {
	m := buffermap.New(0, 64, 3)
	for _, c := range chunks {
		m.Set(c.Seq, c.Layer)
	}
	return m
}

func all(from, to uint64, layers int) []Chunk {
	var out []Chunk
	for s := from; s <= to; s++ {
		for l := 0; l < layers; l++ {
			out = append(out, Chunk{s, l})
		}
	}
	return out
}

func input(partners ...Partner) *Input {
	return &Input{
		Now: t0, Have: buffermap.New(0, 64, 3), From: 0, To: 9, Layers: 3,
		Deadline:  func(seq uint64) time.Time { return t0.Add(time.Duration(seq+1) * time.Second) },
		Pending:   func(Chunk) bool { return false },
		ChunkSize: func(int) int { return 10000 },
		Partners:  partners, Rand: rand.New(rand.NewPCG(1, 2)),
	}
}

func TestUrgentChunksComeFirstByDeadline(t *testing.T) {
	in := input(Partner{Map: mapWith(all(0, 9, 3)...), Rate: 1e9})
	out := (&Scheduler{}).Schedule(in, nil)
	require.Equal(t, Chunk{0, 0}, out[0].Chunk)
	require.Equal(t, Chunk{0, 1}, out[1].Chunk, "within a deadline, lower layer first")
}

func TestLowLayerFirstThenRarestFirst(t *testing.T) {
	// Non-urgent window only: deadlines are 10 s and more away.
	common := mapWith(all(5, 9, 3)...)
	rareHolder := mapWith(Chunk{7, 0}, Chunk{7, 1})
	in := input(Partner{Map: common, Rate: 1e9}, Partner{Map: mapWith(all(5, 9, 3)...), Rate: 1e9},
		Partner{Map: rareHolder, Rate: 1e9})
	in.Deadline = func(seq uint64) time.Time { return t0.Add(time.Duration(seq+10) * time.Second) }
	// Make segment 7 layer 0 rarer than others: only two holders for all
	// but (7,0) which has three. Rarest first picks a two-holder chunk.
	in.Partners[2].Map = mapWith(Chunk{7, 0})
	out := (&Scheduler{}).Schedule(in, nil)
	require.NotEmpty(t, out)
	for i, a := range out {
		if i > 0 {
			require.GreaterOrEqual(t, a.Layer, out[i-1].Layer, "low layer first: %v", out)
		}
	}
	require.Equal(t, 0, out[0].Layer)
	require.NotEqual(t, Chunk{7, 0}, out[0].Chunk, "the most common base chunk is not first")
}

func TestServerIsTheFallbackNotTheFirstChoice(t *testing.T) {
	peer := Partner{Map: mapWith(all(0, 9, 1)...), Rate: 1e9}
	server := Partner{Map: mapWith(all(0, 9, 3)...), Server: true}
	in := input(peer, server)
	in.Layers = 1
	in.ServerAllowed = func(Chunk) bool { return false }
	out := (&Scheduler{}).Schedule(in, nil)
	for _, a := range out {
		require.Equal(t, 0, a.Partner, "every base chunk is available from the peer in time")
	}

	// A slow peer cannot make the deadline of segment 0: the server gets it.
	in = input(Partner{Map: mapWith(all(0, 9, 1)...), Rate: 1000}, server)
	in.Layers = 1
	in.ServerAllowed = func(Chunk) bool { return false }
	out = (&Scheduler{}).Schedule(in, nil)
	require.Equal(t, Chunk{0, 0}, out[0].Chunk)
	require.Equal(t, 1, out[0].Partner)

	// A chunk only the server holds is fetched only when allowed or urgent.
	in = input(server)
	in.Layers = 1
	in.Deadline = func(seq uint64) time.Time { return t0.Add(time.Duration(seq+10) * time.Second) }
	in.ServerAllowed = func(c Chunk) bool { return c.Seq == 3 }
	out = (&Scheduler{}).Schedule(in, nil)
	require.Len(t, out, 1)
	require.Equal(t, Chunk{3, 0}, out[0].Chunk)
}

func TestInFlightIsBoundedByMeasuredRate(t *testing.T) {
	in := input(Partner{Map: mapWith(all(0, 9, 3)...), Rate: 20000, RTT: 0})
	out := (&Scheduler{}).Schedule(in, nil)
	require.Len(t, out, 2, "20 kB/s over a 1 s pipeline holds two 10 kB chunks")
	in = input(Partner{Map: mapWith(all(0, 9, 3)...)})
	require.Len(t, (&Scheduler{}).Schedule(in, nil), 2, "an unmeasured partner gets two")
}

func TestRandomFirstSpreadsANewcomersRequests(t *testing.T) {
	firsts := map[uint64]bool{}
	for seed := uint64(0); seed < 20; seed++ {
		in := input(Partner{Map: mapWith(all(0, 63, 1)...), Rate: 1e9})
		in.To, in.Layers, in.RandomFirst = 63, 1, true
		in.Deadline = func(seq uint64) time.Time { return t0.Add(time.Duration(seq+10) * time.Second) }
		in.Rand = rand.New(rand.NewPCG(seed, 0))
		out := (&Scheduler{}).Schedule(in, nil)
		firsts[out[0].Seq] = true
	}
	require.Greater(t, len(firsts), 5, "a newcomer starts at random segments")
}

func BenchmarkSchedule(b *testing.B) {
	partners := make([]Partner, 8)
	for i := range partners {
		m := buffermap.New(0, 64, 3)
		for s := uint64(0); s < 64; s++ {
			if (s+uint64(i))%3 != 0 {
				m.Set(s, 0)
				m.Set(s, 1)
			}
		}
		partners[i] = Partner{Map: m, Rate: 200000, RTT: 30 * time.Millisecond}
	}
	partners = append(partners, Partner{Map: mapWith(all(0, 63, 3)...), Server: true})
	s := &Scheduler{}
	var out []Assignment
	in := input(partners...)
	in.To = 63
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range in.Partners {
			in.Partners[j].InFlight, in.Partners[j].InFlightBytes = 0, 0
		}
		out = s.Schedule(in, out[:0])
	}
}

func TestStrictServerIsNeverAFallback(t *testing.T) {
	now := time.Unix(1000, 0)
	have := buffermap.New(0, 64, 1)
	srvMap := buffermap.New(0, 64, 1)
	srvMap.Set(3, 0)
	in := &Input{
		Now: now, Have: have, From: 0, To: 3, Layers: 1,
		Deadline:  func(seq uint64) time.Time { return now.Add(500 * time.Millisecond) }, // urgent
		Pending:   func(Chunk) bool { return false },
		ChunkSize: func(int) int { return 1000 },
		Partners:  []Partner{{Map: srvMap, Server: true, Rate: 1e6}},
		Rand:      rand.New(rand.NewPCG(1, 2)),
	}
	require.Len(t, (&Scheduler{}).Schedule(in, nil), 1, "by default the server is the fallback of an urgent chunk")
	in.Partners[0].InFlight, in.Partners[0].InFlightBytes = 0, 0
	in.StrictServer = true
	require.Empty(t, (&Scheduler{}).Schedule(in, nil), "strict: not without ServerAllowed")
	in.ServerAllowed = func(c Chunk) bool { return c.Seq == 3 }
	require.Len(t, (&Scheduler{}).Schedule(in, nil), 1, "strict: seeded chunks still come from the server")
}
