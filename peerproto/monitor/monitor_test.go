package monitor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMeterRateOverTheWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	m := NewMeter(5*time.Second, 10)
	for i := 0; i < 100; i++ { // 1000 bytes every 100 ms for 10 s
		m.Add(t0.Add(time.Duration(i)*100*time.Millisecond), 1000)
	}
	require.InDelta(t, 10000, m.Rate(t0.Add(10*time.Second)), 1500)
	require.Zero(t, m.Rate(t0.Add(30*time.Second)), "idle for longer than the window")
	require.Equal(t, 100000.0, m.Total())
}

func TestRTTSmoothing(t *testing.T) {
	var r RTT
	require.Equal(t, time.Second, r.Smoothed(time.Second))
	r.Add(100 * time.Millisecond)
	for i := 0; i < 50; i++ {
		r.Add(20 * time.Millisecond)
	}
	require.InDelta(t, float64(20*time.Millisecond), float64(r.Smoothed(0)), float64(2*time.Millisecond))
}
