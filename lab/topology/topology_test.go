package topology

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestGenerateIsConnectedDeterministicAndTiered(t *testing.T) {
	a, b := Generate(7, Params{}), Generate(7, Params{})
	require.Equal(t, 4*8+4*8*3*8, a.Routers())
	require.Equal(t, a.dist, b.dist, "same seed, same network")
	require.NotEqual(t, a.dist, Generate(8, Params{}).dist)
	for i := range a.dist {
		for j := range a.dist[i] {
			require.NotEqual(t, uint32(math.MaxUint32), a.dist[i][j], "connected")
			require.Equal(t, a.dist[i][j], a.dist[j][i], "symmetric")
		}
	}
	// Two hosts in one stub domain are closer than hosts across transit
	// domains, typically.
	var hosts []Host
	for id := range uint64(300) {
		hosts = append(hosts, a.PeerHost(id))
	}
	require.Equal(t, a.PeerHost(5), b.PeerHost(5))
	h := a.RTTHistogram(hosts, 20*time.Millisecond, 20)
	total := 0
	for _, c := range h {
		total += c
	}
	require.Equal(t, 300*299/2, total)
	var sum time.Duration
	for i := 1; i < len(hosts); i++ {
		d := a.Delay(hosts[0], hosts[i])
		require.Positive(t, d)
		sum += d
	}
	mean := sum / time.Duration(len(hosts)-1)
	require.Greater(t, mean, 10*time.Millisecond)
	require.Less(t, mean, 200*time.Millisecond)
}

func BenchmarkGenerate(b *testing.B) {
	for i := 0; i < b.N; i++ {
		Generate(uint64(i), Params{})
	}
}
