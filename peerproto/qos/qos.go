// Package qos is CoopStreaming's QoS control: it watches the ratio of miss
// (chunks of the subscribed layers not received by their playback deadline)
// over a sliding window of segments, quits the top layer when it rises above
// a threshold and takes it back after it stays low, with hysteresis, a
// minimum dwell time and exponential back-off of failed re-adds, so the
// layer count never flaps.
//
// The ratio is read in two parts. Misses of the layers below the top say
// the subscription hurts what plays (a link that cannot carry it delays
// the lower layers behind the top one): above DropAbove the top layer
// goes. Misses of the top layer alone say its supply is short; the layer
// still plays whenever it arrives and costs the layers below nothing
// (parents shed enhancement pushes first), so it goes only when most of
// it misses (TopDropAbove, 0.8: TestSimQuick N = 1000 seed 1, quality
// 0.505 at 0.5, 0.528 at 0.8). Dropping it at the first 10% of misses, as
// before, locked swarms into the base layer: nobody relays what nobody
// plays.
package qos

import "time"

// DefaultAddAfter is how long the ratio of miss must stay low before a
// layer comes back: 5 s, the same as MinDwell, so a peer dropped in a
// transient (the join of a whole swarm) takes its layers back as soon as
// the dwell allows. Measured in the simulator (TestSimQuick, coop layered,
// seeds 1-3, quality per seed at 10 s -> 5 s): N = 1000 0.914 / 0.646 /
// 0.885 -> 0.921 / 0.664 / 0.903 (median 0.885 -> 0.903); N = 500
// 0.934 / 0.840 / 0.930 -> 0.936 / 0.882 / 0.932; base continuity
// unchanged (>= 0.9968); homogeneous 1.2x N = 500 median base 0.994,
// quality 0.49 -> 0.50.
const DefaultAddAfter = 5 * time.Second

// Config holds the controller's thresholds. Zero fields take defaults.
type Config struct {
	// Window is the number of played segments the ratio covers (default 10).
	Window int
	// DropAbove drops the top layer when the ratio of miss of the layers
	// below it exceeds it (default 0.10).
	DropAbove float64
	// TopDropAbove drops the top layer when its own ratio of miss
	// exceeds it (default 0.8).
	TopDropAbove float64
	// AddBelow lets a layer back when the ratio stays at or below it (default 0.02).
	AddBelow float64
	// MinDwell is the least time between two switches (default 5s).
	MinDwell time.Duration
	// AddAfter is how long the ratio must stay low before a re-add
	// (default DefaultAddAfter); it doubles after a re-add that failed,
	// up to MaxAddAfter.
	AddAfter time.Duration
	// MaxAddAfter caps the back-off (default 40s).
	MaxAddAfter time.Duration
	// SlowStart starts at the base layer and adds one layer every
	// RampStep (default 2s) while the ratio stays low, until the first
	// drop; without it the controller starts with every layer.
	SlowStart bool
	RampStep  time.Duration
}

func (c Config) withDefaults() Config {
	if c.Window <= 0 {
		c.Window = 10
	}
	if c.DropAbove <= 0 {
		c.DropAbove = 0.10
	}
	if c.TopDropAbove <= 0 {
		c.TopDropAbove = 0.8
	}
	if c.AddBelow <= 0 {
		c.AddBelow = 0.02
	}
	if c.MinDwell <= 0 {
		c.MinDwell = 5 * time.Second
	}
	if c.AddAfter <= 0 {
		c.AddAfter = DefaultAddAfter
	}
	if c.MaxAddAfter <= 0 {
		c.MaxAddAfter = 40 * time.Second
	}
	if c.RampStep <= 0 {
		c.RampStep = 2 * time.Second
	}
	return c
}

// Controller decides how many layers to subscribe to.
type Controller struct {
	cfg      Config
	max      int
	current  int
	due      []int // per played segment: chunks due
	missed   []int // per played segment: chunks missed
	topMiss  []int // per played segment: 1 when the top layer was due and missed
	topDue   []int // per played segment: 1 when the top layer was due
	next     int
	filled   int
	lowSince time.Time
	switched time.Time
	addAfter time.Duration
	lastAdd  time.Time
	noRoom   bool
	overload bool
	// ramping: a newcomer starts with the base layer and adds layers
	// quickly (every RampStep) until the first drop.
	ramping bool
	// Switches counts layer changes.
	Switches int
}

// New returns a controller starting at maxLayers layers.
func New(cfg Config, maxLayers int) *Controller {
	cfg = cfg.withDefaults()
	c := &Controller{cfg: cfg, max: maxLayers, current: maxLayers,
		due: make([]int, cfg.Window), missed: make([]int, cfg.Window),
		topMiss: make([]int, cfg.Window), topDue: make([]int, cfg.Window), addAfter: cfg.AddAfter}
	if cfg.SlowStart {
		c.current, c.ramping = 1, true
	}
	return c
}

// SetOverloaded tells the controller that the measured capacity cannot
// carry the current layers: it drops the top one without waiting for
// misses (still subject to the minimum dwell time).
func (c *Controller) SetOverloaded(ok bool) { c.overload = ok }

