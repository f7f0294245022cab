// Package scheduler decides which chunk to fetch from which partner. It is
// pure: buffer maps, deadlines and partner measurements in, requests out,
// so it is unit-tested and benchmarked alone and runs unchanged on TCP, on
// the in-memory network and in the simulator. NOTES.md explains the order.
package scheduler

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/coopstreaming/coop/peerproto/buffermap"
)

// Chunk names one layer of one segment.
type Chunk struct {
	Seq   uint64
	Layer int
}

// Partner is what the scheduler knows of one partner.
type Partner struct {
	// Map is the partner's buffer map (nil: unknown yet).
	Map *buffermap.Map
	// Rate is the measured delivery rate from the partner in bytes/s
	// (0: no measurement yet).
	Rate float64
	// RTT is the smoothed round-trip time.
	RTT time.Duration
	// InFlight and InFlightBytes count outstanding requests to it.
	InFlight      int
	InFlightBytes int
	// LayerBytes is InFlightBytes per layer: a partner serves lower
	// layers first, so a chunk's wait counts its layer and those below.
	LayerBytes [MaxLayers]int
	// Server marks the server partner.
	Server bool
	// Unavailable marks a partner that must not get requests now (busy).
	Unavailable bool
}

// Input is one scheduling round.
type Input struct {
	Now time.Time
	// Have is what this node holds.
	Have *buffermap.Map
	// From and To bound the segments to consider (inclusive).
	From, To uint64
	// Layers is the number of layers subscribed (QoS).
	Layers int
	// Deadline returns the playback deadline of a segment.
	Deadline func(seq uint64) time.Time
	// Pending tells whether a chunk is already requested.
	Pending func(c Chunk) bool
	// ChunkSize estimates the bytes of a chunk of a layer.
	ChunkSize func(layer int) int
	// ServerAllowed tells whether the server may be asked for a chunk that
	// no other partner holds yet (the engine staggers these requests).
	ServerAllowed func(c Chunk) bool
	// StrictServer asks the server only for chunks ServerAllowed accepts,
	// never as the fallback of late or urgent chunks (the ablation
	// "without server partnership").
	StrictServer bool
	// Partners are the candidates, in any order.
	Partners []Partner
	// RandomFirst orders non-urgent chunks randomly (a newly joined node).
	RandomFirst bool
	// Urgent is the slack under which a chunk is urgent [DefaultUrgent].
	Urgent time.Duration
	// Pipeline is how far ahead, in time, a partner's queue may reach
	// (default 1s): it bounds in-flight requests per partner by its rate.
	Pipeline time.Duration
	// MaxInFlightBytes bounds all outstanding requests (0: no bound).
	MaxInFlightBytes int
	// InFlightBytes is what is outstanding already; LayerBytes the same
	// per layer (MaxInFlightBytes bounds a chunk's layer and those below).
	InFlightBytes int
	LayerBytes    [MaxLayers]int
	// MinSlack skips chunks due sooner than this: they cannot arrive in
	// time behind what the download link already carries (0: none).
	MinSlack time.Duration
	// Rand breaks ties.
	Rand *rand.Rand
}

// Assignment is one request to send.
type Assignment struct {
	Chunk
	// Partner indexes Input.Partners.
	Partner int
}

type candidate struct {
	Chunk
	deadline time.Time
	urgent   bool
	rarity   int
	tie      uint32
	// needsBelow: the layer below is a candidate of this round, so this
	// one is asked for only if that one is.
	needsBelow bool
}

// Scheduler holds reusable buffers; the zero value is ready.
type Scheduler struct {
	cands    []candidate
	assigned map[Chunk]struct{}
}

// MaxLayers is the most layers a stream has (wire.MaxLayers).
const MaxLayers = 8

// below sums the bytes of layers 0..l.
func below(b *[MaxLayers]int, l int) int {
	n := 0
	for i := 0; i <= l && i < MaxLayers; i++ {
		n += b[i]
	}
	return n
}

const defaultRateGuess = 64 << 10 // bytes/s assumed for an unmeasured partner

// slots returns how many requests a partner may have outstanding.
func slots(p *Partner, pipeline time.Duration, chunk int) int {
	if p.Server {
		return 6
	}
	rate := p.Rate
	if rate <= 0 {
		return 2
	}
	n := int(rate * (pipeline + p.RTT).Seconds() / float64(max(chunk, 1)))
	return min(max(n, 1), 16)
}

// DefaultUrgent is the slack under which a chunk is urgent: it goes
// first, by deadline, and may come from the server partner. The one home
// of this default (engine.Config.Urgent takes it too); 1.5 s is what the
// simulator's figures were measured with.
const DefaultUrgent = 1500 * time.Millisecond

