package rtcnode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/coopstreaming/coop/peerproto/wire"
)

// Signalling message types (docs/webrtc.md "Messages").
const (
	TypeJoin      = "join"
	TypeJoined    = "joined"
	TypeOffer     = "offer"
	TypeAnswer    = "answer"
	TypeCandidate = "candidate"
	TypeBye       = "bye"
	TypeError     = "error"
)

// ServerName is the signalling name of the server partner.
const ServerName = "server"

// Limits of a signalling message.
const (
	// MaxMessageSize bounds one signalling message (a WebSocket text
	// frame).
	MaxMessageSize = 16 << 10
	maxSDP         = 12 << 10
	maxString      = 1024
	maxToken       = 4096
	maxICEServers  = 8
	maxURLs        = 8
)

// Error codes of the error message.
const (
	CodeBadMessage    = "bad-message"
	CodeTooLarge      = "too-large"
	CodeRate          = "rate"
	CodeBadToken      = "bad-token"
	CodeUnknownStream = "unknown-stream"
	CodePeerInUse     = "peer-in-use"
	CodeUnknownPeer   = "unknown-peer"
	CodeFull          = "full"
	CodeTimeout       = "timeout"
)

// ErrBadMessage marks a signalling message that breaks the format.
var ErrBadMessage = errors.New("rtcnode: bad signalling message")

// Message is one signalling message; which fields are set depends on
// Type.
type Message struct {
	Type string `json:"type"`
	// join
	Stream string `json:"stream,omitempty"`
	Peer   string `json:"peer,omitempty"`
	Token  string `json:"token,omitempty"`
	// joined
	Server     string      `json:"server,omitempty"`
	ICEServers []ICEServer `json:"iceServers,omitempty"`
	// offer, answer, candidate, bye (and error's session)
	To      string `json:"to,omitempty"`
	From    string `json:"from,omitempty"`
	Session string `json:"session,omitempty"`
	SDP     string `json:"sdp,omitempty"`
	// Candidate is an RTCIceCandidateInit, or null: the end of candidates.
	Candidate json.RawMessage `json:"candidate,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	// error
	Code        string `json:"code,omitempty"`
	Description string `json:"message,omitempty"`
}

// FormatPeer names a peer id in the signalling: 16 lowercase hex digits.
func FormatPeer(id wire.PeerID) string { return fmt.Sprintf("%016x", uint64(id)) }

// ParsePeer reads a peer id named by FormatPeer; 0 is not an id.
func ParsePeer(s string) (wire.PeerID, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("%w: peer id %q is not 16 hex digits", ErrBadMessage, s)
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return 0, fmt.Errorf("%w: peer id %q is not lowercase hex", ErrBadMessage, s)
		}
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%w: peer id %q", ErrBadMessage, s)
	}
	return wire.PeerID(v), nil
}

// validSession: a session id has the form of a peer id.
func validSession(s string) bool {
	_, err := ParsePeer(s)
	return err == nil
}

// validName is a peer id or "server".
func validName(s string) bool {
	if s == ServerName {
		return true
	}
	_, err := ParsePeer(s)
	return err == nil
}

// Decode reads one signalling message: at most MaxMessageSize bytes of
// one JSON object, with a known type and that type's fields in range.
// Unknown fields are ignored; trailing data is an error.
func Decode(b []byte) (*Message, error) {
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadMessage, len(b), MaxMessageSize)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	var m Message
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	if d.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrBadMessage)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the fields of the message's type.
func (m *Message) Validate() error {
	bad := func(what string) error { return fmt.Errorf("%w: %s: %s", ErrBadMessage, m.Type, what) }
	if len(m.Reason) > maxString || len(m.Description) > maxString || len(m.Code) > 64 {
		return bad("string too long")
	}
	switch m.Type {
	case TypeJoin:
		if m.Stream == "" || len(m.Stream) > maxString {
			return bad("stream")
		}
		if _, err := ParsePeer(m.Peer); err != nil {
			return err
		}
		if len(m.Token) > maxToken {
			return bad("token too long")
		}
	case TypeJoined:
		if !validName(m.Server) || len(m.ICEServers) > maxICEServers {
			return bad("server or iceServers")
		}
		for _, s := range m.ICEServers {
			if len(s.URLs) == 0 || len(s.URLs) > maxURLs || len(s.Username) > maxString || len(s.Credential) > maxString {
				return bad("ice server")
			}
			for _, u := range s.URLs {
				if u == "" || len(u) > maxString {
					return bad("ice server url")
				}
			}
		}
	case TypeOffer, TypeAnswer, TypeCandidate, TypeBye:
		if m.To == "" && m.From == "" {
			return bad("no to or from")
		}
		if (m.To != "" && !validName(m.To)) || (m.From != "" && !validName(m.From)) || !validSession(m.Session) {
			return bad("to, from or session")
		}
		switch m.Type {
		case TypeOffer, TypeAnswer:
			if m.SDP == "" || len(m.SDP) > maxSDP {
				return bad("sdp")
			}
		case TypeCandidate:
			if err := validCandidate(m.Candidate); err != nil {
				return bad(err.Error())
			}
		}
	case TypeError:
		if m.Code == "" {
			return bad("no code")
		}
		if m.Session != "" && !validSession(m.Session) {
			return bad("session")
		}
	default:
		return fmt.Errorf("%w: unknown type %q", ErrBadMessage, m.Type)
	}
	return nil
}

// validCandidate accepts null, absent, or an object whose candidate is a
// string of at most 1 KiB.
func validCandidate(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var c struct {
		Candidate     *string `json:"candidate"`
		SDPMid        *string `json:"sdpMid"`
		SDPMLineIndex *uint16 `json:"sdpMLineIndex"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("candidate: %w", err)
	}
	if c.Candidate == nil || len(*c.Candidate) > maxString || (c.SDPMid != nil && len(*c.SDPMid) > 64) {
		return errors.New("candidate field")
	}
	return nil
}

// Encode marshals the message (it never fails for a valid message).
func (m *Message) Encode() []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("rtcnode: encode %s: %v", m.Type, err)) // only marshallable fields
	}
	return b
}
