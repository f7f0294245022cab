// Package tracker is the server partner's directory of a swarm, in
// memory (one origin, the default backend of engine.Tracker): who is in
// the swarm and which peers to hand a peer that asks for candidates. The
// ranking itself is partners.Candidates, the one the peers use for their
// own gossip; a backend shared by several origins keeps the membership
// elsewhere and ranks the same way.
package tracker

import (
	"slices"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/partners"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// Memory is the in-memory tracker of one swarm. It is used from the
// engine's driver goroutine only (engine.Tracker), so it has no lock.
type Memory struct {
	peers map[wire.PeerID]partners.Known
	ids   []wire.PeerID // the keys of peers, sorted (the ranking's order)
}

var _ engine.Tracker = (*Memory)(nil)

// NewMemory returns an empty tracker.
func NewMemory() *Memory { return &Memory{peers: make(map[wire.PeerID]partners.Known)} }

// Join records a peer that connected.
func (m *Memory) Join(id wire.PeerID, view partners.Known) {
	if i, found := slices.BinarySearch(m.ids, id); !found {
		m.ids = slices.Insert(m.ids, i, id)
	}
	m.peers[id] = view
}

// Leave forgets a peer.
func (m *Memory) Leave(id wire.PeerID) {
	if i, found := slices.BinarySearch(m.ids, id); found {
		m.ids = slices.Delete(m.ids, i, i+1)
	}
	delete(m.peers, id)
}

// Len is the number of peers known.
func (m *Memory) Len() int { return len(m.peers) }

// Candidates ranks every known peer but the asker (in ID order, so the
// random draws are the same for the same swarm).
func (m *Memory) Candidates(q partners.Query) []wire.Candidate {
	return partners.Candidates(m.ids, func(id wire.PeerID) partners.Known { return m.peers[id] }, q)
}
