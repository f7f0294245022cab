package buffermap

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/wire"
)

func TestSetHasAdvance(t *testing.T) {
	m := New(100, 64, 3)
	require.True(t, m.Set(100, 0))
	require.True(t, m.Set(163, 2))
	require.False(t, m.Set(164, 0), "outside the window")
	require.False(t, m.Set(99, 0), "behind the window")
	require.True(t, m.Has(100, 0))
	require.False(t, m.Has(100, 1))
	m.Advance(101)
	require.False(t, m.Has(100, 0))
	require.False(t, m.Has(164, 0), "the freed slot does not alias a new segment")
	require.True(t, m.Set(164, 0))
	require.True(t, m.Has(163, 2))
	m.Advance(1000)
	require.Zero(t, m.Count(2))
}

func TestWireRoundTripAndDiff(t *testing.T) {
	m := New(10, 64, 2)
	for _, s := range []uint64{10, 11, 40, 73} {
		m.Set(s, 0)
	}
	m.Set(11, 1)
	w := m.Encode()
	frame := wire.Marshal(w)
	got, err := wire.Unmarshal(frame[4:])
	require.NoError(t, err)
	n := New(0, 64, 2)
	n.Load(got.(*wire.BufferMap))
	for s := uint64(10); s < 74; s++ {
		for l := 0; l < 2; l++ {
			require.Equal(t, m.Has(s, l), n.Has(s, l), "seq %d layer %d", s, l)
		}
	}
	old := New(10, 64, 2)
	old.Load(w)
	m.Set(50, 1)
	require.Equal(t, []wire.HaveEntry{{Seq: 50, Layer: 1}}, m.Diff(old))
}

func BenchmarkEncode(b *testing.B) {
	m := New(0, 64, 3)
	for s := uint64(0); s < 64; s += 2 {
		m.Set(s, 0)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = m.Encode()
	}
}

func BenchmarkLoad(b *testing.B) {
	m := New(0, 64, 3)
	for s := uint64(0); s < 64; s += 2 {
		m.Set(s, 0)
	}
	w := m.Encode()
	n := New(0, 64, 3)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		n.Load(w)
	}
}
