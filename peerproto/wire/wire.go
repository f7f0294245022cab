// Package wire is the CoopStreaming peer protocol codec: typed messages in
// length-prefixed frames with a hard size limit. It is pure (no I/O beyond
// an io.Reader/io.Writer) and media-agnostic. The protocol is specified in
// docs/peerproto.md.
//
// A frame is a 4-byte big-endian length N (1 <= N <= MaxFrameSize) followed
// by N bytes: a 1-byte message type and the message body. Decoders reject
// oversized, truncated and trailing-byte frames with typed errors.
package wire

import (
	"errors"
	"fmt"
)

// ProtocolID names the protocol in the handshake.
const ProtocolID = "/coop/2"

// Version is the protocol version this package speaks. Version 2 added
// the stream epoch and layer count to Welcome and the epoch to manifests.
const Version = 2

// MaxFrameSize bounds a frame (type byte + body); only Data frames come
// near it, every other type has a far smaller limit (MaxFrameFor).
const MaxFrameSize = 8 << 20

// Limits inside messages.
const (
	MaxStringLen   = 1024
	MaxLayers      = 8
	MaxWindow      = 1024 // segments in a buffer map
	MaxHaves       = 4096
	MaxCandidates  = 64
	MaxManifestLen = 4096
	// MaxPieces bounds the pieces of a segment (manifest.MaxPieces).
	MaxPieces = 64
)

// Feature bits announced in the handshake.
const (
	// FeatureManifest: the peer verifies signed segment manifests.
	FeatureManifest uint32 = 1 << 0
	// FeatureLayers: the peer understands layered segments.
	FeatureLayers uint32 = 1 << 1
)

// Type is a message type.
type Type uint8

// Message types.
const (
	TypeHello Type = iota + 1
	TypeWelcome
	TypeBufferMap
	TypeHave
	TypeRequest
	TypeCancel
	TypeData
	TypeReject
	TypeGetCandidates
	TypeCandidates
	TypePing
	TypePong
	TypeGoodbye
	TypeStreamHeader
	TypeReport
	TypeAccuse
	TypeSubscribe
	TypeSubscribed
	TypeHops
	typeMax
)

var typeNames = [...]string{"", "Hello", "Welcome", "BufferMap", "Have", "Request", "Cancel", "Data", "Reject",
	"GetCandidates", "Candidates", "Ping", "Pong", "Goodbye", "StreamHeader", "Report", "Accuse",
	"Subscribe", "Subscribed", "Hops"}

