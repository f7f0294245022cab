// Package monitor measures throughput and round-trip time: the network
// monitoring module of CoopStreaming, feeding partner scoring, request
// pipelining and QoS control.
package monitor

import "time"

// Meter measures a byte rate over a sliding window of fixed buckets.
// It is driven by explicit timestamps, so it runs on any clock.
type Meter struct {
	bucket  time.Duration
	buckets []float64
	head    int       // index of the bucket holding headAt
	headAt  time.Time // start of the head bucket
	total   float64
	started time.Time
}

// NewMeter returns a meter over window, split into n buckets.
func NewMeter(window time.Duration, n int) *Meter {
	return &Meter{bucket: window / time.Duration(n), buckets: make([]float64, n)}
}

func (m *Meter) roll(now time.Time) {
	if m.headAt.IsZero() {
		m.headAt = now.Truncate(m.bucket)
		m.started = now
		return
	}
	for steps := 0; now.Sub(m.headAt) >= m.bucket && steps <= len(m.buckets); steps++ {
		m.head = (m.head + 1) % len(m.buckets)
		m.buckets[m.head] = 0
		m.headAt = m.headAt.Add(m.bucket)
	}
	if now.Sub(m.headAt) >= m.bucket { // idle for longer than the window
		m.headAt = now.Truncate(m.bucket)
	}
}

// Add records n bytes at now.
func (m *Meter) Add(now time.Time, n int) {
	m.roll(now)
	m.buckets[m.head] += float64(n)
	m.total += float64(n)
}

// Rate returns bytes per second over the window (or since the first
// sample, when younger than the window).
func (m *Meter) Rate(now time.Time) float64 {
	m.roll(now)
	var sum float64
	for _, b := range m.buckets {
		sum += b
	}
	span := time.Duration(len(m.buckets)) * m.bucket
	if age := now.Sub(m.started); age < span {
		span = max(age, m.bucket)
	}
	return sum / span.Seconds()
}

// Total returns every byte ever added.
func (m *Meter) Total() float64 { return m.total }

// RTT is a smoothed round-trip time estimate (RFC 6298 style).
type RTT struct {
	srtt, rttvar time.Duration
	samples      int
}

// Add records one sample.
func (r *RTT) Add(sample time.Duration) {
	if r.samples == 0 {
		r.srtt, r.rttvar = sample, sample/2
	} else {
		d := r.srtt - sample
		if d < 0 {
			d = -d
		}
		r.rttvar = (3*r.rttvar + d) / 4
		r.srtt = (7*r.srtt + sample) / 8
	}
	r.samples++
}

// Smoothed returns the estimate, or def when there is no sample.
func (r *RTT) Smoothed(def time.Duration) time.Duration {
	if r.samples == 0 {
		return def
	}
	return r.srtt
}

// Samples is the number of samples seen.
func (r *RTT) Samples() int { return r.samples }

// Peak estimates a link's capacity as the peak of its last PeakSamples
// samples: a sample (bytes over the time the link was busy) is at most
// what the link carries, often less (a slow sender), so the peak of recent
// ones is the estimate. The zero value is empty.
type Peak struct {
	ring [PeakSamples]float64
	n    int
	peak float64
}

// PeakSamples is how many recent samples a Peak keeps.
const PeakSamples = 16

// Add records one sample in bytes/s.
func (p *Peak) Add(v float64) {
	p.ring[p.n%len(p.ring)] = v
	p.n++
	p.peak = 0
	for _, x := range p.ring {
		p.peak = max(p.peak, x)
	}
}

// Value is the estimate (0 before any sample).
func (p *Peak) Value() float64 { return p.peak }

// Samples is how many samples were ever added.
func (p *Peak) Samples() int { return p.n }

// PeakMinSamples is how many samples a Peak needs before it is trusted.
const PeakMinSamples = 10

// Measured tells whether the estimate has PeakMinSamples samples.
func (p *Peak) Measured() bool { return p.n >= PeakMinSamples }