// SetHeadroom tells the controller whether the measured capacity could
// carry one more layer; without headroom it never re-adds.
func (c *Controller) SetHeadroom(ok bool) { c.noRoom = !ok }

// Layers is the number of layers to fetch now.
func (c *Controller) Layers() int { return c.current }

// SetMax changes the number of layers the stream has.
func (c *Controller) SetMax(n int) {
	if n < 1 {
		n = 1
	}
	if c.max != n {
		c.max = n
		c.current = min(c.current, n)
		if c.current < 1 {
			c.current = 1
		}
	}
}

// RatioOfMiss is the current ratio of miss over the window.
func (c *Controller) RatioOfMiss() float64 {
	var due, missed int
	for i := 0; i < c.filled; i++ {
		due += c.due[i]
		missed += c.missed[i]
	}
	if due == 0 {
		return 0
	}
	return float64(missed) / float64(due)
}

// split is the ratio of miss of the layers below the top and of the top
// layer alone, over the window.
func (c *Controller) split() (lower, top float64) {
	var due, missed, tdue, tmiss int
	for i := 0; i < c.filled; i++ {
		due += c.due[i] - c.topDue[i]
		missed += c.missed[i] - c.topMiss[i]
		tdue += c.topDue[i]
		tmiss += c.topMiss[i]
	}
	if due > 0 {
		lower = float64(missed) / float64(due)
	}
	if tdue > 0 {
		top = float64(tmiss) / float64(tdue)
	}
	return lower, top
}

// Observe records one played segment: due chunks of the subscribed layers,
// how many of them missed the deadline and whether the top subscribed
// layer was one of those (topMissed; a segment with fewer layers than
// subscribed has no top layer due: its due count is below Layers()). It
// returns the new layer count when it changed.
func (c *Controller) Observe(now time.Time, due, missed int, topMissed bool) (int, bool) {
	c.due[c.next], c.missed[c.next] = due, missed
	c.topDue[c.next], c.topMiss[c.next] = 0, 0
	if due >= c.current && c.current > 1 {
		c.topDue[c.next] = 1
		if topMissed {
			c.topMiss[c.next] = 1
		}
	}
	c.next = (c.next + 1) % len(c.due)
	c.filled = min(c.filled+1, len(c.due))
	if c.switched.IsZero() {
		c.switched = now
	}
	rm := c.RatioOfMiss()
	lower, top := c.split()
	dwell, addAfter := c.cfg.MinDwell, c.addAfter
	if c.ramping {
		dwell, addAfter = c.cfg.RampStep, c.cfg.RampStep
	}
	canSwitch := now.Sub(c.switched) >= dwell
	switch {
	case (lower > c.cfg.DropAbove || top > c.cfg.TopDropAbove || c.overload) && c.current > 1 && now.Sub(c.switched) >= c.cfg.MinDwell/2 && c.filled >= len(c.due)/2:
		if !c.lastAdd.IsZero() && now.Sub(c.lastAdd) < 2*c.addAfter && !c.ramping {
			c.addAfter = min(2*c.addAfter, c.cfg.MaxAddAfter) // the re-add failed
		}
		c.ramping = false
		c.setLayers(now, c.current-1)
		return c.current, true
	case rm <= c.cfg.AddBelow:
		if c.lowSince.IsZero() {
			c.lowSince = now
		}
		if c.current < c.max && canSwitch && !c.noRoom && now.Sub(c.lowSince) >= addAfter {
			c.lastAdd = now
			c.setLayers(now, c.current+1)
			return c.current, true
		}
		if !c.lastAdd.IsZero() && now.Sub(c.lastAdd) > 4*c.addAfter {
			c.addAfter = c.cfg.AddAfter // stable again: forget the back-off
		}
	default:
		c.lowSince = time.Time{}
	}
	return c.current, false
}

func (c *Controller) setLayers(now time.Time, n int) {
	c.current = n
	c.switched = now
	c.lowSince = time.Time{}
	c.Switches++
	for i := range c.due {
		c.due[i], c.missed[i], c.topDue[i], c.topMiss[i] = 0, 0, 0, 0
	}
	c.filled, c.next = 0, 0
}

// Link-capacity thresholds of Link.
const (
	// ReAddHeadroom: a layer comes back only if the measured capacity
	// carries the layers with it with this factor to spare.
	ReAddHeadroom = 1.15
	// OverloadBelow: a capacity measured under this share of the current
	// layers' rate is congestion even before misses show.
	OverloadBelow = 0.9
)

// Link turns a measured download capacity (bytes/s; trusted only when
// measured) into the two signals of the Controller: headroom (SetHeadroom:
// the layers up to one more, at rate need, fit with ReAddHeadroom to
// spare; always true while unmeasured, so nothing is held back before the
// link is known) and overloaded (SetOverloaded: the current layers, at
// rate cur, exceed it by the OverloadBelow margin).
func Link(capacity float64, measured bool, need, cur float64) (headroom, overloaded bool) {
	return !measured || capacity >= ReAddHeadroom*need, measured && capacity < OverloadBelow*cur
}