// String returns the type's name.
func (t Type) String() string {
	if t > 0 && t < typeMax {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Errors returned by the decoder.
var (
	ErrFrameTooLarge = errors.New("wire: frame too large")
	ErrEmptyFrame    = errors.New("wire: empty frame")
	ErrTruncated     = errors.New("wire: truncated message")
	ErrTrailing      = errors.New("wire: trailing bytes")
	ErrUnknownType   = errors.New("wire: unknown message type")
	ErrInvalid       = errors.New("wire: invalid field")
)

// Message is any protocol message.
type Message interface {
	// Type returns the message type.
	Type() Type
	appendBody(b []byte) []byte
	decodeBody(r *reader)
}

// Role says what a node is.
type Role uint8

// Roles.
const (
	RolePeer   Role = 1
	RoleServer Role = 2
)

// PeerID identifies a node in a swarm.
type PeerID uint64

// Hello opens every connection (both directions).
type Hello struct {
	Protocol   string
	Version    uint8
	Features   uint32
	Role       Role
	Stream     string
	Peer       PeerID
	ListenAddr string
	Token      string
	// UploadCap is the sender's upload capacity in bytes/s (0: unknown).
	UploadCap uint64
}

// Welcome answers a Hello: the connection is accepted.
type Welcome struct {
	Peer PeerID
	// SegmentDuration is the nominal segment duration in milliseconds.
	SegmentDurationMs uint32
	// LiveEdge is the newest segment the sender holds.
	LiveEdge uint64
	// Partners is how many partners the sender has now.
	Partners uint16
	// StreamKey is the stream's Ed25519 public key (server only; empty
	// from peers): a peer that was given no key verifies manifests with it.
	StreamKey []byte
	// Epoch names the stream instance (server only; 0 from peers): a
	// stream that restarts (new publish, origin or plugin restart) numbers
	// its segments from zero under a new epoch, and a peer that sees a new
	// epoch resets its buffer and playback clock.
	Epoch uint64
	// Layers is the stream's layer count (server only; 0: unknown).
	Layers uint8
}

// StreamKeySize is the size of an Ed25519 public key.
const StreamKeySize = 32

// BufferMap is a full buffer map: for each layer, a bitmap over segments
// Base..Base+Window-1.
type BufferMap struct {
	Base   uint64
	Window uint16
	// Bits[l] has Window bits (packed MSB first) for layer l.
	Bits [][]byte
}

// HaveEntry names one chunk.
type HaveEntry struct {
	Seq   uint64
	Layer uint8
}

// Have flags.
const (
	// HaveSeed (server to peer): fetch these chunks from the server now;
	// the peer is one of the seeds that spread a fresh segment.
	HaveSeed uint8 = 1 << 0
	// HaveUpTo: each entry names a segment's top layer; the sender holds
	// every layer of that segment from 0 to it (the server's compact
	// announcements to non-seed peers).
	HaveUpTo uint8 = 1 << 1
)

// Have is an incremental buffer map: chunks acquired since the last map.
type Have struct {
	Flags uint8
	// AgeMs is how long ago the sender acquired the newest entry, in
	// milliseconds (the server's announcements let peers place segments
	// on its clock).
	AgeMs   uint32
	Entries []HaveEntry
}

// Request flags.
const (
	// RequestManifest asks for the signed manifest along with the data.
	RequestManifest uint8 = 1 << 0
	// RequestUrgent marks a chunk close to its playback deadline.
	RequestUrgent uint8 = 1 << 1
)

// Request asks for one chunk.
type Request struct {
	Seq   uint64
	Layer uint8
	Flags uint8
	// Held names the pieces of the chunk the requester holds already
	// (bit i: piece i): the supplier sends only the others.
	Held uint64
}

// Cancel withdraws a request.
type Cancel struct {
	Seq   uint64
	Layer uint8
}

// Data carries one piece of a chunk (a request is answered with every
// piece of the chunk, in order), and the segment's signed manifest when
// the receiver may not have it.
type Data struct {
	Seq   uint64
	Layer uint8
	// Piece is the piece's index in its chunk (the manifest gives the
	// piece size and count).
	Piece    uint16
	Manifest []byte
	Payload  []byte
}

// Reject reasons.
const (
	RejectBusy     uint8 = 1
	RejectNotFound uint8 = 2
	RejectFull     uint8 = 3 // partner list full (on Hello)
	RejectAuth     uint8 = 4 // bad join token (on Hello)
	RejectBanned   uint8 = 5
	RejectVersion  uint8 = 6
	// RejectRedirect (on Hello): this node should not serve the stream
	// to the dialler (it is at its load limit); Addr names the node to
	// use instead.
	RejectRedirect uint8 = 7
)

// Reject refuses a request (or, with Seq and Layer zero, a Hello).
type Reject struct {
	Seq    uint64
	Layer  uint8
	Reason uint8
	// Addr is the node to dial instead (host:port, at most MaxStringLen
	// bytes); it is on the wire only when Reason is RejectRedirect.
	Addr string
}

// GetCandidates asks for partner candidates.
type GetCandidates struct {
	Max uint8
}

// Candidate is a possible partner.
type Candidate struct {
	Peer PeerID
	Addr string
	// UploadRate is the measured upload rate in bytes/s.
	UploadRate uint64
	// RTTMicros is the round-trip time as measured by the sender, in µs.
	RTTMicros uint32
}

// Candidates lists possible partners.
type Candidates struct {
	List []Candidate
}

// Ping asks for a Pong with the same nonce (RTT probe, keepalive).
type Ping struct{ Nonce uint64 }

// Pong answers a Ping.
type Pong struct{ Nonce uint64 }

// Goodbye closes a connection politely.
type Goodbye struct{ Reason string }

// StreamHeader carries the opaque stream header (codec parameters).
type StreamHeader struct{ Header []byte }

// Report tells the server a peer's measurements.
type Report struct {
	UploadRate   uint64 // bytes/s sent to peers
	DownloadRate uint64 // bytes/s received
	Partners     uint16
	// ContinuityPermille is the base-layer continuity x 1000.
	ContinuityPermille uint16
	MaxLayer           uint8
	// FromServer and FromPeers are the useful media bytes received so
	// far, by source (the tracker's offload figures).
	FromServer, FromPeers uint64
}

// Accuse reports a node that sent data failing verification (peer to
// server); from the server it is a verdict: ban that node.
type Accuse struct {
	Peer   PeerID
	Reason string
}

// MaxSubstreams bounds the sub-streams a stream is split into for push.
const MaxSubstreams = 16

// NoHops is the hop count of a node that has no parent on a sub-stream.
const NoHops = 255

// Subscribe asks a partner to push one sub-stream: every chunk of a
// segment whose number is Substream modulo Substreams, in the layers
// below Layers, forwarded as soon as the partner holds it. Layers 0 ends
// the subscription.
type Subscribe struct {
	Substream, Substreams, Layers uint8
}

// Subscribed answers a Subscribe: the layers the parent will push
// (0: refused, or the parent stopped pushing).
type Subscribed struct {
	Substream, Layers uint8
}

// Hops tells partners how many push hops the node is from the server on
// each sub-stream (0: the server; NoHops: no parent), so that children
// choose parents near the source and push never forms a loop.
type Hops struct {
	Hops []uint8
}

func (*Subscribe) Type() Type     { return TypeSubscribe }
func (*Subscribed) Type() Type    { return TypeSubscribed }
func (*Hops) Type() Type          { return TypeHops }
func (*Accuse) Type() Type        { return TypeAccuse }
func (*Hello) Type() Type         { return TypeHello }
func (*Welcome) Type() Type       { return TypeWelcome }
func (*BufferMap) Type() Type     { return TypeBufferMap }
func (*Have) Type() Type          { return TypeHave }
func (*Request) Type() Type       { return TypeRequest }
func (*Cancel) Type() Type        { return TypeCancel }
func (*Data) Type() Type          { return TypeData }
func (*Reject) Type() Type        { return TypeReject }
func (*GetCandidates) Type() Type { return TypeGetCandidates }
func (*Candidates) Type() Type    { return TypeCandidates }
func (*Ping) Type() Type          { return TypePing }
func (*Pong) Type() Type          { return TypePong }
func (*Goodbye) Type() Type       { return TypeGoodbye }
func (*StreamHeader) Type() Type  { return TypeStreamHeader }
func (*Report) Type() Type        { return TypeReport }

// New returns an empty message of type t.
func New(t Type) (Message, error) {
	switch t {
	case TypeHello:
		return &Hello{}, nil
	case TypeWelcome:
		return &Welcome{}, nil
	case TypeBufferMap:
		return &BufferMap{}, nil
	case TypeHave:
		return &Have{}, nil
	case TypeRequest:
		return &Request{}, nil
	case TypeCancel:
		return &Cancel{}, nil
	case TypeData:
		return &Data{}, nil
	case TypeReject:
		return &Reject{}, nil
	case TypeGetCandidates:
		return &GetCandidates{}, nil
	case TypeCandidates:
		return &Candidates{}, nil
	case TypePing:
		return &Ping{}, nil
	case TypePong:
		return &Pong{}, nil
	case TypeGoodbye:
		return &Goodbye{}, nil
	case TypeStreamHeader:
		return &StreamHeader{}, nil
	case TypeReport:
		return &Report{}, nil
	case TypeAccuse:
		return &Accuse{}, nil
	case TypeSubscribe:
		return &Subscribe{}, nil
	case TypeSubscribed:
		return &Subscribed{}, nil
	case TypeHops:
		return &Hops{}, nil
	}
	return nil, fmt.Errorf("%w: %d", ErrUnknownType, t)
}
