package sim

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The queue runs events by time, and events at the same time in the
// order they were scheduled: the simulator's determinism rests on it.
func TestEventsRunByTimeThenInScheduleOrder(t *testing.T) {
	n := New(1)
	rng := rand.New(rand.NewPCG(1, 2))
	type ran struct {
		at    time.Duration
		order int
	}
	var got []ran
	for i := range 5000 {
		at := time.Duration(rng.IntN(50)) * time.Millisecond
		n.At(Epoch.Add(at), func() { got = append(got, ran{at, i}) })
	}
	n.Run(Epoch.Add(time.Second))
	require.Len(t, got, 5000)
	require.True(t, slices.IsSortedFunc(got, func(a, b ran) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		return a.order - b.order
	}))
}