// Schedule appends the requests to send now to out and returns it.
func (s *Scheduler) Schedule(in *Input, out []Assignment) []Assignment {
	if in.Urgent <= 0 {
		in.Urgent = DefaultUrgent
	}
	if in.Pipeline <= 0 {
		in.Pipeline = time.Second
	}
	s.cands = s.cands[:0]
	for seq := in.From; seq <= in.To && seq >= in.From; seq++ {
		dl := in.Deadline(seq)
		if !dl.After(in.Now) || dl.Sub(in.Now) < in.MinSlack {
			continue // too late to matter
		}
		// An upper layer is useless without the ones below: it is a
		// candidate only when the layer below is held, in flight or a
		// candidate (then only if that one is assigned, needsBelow).
		held := true
		for l := 0; l < in.Layers; l++ {
			c := Chunk{Seq: seq, Layer: l}
			if in.Have.Has(seq, l) || in.Pending(c) {
				held = true
				continue
			}
			holders := 0
			for i := range in.Partners {
				if p := &in.Partners[i]; p.Map != nil && p.Map.Has(seq, l) {
					holders++
				}
			}
			if holders == 0 {
				break // nobody holds it: no layer above is a candidate
			}
			s.cands = append(s.cands, candidate{Chunk: c, deadline: dl, urgent: dl.Sub(in.Now) < in.Urgent,
				rarity: holders, tie: in.Rand.Uint32(), needsBelow: !held})
			held = false
		}
	}
	slices.SortFunc(s.cands, func(a, b candidate) int { return compare(&a, &b, in.RandomFirst) })

	if s.assigned == nil {
		s.assigned = make(map[Chunk]struct{})
	}
	clear(s.assigned)
	layerBytes := in.LayerBytes
	for i := range s.cands {
		c := &s.cands[i]
		if c.needsBelow {
			if _, ok := s.assigned[Chunk{Seq: c.Seq, Layer: c.Layer - 1}]; !ok {
				continue
			}
		}
		size := in.ChunkSize(c.Layer)
		// The bound counts what is outstanding of this layer and those
		// below: enhancement chunks never hold back a base chunk.
		if in.MaxInFlightBytes > 0 && below(&layerBytes, c.Layer)+size > in.MaxInFlightBytes && !c.urgent {
			continue
		}
		p := pick(in, c, size)
		if p < 0 {
			continue
		}
		pp := &in.Partners[p]
		pp.InFlight++
		pp.InFlightBytes += size
		if c.Layer < MaxLayers {
			pp.LayerBytes[c.Layer] += size
			layerBytes[c.Layer] += size
		}
		s.assigned[c.Chunk] = struct{}{}
		out = append(out, Assignment{Chunk: c.Chunk, Partner: p})
	}
	return out
}

// compare orders candidates: urgent chunks by deadline then layer; the rest
// low layer first, then rarest first, then earliest deadline — or, for a
// new node, low layer first then random.
func compare(a, b *candidate, randomFirst bool) int {
	if a.urgent != b.urgent {
		if a.urgent {
			return -1
		}
		return 1
	}
	if a.urgent {
		if c := a.deadline.Compare(b.deadline); c != 0 {
			return c
		}
		return a.Layer - b.Layer
	}
	if a.Layer != b.Layer {
		return a.Layer - b.Layer
	}
	if !randomFirst {
		if a.rarity != b.rarity {
			return a.rarity - b.rarity
		}
		if c := a.deadline.Compare(b.deadline); c != 0 {
			return c
		}
	}
	switch {
	case a.tie < b.tie:
		return -1
	case a.tie > b.tie:
		return 1
	}
	return 0
}

// pick chooses the partner that delivers the chunk earliest; the server
// only when no other partner can make the deadline (or none holds it and
// the engine allows it).
func pick(in *Input, c *candidate, size int) int {
	best, server := -1, -1
	var bestETA time.Time
	for i := range in.Partners {
		p := &in.Partners[i]
		if p.Unavailable || p.Map == nil || !p.Map.Has(c.Seq, c.Layer) {
			continue
		}
		if p.InFlight >= slots(p, in.Pipeline, size) {
			continue
		}
		if p.Server {
			server = i
			continue
		}
		rate := p.Rate
		if rate <= 0 {
			rate = defaultRateGuess
		}
		eta := in.Now.Add(p.RTT + time.Duration(float64(below(&p.LayerBytes, c.Layer)+size)/rate*float64(time.Second)))
		if best < 0 || eta.Before(bestETA) {
			best, bestETA = i, eta
		}
	}
	if best >= 0 && bestETA.Before(c.deadline) {
		return best
	}
	// The server is the fallback of the base layer only: an upper layer
	// late or missing at the partners is not worth its upload (QoS drops
	// what the swarm cannot carry); only its seeds fetch upper layers.
	if server >= 0 && (in.StrictServer || c.Layer > 0) {
		if in.ServerAllowed != nil && in.ServerAllowed(c.Chunk) {
			return server
		}
		return best
	}
	if server >= 0 {
		if best >= 0 || c.urgent || in.ServerAllowed == nil || in.ServerAllowed(c.Chunk) {
			return server
		}
		return -1
	}
	return best // late, but the best there is
}
