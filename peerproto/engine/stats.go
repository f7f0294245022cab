package engine

import (
	"time"

	"github.com/coopstreaming/coop/peerproto/playback"
)

// PlayRecord is one segment reaching its playback deadline.
type PlayRecord struct {
	Seq uint64
	At  time.Time
	// Layers is the number of contiguous layers present (0: base missed).
	Layers int
	// Subscribed is how many layers QoS asked for; SegLayers how many the
	// segment has.
	Subscribed, SegLayers int
}

// Stats are a node's counters, with the definitions of docs/metrics.md.
type Stats struct {
	// Layers is the stream's layer count L.
	Layers int
	// Started tells whether playback started; StartupDelay is first frame
	// played minus join.
	Started      bool
	StartupDelay time.Duration
	// Due counts segments due since playback started; BaseOnTime those
	// whose base layer arrived by the deadline.
	Due, BaseOnTime uint64
	// LayerDue and LayerOnTime count subscribed chunks per layer.
	LayerDue, LayerOnTime [playback.MaxLayers]uint64
	// QualitySum is the sum over played segments of layers played ÷ L.
	QualitySum float64
	// Useful bytes by source, and wasted bytes.
	UsefulFromServer, UsefulFromPeers uint64
	DuplicateBytes, LateBytes         uint64
	// Media payload and everything else, both directions.
	MediaBytesIn, MediaBytesOut     uint64
	ControlBytesIn, ControlBytesOut uint64
	// ControlOutByType is ControlBytesOut by message type (wire.Type;
	// Data: its header), to see what a node's control traffic is made of.
	ControlOutByType [32]uint64
	// MediaInByLayer is media payload received per layer (the first
	// four), by fate (the media* constants: pushed and kept, pulled and
	// kept, late, duplicate) — where each layer's delivery succeeds or
	// fails.
	MediaInByLayer [4][4]uint64
	// Events.
	Timeouts, RejectedBusy, ServedChunks uint64
	BadData, Banned, Unverifiable        uint64
	// PushLayers is, per sub-stream, the layers subscribed to and those
	// the parent grants (a snapshot when Stats is called).
	PushLayers               [][2]int
	Evictions, LayerSwitches uint64
	LastBan                  string
	// Late data diagnostics.
	LateFromServer, LateFromPeers, LateUnrequested uint64
	LateReqAge, LateReqSlack                       time.Duration
	// Epochs counts stream restarts the peer followed (new epoch).
	Epochs uint64
	// StaleEpoch counts chunks whose manifest names another epoch.
	StaleEpoch uint64
	// Accusations counts Accuse messages the server received (counted,
	// never acted on).
	Accusations uint64
	// Probes counts chunks the server asked of accused partners to check
	// them itself.
	Probes uint64
	// SkippedBacklog counts times a queued request was passed over
	// because its requester's own send queue was full.
	SkippedBacklog uint64
	// Hedges counts base-layer chunks also asked of the server because
	// a peer was late.
	Hedges uint64
	// Subscribes counts sub-stream subscriptions asked (push.go);
	// PushParentsReplaced those ended because the parent lagged; Pushes
	// the chunks queued for children and PushesDropped those dropped
	// after waiting past pushTTL (the children repair them).
	Subscribes, PushParentsReplaced, Pushes, PushesDropped uint64
	// PushParentsSilent counts parents replaced for never pushing;
	// DuplicatePushBytes the pushed bytes that arrived already held.
	PushParentsSilent, DuplicatePushBytes uint64
	// PushesSkipped counts pushes not sent because the child announced
	// the chunk first.
	PushesSkipped uint64
	// PushPreempted counts children a full parent dropped for a
	// subscriber with more upload (push.Preempt).
	PushPreempted uint64
	// PushedBytesIn counts media bytes that arrived by push.
	PushedBytesIn uint64
	// PushNarrowLink counts times a peer turned to pull only because its
	// measured download was narrow (push.go pullOnly).
	PushNarrowLink uint64

	// ControlShed counts control messages the server dropped over its
	// control budget (Config.ControlShare).
	ControlShed uint64
	// Base-layer miss diagnostics.
	MissInFlightServer, MissInFlightPeer, MissNoHolder, MissServerOnly, MissNotRequested uint64
	// PlayedAt lists recent playback events (bounded).
	PlayedAt []PlayRecord
}

