// Package qos is CoopStreaming's QoS control: it watches the ratio of miss
// (chunks of the subscribed layers not received by their playback deadline)
// over a sliding window of segments, quits the top layer when it rises above
// a threshold and takes it back after it stays low, with hysteresis, a
// minimum dwell time and exponential back-off of failed re-adds, so the
// layer count never flaps.
package qos

import "time"

// Config holds the controller's thresholds. Zero fields take defaults.
type Config struct {
	// Window is the number of played segments the ratio covers (default 10).
	Window int
	// DropAbove drops the top layer when the ratio of miss exceeds it (default 0.10).
	DropAbove float64
	// AddBelow lets a layer back when the ratio stays at or below it (default 0.02).
	AddBelow float64
	// MinDwell is the least time between two switches (default 5s).
	MinDwell time.Duration
	// AddAfter is how long the ratio must stay low before a re-add (default 10s);
	// it doubles after a re-add that failed, up to MaxAddAfter.
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
	if c.AddBelow <= 0 {
		c.AddBelow = 0.02
	}
	if c.MinDwell <= 0 {
		c.MinDwell = 5 * time.Second
	}
	if c.AddAfter <= 0 {
		c.AddAfter = 10 * time.Second
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
		due: make([]int, cfg.Window), missed: make([]int, cfg.Window), addAfter: cfg.AddAfter}
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

// Observe records one played segment: due chunks of the subscribed layers,
// and how many of them missed the deadline. It returns the new layer
// count when it changed.
func (c *Controller) Observe(now time.Time, due, missed int) (int, bool) {
	c.due[c.next], c.missed[c.next] = due, missed
	c.next = (c.next + 1) % len(c.due)
	c.filled = min(c.filled+1, len(c.due))
	if c.switched.IsZero() {
		c.switched = now
	}
	rm := c.RatioOfMiss()
	dwell, addAfter := c.cfg.MinDwell, c.addAfter
	if c.ramping {
		dwell, addAfter = c.cfg.RampStep, c.cfg.RampStep
	}
	canSwitch := now.Sub(c.switched) >= dwell
	switch {
	case (rm > c.cfg.DropAbove || c.overload) && c.current > 1 && now.Sub(c.switched) >= c.cfg.MinDwell/2 && c.filled >= len(c.due)/2:
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
		c.due[i], c.missed[i] = 0, 0
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
