package tcpnode

import (
	"errors"
	"net"
	"time"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// Defaults of the server failover (Node.ServerRetryMax, Node.MaxRedirects).
const (
	// DefaultServerRetryMax caps the pause between rounds of attempts.
	DefaultServerRetryMax = 4 * time.Second
	// DefaultMaxRedirects bounds the redirects followed in a row without
	// being admitted (a loop between stale nodes ends there).
	DefaultMaxRedirects = 4
	// minServerLife: a server connection that ends sooner than this
	// counts as a failed attempt (a node that admits and drops at once
	// must not be redialled in a tight loop).
	minServerLife = 5 * time.Second
)

// serverState is the server partner's failover state; event loop only.
type serverState struct {
	dialing bool
	// next is the index in the address list of the next attempt.
	next int
	// failed counts the failed attempts of the current round; rounds
	// counts the whole rounds that failed in a row (the backoff).
	failed, rounds int
	// redirect is the address a redirect named (tried next), redirects
	// the redirects followed in a row.
	redirect  string
	redirects int
	// notBefore holds the next attempt back (backoff).
	notBefore time.Time
}

// ServerAddr is the address of the server partner the node is connected
// to ("" when it has none).
func (n *Node) ServerAddr() string {
	if p := n.serverAddr.Load(); p != nil {
		return *p
	}
	return ""
}

// serverList is Server then Servers, without repeats.
func (n *Node) serverList() []string {
	list := make([]string, 0, 1+len(n.Servers))
	seen := map[string]bool{"": true}
	for _, a := range append([]string{n.Server}, n.Servers...) {
		if !seen[a] {
			seen[a] = true
			list = append(list, a)
		}
	}
	return list
}

// keepServer dials the server partner when it is not connected: the
// addresses in turn (the first that admits the node wins), a redirect's
// address first when one came, pausing with a growing backoff after a
// round in which every address failed.
func (n *Node) keepServer() {
	s := &n.srv
	if len(n.servers) == 0 || s.dialing || n.eng.HasServer() || time.Now().Before(s.notBefore) {
		return
	}
	addr := s.redirect
	s.redirect = ""
	if addr == "" {
		addr = n.servers[s.next%len(n.servers)]
	}
	s.dialing = true
	n.dialServer(addr)
}

// dialServer dials a server address and runs the connection; the
// outcome comes back to the event loop (serverResult, serverEnded).
func (n *Node) dialServer(addr string) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		var admitted time.Time
		defer func() {
			n.post(func() { n.serverEnded(addr, admitted) })
		}()
		d := net.Dialer{Timeout: n.HandshakeTimeout}
		nc, err := d.DialContext(n.ctx, "tcp", addr)
		if err != nil {
			n.post(func() { n.eng.DialFailed(0) })
			if n.OnAdmitError != nil {
				n.OnAdmitError(addr, err)
			}
			n.post(func() { n.serverResult(addr, err) })
			n.Log.Debug("server dial failed", "addr", addr, "err", err)
			return
		}
		n.handshake(nc, false, 0, nil, nil, func(err error) {
			if err == nil {
				admitted = time.Now()
			}
			n.post(func() { n.serverResult(addr, err) })
		})
	}()
}

// serverResult runs on the event loop when an attempt is admitted (err
// nil) or refused or failed.
func (n *Node) serverResult(addr string, err error) {
	s := &n.srv
	if n.OnServer != nil {
		n.OnServer(addr, err)
	}
	if err == nil {
		s.failed, s.rounds, s.redirects = 0, 0, 0
		n.serverAddr.Store(&addr)
		n.counters.ServerConnects.Add(1)
		n.Log.Info("server partner connected", "addr", addr)
		return
	}
	var rej *RejectedError
	if errors.As(err, &rej) && rej.Reason == wire.RejectRedirect && rej.Addr != "" && rej.Addr != addr &&
		s.redirects < n.MaxRedirects {
		s.redirects++
		s.redirect = rej.Addr
		n.counters.ServerRedirects.Add(1)
		n.Log.Info("server redirected us", "from", addr, "to", rej.Addr)
		return
	}
	n.serverFailed()
}

// serverFailed moves on to the next address; after a whole round of
// failures it holds the next attempt back for ServerRetry, doubling per
// failed round up to ServerRetryMax (±25% jitter, so the peers of a lost
// node do not all come back at once).
func (n *Node) serverFailed() {
	s := &n.srv
	s.next++
	s.failed++
	if s.failed < len(n.servers) {
		return // the next address at once
	}
	s.failed, s.redirects = 0, 0
	s.rounds++
	pause := n.ServerRetry << min(s.rounds-1, 16)
	if pause <= 0 || pause > n.ServerRetryMax {
		pause = n.ServerRetryMax
	}
	pause = time.Duration(float64(pause) * (0.75 + 0.5*n.rng.Float64()))
	s.notBefore = time.Now().Add(pause)
}

// serverEnded runs on the event loop when a server attempt is over: a
// failed one, or an admitted connection that closed (admitted: when it
// was admitted). A lost server makes the node try the next address.
func (n *Node) serverEnded(addr string, admitted time.Time) {
	s := &n.srv
	s.dialing = false
	if admitted.IsZero() {
		return
	}
	n.serverAddr.Store(nil)
	n.Log.Info("server partner lost; trying the next address", "addr", addr)
	if time.Since(admitted) < minServerLife {
		n.serverFailed()
		return
	}
	s.next++
	s.failed = 0
}
