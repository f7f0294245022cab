package playback

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var t0 = time.Unix(1000, 0)

func clockAt(seq uint64) Clock {
	c := Clock{SegmentDuration: 500 * time.Millisecond, PlayoutDelay: 5 * time.Second}
	c.Anchor(seq, t0)
	return c
}

func TestDeadlinesFollowTheAnchor(t *testing.T) {
	c := clockAt(100)
	for _, tc := range []struct {
		name     string
		seq      uint64
		avail    time.Duration
		deadline time.Duration
	}{
		{"the anchor segment is due one playout delay after it reached the server", 100, 0, 5 * time.Second},
		{"a later segment is due δ later per segment", 104, 2 * time.Second, 7 * time.Second},
		{"an earlier segment was due earlier", 90, -5 * time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, t0.Add(tc.avail), c.AvailableAt(tc.seq))
			require.Equal(t, t0.Add(tc.deadline), c.Deadline(tc.seq))
		})
	}
}

func TestFollowMovesTheClockOnlyLater(t *testing.T) {
	for _, tc := range []struct {
		name string
		seq  uint64
		at   time.Duration // when seq reached the server, from t0
		want time.Duration // availability of the anchor segment after
	}{
		{"a segment on time leaves the clock", 102, time.Second, 0},
		{"a segment early leaves the clock (never outruns production)", 102, 500 * time.Millisecond, 0},
		{"a late segment moves it by its lateness", 102, 1300 * time.Millisecond, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := clockAt(100)
			c.Follow(tc.seq, t0.Add(tc.at))
			require.Equal(t, t0.Add(tc.want), c.AvailableAt(100))
			require.Equal(t, uint64(100), c.AnchorSeq())
		})
	}
}

func TestStartPicksTheOldestSegmentStillDueWithSlack(t *testing.T) {
	for _, tc := range []struct {
		name     string
		now      time.Duration
		minSlack time.Duration
		maxBack  uint64
		want     uint64
	}{
		// Anchor 100 due at t0+5s; each segment back is 0.5 s earlier.
		{"at the anchor time with 3 s of slack: four segments back", 0, 3 * time.Second, 32, 96},
		{"bounded by maxBack behind the anchor", 0, 3 * time.Second, 2, 99},
		{"late, with no segment due in time: forward of the anchor", 4 * time.Second, 3 * time.Second, 32, 104},
		{"no slack needed: as far back as maxBack allows", 0, 0, 8, 93},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := clockAt(100)
			require.Equal(t, tc.want, c.Start(t0.Add(tc.now), tc.minSlack, tc.maxBack))
		})
	}
	t.Run("never below segment zero", func(t *testing.T) {
		c := clockAt(1)
		require.Equal(t, uint64(0), c.Start(t0, 0, 32))
	})
}

func TestResetUnanchors(t *testing.T) {
	c := clockAt(100)
	require.True(t, c.Anchored())
	c.Reset()
	require.False(t, c.Anchored())
	require.Equal(t, uint64(0), c.AnchorSeq())
}

func TestPresentCountsContiguousLayersAndMisses(t *testing.T) {
	for _, tc := range []struct {
		name            string
		due             int
		held            []bool
		present, missed int
	}{
		{"everything held", 3, []bool{true, true, true}, 3, 0},
		{"a hole above the base stops what plays", 3, []bool{true, false, true}, 1, 1},
		{"no base: nothing plays", 3, []bool{false, true, true}, 0, 1},
		{"layers not due are not counted", 2, []bool{true, false, false}, 1, 1},
		{"nothing due", 0, []bool{true}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, m := Present(tc.due, func(l int) bool { return l < len(tc.held) && tc.held[l] })
			require.Equal(t, tc.present, p)
			require.Equal(t, tc.missed, m)
		})
	}
}

func TestTallyCountsFromTheFirstSegmentPlayed(t *testing.T) {
	type rec struct{ present, segLayers, total int }
	for _, tc := range []struct {
		name        string
		recs        []rec
		started     bool
		due, onTime uint64
		layerDue    [3]uint64
		continuity  float64
		quality     float64
	}{
		{"misses before the start are not counted", []rec{{0, 3, 3}, {0, 3, 3}}, false, 0, 0, [3]uint64{}, 0, 0},
		{"full segments", []rec{{3, 3, 3}, {3, 3, 3}}, true, 2, 2, [3]uint64{2, 2, 2}, 1, 1},
		{"a miss after the start counts", []rec{{3, 3, 3}, {0, 3, 3}}, true, 2, 1, [3]uint64{2, 2, 2}, 0.5, 0.5},
		{"base only of a two-layer subscription", []rec{{1, 2, 3}}, true, 1, 1, [3]uint64{1, 1, 0}, 1, 0.5},
		{"unknown segment layers share over the stream's", []rec{{0, 0, 3}}, false, 0, 0, [3]uint64{}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tl Tally
			for _, r := range tc.recs {
				tl.Record(r.present, r.segLayers, r.total)
				if r.present > 0 {
					tl.Started = true
				}
			}
			require.Equal(t, tc.started, tl.Started)
			require.Equal(t, tc.due, tl.Due)
			require.Equal(t, tc.onTime, tl.BaseOnTime)
			require.Equal(t, tc.layerDue[:], tl.LayerDue[:3])
			require.InDelta(t, tc.continuity, tl.Continuity(), 1e-12)
			require.InDelta(t, tc.quality, tl.Quality(), 1e-12)
		})
	}
}
