package qos

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDropsUnderMissesAndReaddsAfterSustainedLowRatio(t *testing.T) {
	c := New(Config{}, 3)
	t0 := time.Unix(0, 0)
	now := t0
	step := func(due, missed int) (int, bool) {
		now = now.Add(time.Second)
		return c.Observe(now, due, missed, missed > 0)
	}
	for i := 0; i < 10; i++ {
		step(3, 0)
	}
	require.Equal(t, 3, c.Layers())
	var dropped bool
	for i := 0; i < 10 && !dropped; i++ {
		_, dropped = step(3, 1) // 33% miss
	}
	require.True(t, dropped)
	require.Equal(t, 2, c.Layers())
	// Still congested: drops once more, but not faster than MinDwell.
	n, changed := step(2, 1)
	require.False(t, changed, "min dwell")
	require.Equal(t, 2, n)
	for i := 0; i < 10; i++ {
		step(2, 1)
	}
	require.Equal(t, 1, c.Layers(), "never below the base layer")
	for i := 0; i < 20; i++ {
		step(1, 1)
	}
	require.Equal(t, 1, c.Layers())
	// Recovery: the ratio must stay low for AddAfter before each re-add.
	for i := 0; i < int(DefaultAddAfter/time.Second)-1; i++ {
		_, changed = step(1, 0)
		require.False(t, changed, "second %d", i)
	}
	for i := 0; i < 30 && c.Layers() < 3; i++ {
		step(c.Layers(), 0)
	}
	require.Equal(t, 3, c.Layers())
}

func TestATopLayerThatOftenArrivesStaysAndOneThatHurtsTheLowerLayersGoes(t *testing.T) {
	c := New(Config{}, 3)
	now := time.Unix(0, 0)
	obs := func(due, missed int, top bool) (int, bool) {
		now = now.Add(500 * time.Millisecond)
		return c.Observe(now, due, missed, top)
	}
	// The top layer misses 3 deadlines in 10 (ratio of miss 0.10 over
	// all layers, 0.30 of the top): it plays whenever it arrives, so it
	// stays.
	for i := 0; i < 60; i++ {
		miss := i%10 < 3
		m := 0
		if miss {
			m = 1
		}
		_, changed := obs(3, m, miss)
		require.False(t, changed, "segment %d", i)
	}
	require.Equal(t, 3, c.Layers())
	require.InDelta(t, 0.10, c.RatioOfMiss(), 1e-9)
	// Nearly all of the top layer misses: it goes.
	var dropped bool
	for i := 0; i < 40 && !dropped; i++ {
		_, dropped = obs(3, 1, i%10 != 0)
	}
	require.True(t, dropped)
	require.Equal(t, 2, c.Layers())
	// The layer below the top misses (the link is congested) while the
	// top arrives: the top layer goes all the same.
	dropped = false
	for i := 0; i < 40 && !dropped; i++ {
		m := 0
		if i%4 == 0 {
			m = 1
		}
		_, dropped = obs(2, m, false)
	}
	require.True(t, dropped, "misses below the top drop it")
	require.Equal(t, 1, c.Layers())
}

func TestFailedReaddBacksOff(t *testing.T) {
	c := New(Config{}, 2)
	now := time.Unix(0, 0)
	obs := func(due, missed int) { now = now.Add(time.Second); c.Observe(now, due, missed, missed > 0) }
	for c.Layers() == 2 {
		obs(2, 2)
	}
	for c.Layers() == 1 {
		obs(1, 0)
	}
	first := c.addAfter
	for c.Layers() == 2 {
		obs(2, 2) // the re-add fails at once
	}
	require.Greater(t, c.addAfter, first)
}

func TestLinkSignalsFromMeasuredCapacity(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		capacity             float64
		measured             bool
		need, cur            float64
		headroom, overloaded bool
	}{
		{"unmeasured: room, never overloaded", 0, false, 100, 50, true, false},
		{"room for one more layer with 15% to spare", 115, true, 100, 50, true, false},
		{"not quite 15% to spare: no re-add", 114, true, 100, 50, false, false},
		{"below 90% of the current layers: overloaded", 44, true, 100, 50, false, true},
		{"at 90% of the current layers: not yet", 45, true, 100, 50, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, o := Link(tc.capacity, tc.measured, tc.need, tc.cur)
			require.Equal(t, tc.headroom, h, "headroom")
			require.Equal(t, tc.overloaded, o, "overloaded")
		})
	}
}
