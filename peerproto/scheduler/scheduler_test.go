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

func TestUpperLayersFollowTheirBase(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(in *Input)
		want  []Chunk // chunks of segment 5 that must be asked for
		never []Chunk // and must not
	}{
		{"base missing everywhere: no upper layer", func(in *Input) {
			in.Partners[0].Map = mapWith(Chunk{5, 1}, Chunk{5, 2})
		}, nil, []Chunk{{5, 1}, {5, 2}}},
		{"base held: layer 1 asked", func(in *Input) {
			in.Have.Set(5, 0)
			in.Partners[0].Map = mapWith(Chunk{5, 1})
		}, []Chunk{{5, 1}}, nil},
		{"base in flight: layer 1 asked", func(in *Input) {
			in.Pending = func(c Chunk) bool { return c == Chunk{5, 0} }
			in.Partners[0].Map = mapWith(Chunk{5, 1})
		}, []Chunk{{5, 1}}, nil},
		{"base assigned this round: every layer", func(in *Input) {
			in.Partners[0].Map = mapWith(all(5, 5, 3)...)
		}, []Chunk{{5, 0}, {5, 1}, {5, 2}}, nil},
		{"base not assignable (no slot): no upper layer", func(in *Input) {
			in.Partners[0].Map = mapWith(Chunk{5, 1}, Chunk{5, 2})
			in.Partners = append(in.Partners, Partner{Map: mapWith(Chunk{5, 0}), Rate: 1e9, InFlight: 16})
		}, nil, []Chunk{{5, 1}, {5, 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := input(Partner{Rate: 1e9})
			in.From, in.To = 5, 5
			in.Deadline = func(seq uint64) time.Time { return t0.Add(10 * time.Second) }
			tc.setup(in)
			got := map[Chunk]bool{}
			for _, a := range (&Scheduler{}).Schedule(in, nil) {
				got[a.Chunk] = true
			}
			for _, c := range tc.want {
				require.True(t, got[c], "%v asked", c)
			}
			for _, c := range tc.never {
				require.False(t, got[c], "%v not asked", c)
			}
		})
	}
}

func TestServerIsNoFallbackForUpperLayers(t *testing.T) {
	server := Partner{Map: mapWith(all(0, 9, 3)...), Server: true}
	slow := Partner{Map: mapWith(all(0, 9, 3)...), Rate: 1000} // late for everything
	in := input(slow, server)
	in.From, in.To = 0, 0
	in.ServerAllowed = func(Chunk) bool { return false }
	out := (&Scheduler{}).Schedule(in, nil)
	for _, a := range out {
		if a.Layer == 0 {
			require.Equal(t, 1, a.Partner, "a late base chunk falls back on the server")
		} else {
			require.Equal(t, 0, a.Partner, "an upper layer never does: %v", a)
		}
	}
	// Seeds still fetch every layer from the server.
	in = input(server)
	in.From, in.To = 0, 0
	in.ServerAllowed = func(Chunk) bool { return true }
	require.Len(t, (&Scheduler{}).Schedule(in, nil), 3)
}

func TestQueueAccountingIsLayerAware(t *testing.T) {
	// 30 kB of enhancement chunks queued at the partner: a base chunk's
	// wait does not count them (the partner serves the base first), nor
	// does the in-flight bound.
	p := Partner{Map: mapWith(all(0, 9, 3)...), Rate: 20000, InFlight: 0}
	p.LayerBytes[2] = 30000
	p.InFlightBytes = 30000
	in := input(p)
	in.From, in.To, in.Layers = 0, 0, 1
	in.Deadline = func(uint64) time.Time { return t0.Add(900 * time.Millisecond) } // 10 kB at 20 kB/s: 0.5 s
	in.Partners = append(in.Partners, Partner{Map: mapWith(all(0, 9, 3)...), Server: true})
	out := (&Scheduler{}).Schedule(in, nil)
	require.Len(t, out, 1)
	require.Equal(t, 0, out[0].Partner, "the peer makes the deadline: its queue ahead of a base chunk is empty")

	in = input(Partner{Map: mapWith(all(0, 9, 3)...), Rate: 1e9})
	in.From, in.To, in.Layers = 3, 3, 1
	in.Deadline = func(uint64) time.Time { return t0.Add(10 * time.Second) }
	in.MaxInFlightBytes, in.InFlightBytes = 15000, 40000
	in.LayerBytes[1], in.LayerBytes[2] = 20000, 20000
	require.Len(t, (&Scheduler{}).Schedule(in, nil), 1, "enhancement bytes in flight do not hold back a base chunk")
	in.LayerBytes[0] = 10000
	require.Empty(t, (&Scheduler{}).Schedule(in, nil), "base bytes do")
}
