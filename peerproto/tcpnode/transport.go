package tcpnode

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// rtcPrefix marks a WebRTC address in Hello.ListenAddr and Candidate.Addr
// (docs/webrtc.md: "rtc:" WebRTC only, "rtc:host:port" WebRTC or TCP;
// rtcnode.AddrPrefix).
const rtcPrefix = "rtc:"

// Transport is a second transport beside TCP (peerproto/rtcnode): it
// dials the partners whose address it handles and names the address
// partners are told. Its inbound connections reach the node through
// HandOff(conn, nil, nil).
type Transport interface {
	// Handles tells whether the transport dials addr.
	Handles(addr string) bool
	// DialPeer connects to the candidate; the connection then carries
	// the handshake as a TCP one does.
	DialPeer(ctx context.Context, c wire.Candidate) (net.Conn, error)
	// Advertise turns the node's TCP listen address ("": none) into the
	// address partners are told.
	Advertise(listen string) string
}

// errNoTCP: a WebRTC-only candidate, and no transport that speaks it.
var errNoTCP = errors.New("tcpnode: candidate is reachable over WebRTC only")

// dialConn connects to a candidate: through the Transport when it handles
// the address, else over TCP (the TCP part of an "rtc:host:port" address).
func (n *Node) dialConn(c wire.Candidate) (net.Conn, error) {
	if n.Transport != nil && n.Transport.Handles(c.Addr) {
		return n.Transport.DialPeer(n.ctx, c)
	}
	addr := c.Addr
	if strings.HasPrefix(addr, rtcPrefix) {
		if addr = addr[len(rtcPrefix):]; addr == "" {
			return nil, errNoTCP
		}
	}
	d := net.Dialer{Timeout: n.HandshakeTimeout}
	return d.DialContext(n.ctx, "tcp", addr)
}

// dialableAddr is dialable for TCP and WebRTC addresses: the TCP part of
// "rtc:host:port" gets the remote host when unspecified (a WebRTC
// connection's remote address is its selected UDP candidate).
func dialableAddr(listen string, remote net.Addr) string {
	if u, ok := remote.(interface{ UDPAddr() *net.UDPAddr }); ok {
		if ua := u.UDPAddr(); ua != nil {
			remote = &net.TCPAddr{IP: ua.IP, Port: ua.Port}
		}
	}
	if rest, ok := strings.CutPrefix(listen, rtcPrefix); ok {
		if rest == "" {
			return listen
		}
		return rtcPrefix + dialable(rest, remote)
	}
	return dialable(listen, remote)
}
