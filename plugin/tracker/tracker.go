// Package tracker is the server partner's directory of a swarm, in
// memory (one origin, the default backend of engine.Tracker): who is in
// the swarm and which peers to hand a peer that asks for candidates. The
// ranking itself is partners.Candidates, the one the peers use for their
// own gossip; a backend shared by several origins keeps the membership
// elsewhere and ranks the same way.
package tracker

import (
	"cmp"
	"slices"

	"github.com/coopstreaming/coop/peerproto/engine"
	"github.com/coopstreaming/coop/peerproto/partners"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// Memory is the in-memory tracker of one swarm. It is used from the
// engine's driver goroutine only (engine.Tracker), so it has no lock.
type Memory struct {
	members []memberView // sorted by ID: the ranking's order
}

type memberView struct {
	id   wire.PeerID
	view partners.Known
}

var _ engine.Tracker = (*Memory)(nil)

// NewMemory returns an empty tracker.
func NewMemory() *Memory { return &Memory{} }

// find is where id is, or would be, in members.
func (m *Memory) find(id wire.PeerID) (int, bool) {
	return slices.BinarySearchFunc(m.members, id, func(x memberView, id wire.PeerID) int { return cmp.Compare(x.id, id) })
}

// Join records a peer that connected (a reconnected peer's new view
// replaces the old).
func (m *Memory) Join(id wire.PeerID, view partners.Known) {
	if i, found := m.find(id); found {
		m.members[i].view = view
	} else {
		m.members = slices.Insert(m.members, i, memberView{id, view})
	}
}

// Leave forgets a peer.
func (m *Memory) Leave(id wire.PeerID) {
	if i, found := m.find(id); found {
		m.members = slices.Delete(m.members, i, i+1)
	}
}

// Len is the number of peers known.
func (m *Memory) Len() int { return len(m.members) }

// Candidates ranks every known peer but the asker (in ID order, so the
// random draws are the same for the same swarm).
func (m *Memory) Candidates(q partners.Query) []wire.Candidate {
	return partners.CandidatesOf(len(m.members), func(i int) (wire.PeerID, partners.Known) {
		return m.members[i].id, m.members[i].view
	}, q)
}