// RecordDeadline counts a segment's playback deadline with
// playback.Tally (the one definition of continuity and quality, shared
// with the lab's baselines): present contiguous layers of segLayers due,
// total the stream's layer count.
func (s *Stats) RecordDeadline(present, segLayers, total int) {
	t := s.tally()
	t.Record(present, segLayers, total)
	s.setTally(t)
}

func (s *Stats) tally() playback.Tally {
	return playback.Tally{Started: s.Started, Due: s.Due, BaseOnTime: s.BaseOnTime,
		LayerDue: s.LayerDue, LayerOnTime: s.LayerOnTime, QualitySum: s.QualitySum}
}

func (s *Stats) setTally(t playback.Tally) {
	s.Due, s.BaseOnTime, s.QualitySum = t.Due, t.BaseOnTime, t.QualitySum
	s.LayerDue, s.LayerOnTime = t.LayerDue, t.LayerOnTime
}

// Continuity is the base-layer continuity index.
func (s *Stats) Continuity() float64 {
	t := s.tally()
	return t.Continuity()
}

// Quality is the mean share of layers played.
func (s *Stats) Quality() float64 {
	t := s.tally()
	return t.Quality()
}

// Offload is the share of useful media bytes that came from peers.
func (s *Stats) Offload() float64 {
	total := s.UsefulFromServer + s.UsefulFromPeers
	if total == 0 {
		return 0
	}
	return float64(s.UsefulFromPeers) / float64(total)
}

// ControlOverhead is non-media bytes ÷ media bytes, both directions.
func (s *Stats) ControlOverhead() float64 {
	media := s.MediaBytesIn + s.MediaBytesOut
	if media == 0 {
		return 0
	}
	return float64(s.ControlBytesIn+s.ControlBytesOut) / float64(media)
}

// Stats returns a copy of the node's counters.
func (e *Engine) Stats() Stats {
	st := e.stats
	st.PlayedAt = append([]PlayRecord(nil), e.stats.PlayedAt...)
	st.PushLayers = make([][2]int, 0, e.push.k)
	for k := 0; k < e.push.k; k++ {
		st.PushLayers = append(st.PushLayers, [2]int{e.push.subs[k].want, e.push.subs[k].layers})
	}
	return st
}

// SwarmStats is the server partner's view of its swarm, from the peers'
// reports.
type SwarmStats struct {
	// Peers is the number of connected peers.
	Peers int
	// FromServer and FromPeers sum the useful media bytes peers report,
	// by source, departed peers included.
	FromServer, FromPeers uint64
	// Continuity is the mean reported base-layer continuity of connected
	// peers that have reported (0 when none has).
	Continuity float64
	// Banned counts nodes the server banned: on data it received and
	// checked itself, never on a peer's word.
	Banned uint64
}

// Swarm returns the server partner's view of its swarm (zero on a peer).
func (e *Engine) Swarm() SwarmStats {
	if !e.IsServer() {
		return SwarmStats{}
	}
	s := SwarmStats{FromServer: e.departed.FromServer, FromPeers: e.departed.FromPeers, Banned: e.stats.Banned}
	reporting := 0
	for _, p := range e.list() {
		if p.server {
			continue
		}
		s.Peers++
		s.FromServer += p.reported.FromServer
		s.FromPeers += p.reported.FromPeers
		if p.reported.ContinuityPermille > 0 || p.reported.FromServer+p.reported.FromPeers > 0 {
			reporting++
			s.Continuity += float64(p.reported.ContinuityPermille) / 1000
		}
	}
	if reporting > 0 {
		s.Continuity /= float64(reporting)
	}
	return s
}

// HasServer tells whether a peer is connected to its server partner.
func (e *Engine) HasServer() bool { return e.serverID != 0 }

// Fates of received media in Stats.MediaInByLayer.
const (
	mediaPushed = iota
	mediaPulled
	mediaLate
	mediaDuplicate
)

// addMediaIn counts n bytes of a layer's media by fate (layers past the
// first four are not counted).
func (s *Stats) addMediaIn(layer, fate, n int) {
	if layer < len(s.MediaInByLayer) {
		s.MediaInByLayer[layer][fate] += uint64(n)
	}
}
