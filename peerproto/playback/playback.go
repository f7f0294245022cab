// Package playback is the playback clock of a live viewer: it anchors on
// the server's live edge, maps segment numbers to the time they reached
// the server and to their playback deadlines, picks where a newcomer
// starts, and tallies what a deadline finds present (continuity and
// quality, with the definitions of docs/metrics.md). It is pure: no
// clock of its own, no I/O. The engine and the lab's baselines share it.
package playback

import "time"

// Defaults of a viewer's playback (the one home of each: the engine, the
// lab's baselines and coop-peer's flags take them from here; the
// simulator's figures were measured with these values).
const (
	// DefaultPlayoutDelay is the time between a segment reaching the
	// server and its playback deadline.
	DefaultPlayoutDelay = 5 * time.Second
	// DefaultMinStartSlack is the least time a newcomer allows itself to
	// fetch its first segment.
	DefaultMinStartSlack = 3 * time.Second
	// DefaultSegmentDuration is δ, the nominal segment duration, where the
	// P2P side needs one before the server says (engine, lab). The
	// origin's segmenter cuts at segment.DefaultDuration, which peerproto
	// may not import; integration/defaults_test.go keeps the two equal.
	DefaultSegmentDuration = 500 * time.Millisecond
)

// Clock maps segment numbers to deadlines. The zero value is unanchored;
// set SegmentDuration and PlayoutDelay before use.
type Clock struct {
	// SegmentDuration is δ, the spacing of segments on the clock.
	SegmentDuration time.Duration
	// PlayoutDelay is the time between a segment reaching the server and
	// its playback deadline.
	PlayoutDelay time.Duration

	seq      uint64
	at       time.Time
	anchored bool
}

// Anchored tells whether the clock has been placed.
func (c *Clock) Anchored() bool { return c.anchored }

// Anchor places the clock: segment seq reached the server at at.
func (c *Clock) Anchor(seq uint64, at time.Time) { c.seq, c.at, c.anchored = seq, at, true }

// AnchorSeq is the segment the clock was anchored on.
func (c *Clock) AnchorSeq() uint64 { return c.seq }

// Reset unanchors the clock (a new instance of the stream).
func (c *Clock) Reset() { c.seq, c.at, c.anchored = 0, time.Time{}, false }

// Follow moves the clock later when segment seq reached the server at
// at, after the clock predicted; it never moves earlier, so playback
// never outruns production.
func (c *Clock) Follow(seq uint64, at time.Time) {
	predicted := c.AvailableAt(seq)
	if at.After(predicted) {
		c.at = c.at.Add(at.Sub(predicted))
	}
}

// AvailableAt is when segment seq reached (or will reach) the server.
func (c *Clock) AvailableAt(seq uint64) time.Time {
	return c.at.Add(time.Duration(int64(seq)-int64(c.seq)) * c.SegmentDuration)
}

// Deadline is the playback deadline of segment seq.
func (c *Clock) Deadline(seq uint64) time.Time {
	return c.AvailableAt(seq).Add(c.PlayoutDelay)
}

// Start is the segment a newcomer starts at, now: the oldest segment
// still due at least minSlack ahead and less than maxBack segments
// behind the anchor, or the first segment after the anchor that is.
func (c *Clock) Start(now time.Time, minSlack time.Duration, maxBack uint64) uint64 {
	s := c.seq
	for s > 0 && c.Deadline(s-1).Sub(now) >= minSlack && c.seq-(s-1) < maxBack {
		s--
	}
	for c.Deadline(s).Sub(now) < minSlack {
		s++
	}
	return s
}

// Present counts the layers of a segment a deadline finds: present is
// the contiguous layers from the base that are held (what plays), missed
// the layers of the first due that are not held.
func Present(due int, has func(layer int) bool) (present, missed int) {
	for l := 0; l < due && has(l); l++ {
		present++
	}
	for l := 0; l < due; l++ {
		if !has(l) {
			missed++
		}
	}
	return present, missed
}

// MaxLayers is how many layers a Tally counts one by one.
const MaxLayers = 8

// Tally accumulates what each deadline found: base-layer continuity,
// per-layer continuity and quality. Counting begins at the first
// deadline that finds something (startup is measured apart).
type Tally struct {
	// Started is set by the caller at the first deadline that found the
	// base layer (with its startup delay); Record reads it.
	Started bool
	// Due counts deadlines since the start; BaseOnTime those that found
	// the base layer.
	Due, BaseOnTime uint64
	// LayerDue and LayerOnTime count per layer (layers of the segment
	// that were subscribed), for the first MaxLayers layers.
	LayerDue, LayerOnTime [MaxLayers]uint64
	// QualitySum sums, per deadline, present layers ÷ the segment's
	// subscribed layers.
	QualitySum float64
}

// Record counts one deadline: present contiguous layers out of
// segLayers due (0: the segment's layer count is unknown, total is used
// for the quality share).
func (t *Tally) Record(present, segLayers, total int) {
	if !t.Started && present == 0 {
		return
	}
	t.Due++
	if present > 0 {
		t.BaseOnTime++
	}
	for l := 0; l < segLayers && l < len(t.LayerDue); l++ {
		t.LayerDue[l]++
		if l < present {
			t.LayerOnTime[l]++
		}
	}
	denom := segLayers
	if denom == 0 {
		denom = total
	}
	t.QualitySum += float64(present) / float64(max(denom, 1))
}

// Continuity is the base-layer continuity index: BaseOnTime ÷ Due.
func (t *Tally) Continuity() float64 {
	if t.Due == 0 {
		return 0
	}
	return float64(t.BaseOnTime) / float64(t.Due)
}

// Quality is the mean share of layers played.
func (t *Tally) Quality() float64 {
	if t.Due == 0 {
		return 0
	}
	return t.QualitySum / float64(t.Due)
}
