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

func TestPeakIsTheMaximumOfTheRecentSamples(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []float64
		want    float64
	}{
		{"empty", nil, 0},
		{"the peak of a few", []float64{10, 30, 20}, 30},
		{"an old peak ages out after PeakSamples newer ones", append([]float64{1000}, make16(50)...), 50},
		{"a recent peak stays", append(make16(50), 1000), 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Peak
			for _, v := range tc.samples {
				p.Add(v)
			}
			require.Equal(t, tc.want, p.Value())
			require.Equal(t, len(tc.samples), p.Samples())
		})
	}
}

func make16(v float64) []float64 {
	out := make([]float64, PeakSamples)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestPeakIsTrustedAfterPeakMinSamples(t *testing.T) {
	var p Peak
	for range PeakMinSamples - 1 {
		p.Add(1)
	}
	require.False(t, p.Measured())
	p.Add(1)
	require.True(t, p.Measured())
}
