package engine

import (
	"time"

	"github.com/coopstreaming/coop/peerproto/partners"
	"github.com/coopstreaming/coop/peerproto/wire"
)

// Tracker is the server partner's directory of its swarm: who is in it
// and which peers to hand a newcomer as candidates. It is server policy,
// so its backends live with the server (plugin/tracker: in memory; later
// one shared by several origins). The engine tells it who joined and
// left and asks it for candidates; calls come from the engine's driver
// goroutine, one at a time.
type Tracker interface {
	// Join records a peer that connected; view reads its live state (valid
	// until Leave).
	Join(id wire.PeerID, view partners.Known)
	// Leave forgets a peer.
	Leave(id wire.PeerID)
	// Candidates answers a peer's GetCandidates.
	Candidates(q partners.Query) []wire.Candidate
}

// known is a partner as candidate ranking sees it (each partner holds
// one, partner.view, so that ranking a whole swarm allocates nothing).
type known struct {
	p *partner
	e *Engine
}

func (k known) Addr() string { return k.p.hello.ListenAddr }

// Upload is what the peer reported, else what it declared in its Hello,
// else what we measured sending to it.
func (k known) Upload() float64 {
	up := float64(k.p.reported.UploadRate)
	if up == 0 {
		up = float64(k.p.hello.UploadCap)
	}
	if up == 0 {
		up = k.p.sent.Rate(k.e.env.Now())
	}
	return up
}

func (k known) RTT() time.Duration { return k.p.rtt.Smoothed(candidateRTTDefault) }

// Playing implements partners.Player: the peer reported a continuity of
// at least playingPermille.
func (k known) Playing() bool { return k.p.reported.ContinuityPermille >= playingPermille }

// playingPermille is the reported continuity (‰) from which a peer counts
// as playing when candidates are ranked.
const playingPermille = 900

func (k known) Partners() int { return int(k.p.reported.Partners) }

// candidateRTTDefault is the RTT assumed for a partner not yet measured
// when ranking candidates.
const candidateRTTDefault = 50 * time.Millisecond

// candidatesFor answers GetCandidates: the server asks its Tracker (by
// default it ranks its own partners — every peer it serves — by reported
// upload and closeness: similar RTT to the server); a peer shares its own
// partners, ranked the same way.
func (e *Engine) candidatesFor(asker *partner, n int) []wire.Candidate {
	q := partners.Query{Asker: asker.id, AskerRTT: asker.rtt.Smoothed(candidateRTTDefault), N: n,
		MaxPartners: e.cfg.MaxPartners, Rand: e.env.Rand()}
	if e.IsServer() && e.cfg.Tracker != nil {
		return e.cfg.Tracker.Candidates(q)
	}
	list := e.list() // in ID order, as the draws require
	return partners.CandidatesOf(len(list), func(i int) (wire.PeerID, partners.Known) {
		p := list[i]
		if p.server {
			return p.id, nil // the server partner is never a candidate
		}
		return p.id, p.view
	}, q)
}

// candidateListLen is how many candidates the node answers a request for
// n with: the server halves its lists while its uplink is backed up (a
// join storm: at N = 5000 joining within 5 s, lists of 16 took its
// uplink for seconds and its pushes to the roots expired; lists of 8
// always cost quality at N = 1000, 0.52 -> 0.35).
func (e *Engine) candidateListLen(n int) int {
	if e.IsServer() && e.env.UploadBacklog() > e.cfg.MaxBacklog/2 {
		return min(n, busyCandidates)
	}
	return n
}
