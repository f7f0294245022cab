package pluginapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coopstreaming/coop/plugin/pluginapi/pluginv1"
)

// GRPCPlugin is the go-plugin glue: the plugin serves Impl, the host
// dispenses a P2P client.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Impl is the plugin's implementation (plugin side only).
	Impl P2P
}

// GRPCServer registers the service (plugin side).
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginv1.RegisterP2PServer(s, &grpcServer{impl: p.Impl})
	return nil
}

// GRPCClient returns a P2P backed by the connection (host side).
func (p *GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewClient(pluginv1.NewP2PClient(c)), nil
}

// Client implements P2P over the gRPC service. Segments travel on one
// long-lived PushSegments stream, cut into parts of at most MaxPartBytes.
type Client struct {
	rpc  pluginv1.P2PClient
	mu   sync.Mutex
	push grpc.ClientStreamingClient[pluginv1.SegmentPart, pluginv1.PushSegmentsResponse]
	stop context.CancelFunc
	// proc is the process report of the last Stats call (guarded by mu).
	proc ProcessStats
}

// Process returns the plugin process report that came with the last
// Stats call.
func (c *Client) Process() ProcessStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc
}

// NewClient wraps a generated client.
func NewClient(rpc pluginv1.P2PClient) *Client { return &Client{rpc: rpc} }

// Configure implements P2P.
func (c *Client) Configure(ctx context.Context, s Settings) (Configured, error) {
	r, err := c.rpc.Configure(ctx, &pluginv1.ConfigureRequest{
		PeerAddress: s.PeerAddress, UploadCap: s.UploadCap, Seeds: uint32(max(0, s.Seeds)),
		Partners: uint32(max(0, s.Partners)), KeyFile: s.KeyFile, TokenSecret: s.TokenSecret, LogLevel: s.LogLevel,
		HandshakeTimeoutMs: uint32(max(0, s.HandshakeTimeout.Milliseconds())), MaxPeerConnections: uint32(max(0, s.MaxPeerConnections)),
		ClusterRedis: s.ClusterRedis, ClusterNode: s.ClusterNode,
		ClusterTtlMs: uint32(max(0, s.ClusterTTL.Milliseconds())), ClusterHeartbeatMs: uint32(max(0, s.ClusterHeartbeat.Milliseconds())),
		PlacementMaxPeers: uint32(max(0, s.PlacementMaxPeers)),
		WebAddress:        s.WebAddress, IceServers: iceToProto(s.ICEServers),
	})
	if err != nil {
		return Configured{}, fmt.Errorf("plugin configure: %w", fromStatus(err))
	}
	return Configured{PeerAddress: r.PeerAddress, StreamPublicKey: r.StreamPublicKey, PID: int(r.Pid),
		WebAddress: r.WebAddress}, nil
}

// AnnounceStream implements P2P.
func (c *Client) AnnounceStream(ctx context.Context, info StreamInfo) error {
	if err := info.Validate(); err != nil {
		return err
	}
	_, err := c.rpc.AnnounceStream(ctx, &pluginv1.AnnounceStreamRequest{
		Stream: info.Name, Header: info.Header, SegmentDurationMs: info.SegmentDurationMs, Layers: uint32(info.Layers), Epoch: info.Epoch,
	})
	if err != nil {
		return fmt.Errorf("plugin announce %s: %w", info.Name, fromStatus(err))
	}
	return nil
}

// PushSegment implements P2P. It is safe for concurrent use; segments are
// sent one after the other.
func (c *Client) PushSegment(_ context.Context, seg Segment) error {
	if err := seg.Validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.push == nil {
		ctx, cancel := context.WithCancel(context.Background())
		push, err := c.rpc.PushSegments(ctx)
		if err != nil {
			cancel()
			return fmt.Errorf("plugin push: %w", fromStatus(err))
		}
		c.push, c.stop = push, cancel
	}
	err := sendParts(seg, c.push.Send)
	if err != nil {
		if errors.Is(err, io.EOF) { // the real status comes with the close
			_, err = c.push.CloseAndRecv()
		}
		c.resetLocked()
		return fmt.Errorf("plugin push %s #%d: %w", seg.Stream, seg.Seq, fromStatus(err))
	}
	return nil
}

// sendParts cuts a segment into parts of at most MaxPartBytes, in order.
func sendParts(seg Segment, send func(*pluginv1.SegmentPart) error) error {
	for layer, chunk := range seg.Chunks {
		for off := 0; off < len(chunk); off += MaxPartBytes {
			end := min(off+MaxPartBytes, len(chunk))
			err := send(&pluginv1.SegmentPart{
				Stream: seg.Stream, Seq: seg.Seq, DurationMs: seg.DurationMs, RandomAccess: seg.RandomAccess,
				LayerCount: uint32(len(seg.Chunks)), Layer: uint32(layer), ChunkSize: uint32(len(chunk)),
				Offset: uint32(off), Data: chunk[off:end],
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Client) resetLocked() {
	if c.stop != nil {
		c.stop()
	}
	c.push, c.stop = nil, nil
}

// ClosePush ends the push stream (the host calls it before killing the
// plugin; it is also reopened by the next PushSegment).
func (c *Client) ClosePush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.push != nil {
		_, _ = c.push.CloseAndRecv()
	}
	c.resetLocked()
}

// CloseStream implements P2P.
func (c *Client) CloseStream(ctx context.Context, name string) error {
	if _, err := c.rpc.CloseStream(ctx, &pluginv1.CloseStreamRequest{Stream: name}); err != nil {
		return fmt.Errorf("plugin close %s: %w", name, fromStatus(err))
	}
	return nil
}

// Stats implements P2P.
func (c *Client) Stats(ctx context.Context) ([]StreamStats, error) {
	r, err := c.rpc.GetStats(ctx, &pluginv1.GetStatsRequest{})
	if err != nil {
		return nil, fmt.Errorf("plugin stats: %w", fromStatus(err))
	}
	out := make([]StreamStats, 0, len(r.Streams))
	for _, s := range r.Streams {
		out = append(out, StreamStats{
			Stream: s.Stream, Peers: int(s.Peers), LiveEdge: s.LiveEdge, Segments: s.Segments,
			ServerMediaBytes: s.ServerMediaBytes, ServerControlBytes: s.ServerControlBytes,
			PeerBytesFromServer: s.PeerBytesFromServer, PeerBytesFromPeers: s.PeerBytesFromPeers,
			Continuity: s.Continuity, RefusedJoins: s.RefusedJoins, Banned: s.Banned, Epoch: s.Epoch,
			StreamKey: s.StreamKey, Upstream: s.Upstream, RelayBytesFromServer: s.RelayBytesFromServer,
			RelayBytesFromPeers: s.RelayBytesFromPeers, RelayConnected: s.RelayConnected, RelayPartners: int(s.RelayPartners),
		})
	}
	if p := r.Process; p != nil {
		c.mu.Lock()
		c.proc = ProcessStats{Goroutines: p.Goroutines, MemoryBytes: p.MemoryBytes, HeapBytes: p.HeapBytes,
			MemoryLimitBytes: p.MemoryLimitBytes, Rejected: p.Rejected}
		c.mu.Unlock()
	}
	return out, nil
}

// Relay implements Relayer over the gRPC service: it reassembles the
// plugin's segment parts and calls emit with each event, until the
// plugin ends the relay, ctx ends or emit fails.
func (c *Client) Relay(ctx context.Context, req RelayRequest, emit func(RelayEvent) error) error {
	if err := req.Validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.rpc.Relay(ctx, &pluginv1.RelayRequest{Stream: req.Stream, Upstream: req.Upstream, StreamKey: req.StreamKey, Token: req.Token})
	if err != nil {
		return fmt.Errorf("plugin relay %s: %w", req.Stream, fromStatus(err))
	}
	var asm Assembler
	for {
		ev, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("plugin relay %s: %w", req.Stream, fromStatus(err))
		}
		out := RelayEvent{Epoch: ev.Epoch}
		switch {
		case len(ev.Header) > MaxHeaderBytes:
			return fmt.Errorf("%w: relayed header over 64 KiB", ErrInvalid)
		case len(ev.Header) > 0:
			out.Header = ev.Header
		case ev.Part != nil:
			if ev.Part.Stream != req.Stream {
				return fmt.Errorf("%w: relay of %s sent a part of %q", ErrInvalid, req.Stream, ev.Part.Stream)
			}
			seg, err := asm.Add(ev.Part)
			if err != nil {
				return fmt.Errorf("plugin relay %s: %w", req.Stream, err)
			}
			if seg == nil {
				continue
			}
			out.Segment = seg
		default:
			continue
		}
		if err := emit(out); err != nil {
			return err
		}
	}
}

// RefusalObserver is implemented by a P2P that wants to hear of segments
// refused on the push stream (whose errors reach the host only when the
// stream closes).
type RefusalObserver interface {
	SegmentRefused(stream string, seq uint64, err error)
}

// grpcServer adapts a P2P implementation to the generated service.
type grpcServer struct {
	pluginv1.UnimplementedP2PServer
	impl P2P
}

// fromStatus is the client side of toStatus: it gives a gRPC error back
// its contract error (ErrInvalid, ErrUnknownStream), keeping the status
// in the chain for its message.
func fromStatus(err error) error {
	switch status.Code(err) {
	case codes.InvalidArgument:
		return errors.Join(ErrInvalid, err)
	case codes.NotFound:
		return errors.Join(ErrUnknownStream, err)
	}
	return err
}

// toStatus turns a contract error into a gRPC status for the wire.
func toStatus(err error) error {
	if errors.Is(err, ErrInvalid) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if errors.Is(err, ErrUnknownStream) {
		return status.Error(codes.NotFound, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func (s *grpcServer) Configure(ctx context.Context, r *pluginv1.ConfigureRequest) (*pluginv1.ConfigureResponse, error) {
	c, err := s.impl.Configure(ctx, Settings{
		PeerAddress: r.PeerAddress, UploadCap: r.UploadCap, Seeds: int(r.Seeds), Partners: int(r.Partners),
		KeyFile: r.KeyFile, TokenSecret: r.TokenSecret, LogLevel: r.LogLevel,
		HandshakeTimeout: time.Duration(r.HandshakeTimeoutMs) * time.Millisecond, MaxPeerConnections: int(r.MaxPeerConnections),
		ClusterRedis: r.ClusterRedis, ClusterNode: r.ClusterNode,
		ClusterTTL: time.Duration(r.ClusterTtlMs) * time.Millisecond, ClusterHeartbeat: time.Duration(r.ClusterHeartbeatMs) * time.Millisecond,
		PlacementMaxPeers: int(r.PlacementMaxPeers),
		WebAddress:        r.WebAddress, ICEServers: iceFromProto(r.IceServers),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pluginv1.ConfigureResponse{PeerAddress: c.PeerAddress, StreamPublicKey: c.StreamPublicKey, Pid: int64(c.PID),
		WebAddress: c.WebAddress}, nil
}

func (s *grpcServer) AnnounceStream(ctx context.Context, r *pluginv1.AnnounceStreamRequest) (*pluginv1.AnnounceStreamResponse, error) {
	info := StreamInfo{Name: r.Stream, Header: r.Header, SegmentDurationMs: r.SegmentDurationMs, Layers: int(r.Layers), Epoch: r.Epoch}
	if err := info.Validate(); err != nil {
		return nil, toStatus(err)
	}
	if err := s.impl.AnnounceStream(ctx, info); err != nil {
		return nil, toStatus(err)
	}
	return &pluginv1.AnnounceStreamResponse{}, nil
}

func (s *grpcServer) CloseStream(ctx context.Context, r *pluginv1.CloseStreamRequest) (*pluginv1.CloseStreamResponse, error) {
	if err := s.impl.CloseStream(ctx, r.Stream); err != nil {
		return nil, toStatus(err)
	}
	return &pluginv1.CloseStreamResponse{}, nil
}

func (s *grpcServer) GetStats(ctx context.Context, _ *pluginv1.GetStatsRequest) (*pluginv1.GetStatsResponse, error) {
	st, err := s.impl.Stats(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pluginv1.GetStatsResponse{}
	for _, x := range st {
		out.Streams = append(out.Streams, &pluginv1.StreamStats{
			Stream: x.Stream, Peers: uint32(x.Peers), LiveEdge: x.LiveEdge, Segments: x.Segments,
			ServerMediaBytes: x.ServerMediaBytes, ServerControlBytes: x.ServerControlBytes,
			PeerBytesFromServer: x.PeerBytesFromServer, PeerBytesFromPeers: x.PeerBytesFromPeers,
			Continuity: x.Continuity, RefusedJoins: x.RefusedJoins, Banned: x.Banned, Epoch: x.Epoch,
			StreamKey: x.StreamKey, Upstream: x.Upstream, RelayBytesFromServer: x.RelayBytesFromServer,
			RelayBytesFromPeers: x.RelayBytesFromPeers, RelayConnected: x.RelayConnected, RelayPartners: uint32(max(0, x.RelayPartners)),
		})
	}
	if pr, ok := s.impl.(ProcessReporter); ok {
		p := pr.Process()
		out.Process = &pluginv1.ProcessStats{Goroutines: p.Goroutines, MemoryBytes: p.MemoryBytes, HeapBytes: p.HeapBytes,
			MemoryLimitBytes: p.MemoryLimitBytes, Rejected: p.Rejected}
	}
	return out, nil
}

func (s *grpcServer) Relay(r *pluginv1.RelayRequest, stream grpc.ServerStreamingServer[pluginv1.RelayEvent]) error {
	rl, ok := s.impl.(Relayer)
	if !ok {
		return status.Error(codes.Unimplemented, "this plugin does not relay")
	}
	req := RelayRequest{Stream: r.Stream, Upstream: r.Upstream, StreamKey: r.StreamKey, Token: r.Token}
	if err := req.Validate(); err != nil {
		return toStatus(err)
	}
	err := rl.Relay(stream.Context(), req, func(ev RelayEvent) error {
		if len(ev.Header) > 0 {
			if err := stream.Send(&pluginv1.RelayEvent{Header: ev.Header, Epoch: ev.Epoch}); err != nil {
				return err
			}
		}
		if ev.Segment == nil {
			return nil
		}
		return sendParts(*ev.Segment, func(p *pluginv1.SegmentPart) error {
			return stream.Send(&pluginv1.RelayEvent{Part: p, Epoch: ev.Epoch})
		})
	})
	if err != nil && stream.Context().Err() == nil {
		return toStatus(err)
	}
	return nil
}

func (s *grpcServer) PushSegments(stream grpc.ClientStreamingServer[pluginv1.SegmentPart, pluginv1.PushSegmentsResponse]) error {
	var (
		asm  Assembler
		resp pluginv1.PushSegmentsResponse
	)
	for {
		part, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&resp)
		}
		if err != nil {
			return err
		}
		seg, err := asm.Add(part)
		if err == nil && seg != nil {
			err = s.impl.PushSegment(stream.Context(), *seg)
		}
		if err != nil {
			resp.Refused++
			resp.LastError = err.Error()
			if r, ok := s.impl.(RefusalObserver); ok {
				r.SegmentRefused(part.Stream, part.Seq, err)
			}
			continue
		}
		if seg == nil {
			continue
		}
		resp.Accepted++
	}
}

// Assembler rebuilds segments from their parts. Parts of one segment must
// arrive in order (layer by layer, offset by offset); a part that breaks
// the order or the limits discards the segment being assembled.
type Assembler struct {
	cur    *Segment
	filled []int
}

// Add takes one part and returns the segment it completes, if any.
func (a *Assembler) Add(p *pluginv1.SegmentPart) (*Segment, error) {
	if err := a.add(p); err != nil {
		a.cur, a.filled = nil, nil
		return nil, err
	}
	for l, c := range a.cur.Chunks {
		if c == nil || a.filled[l] < len(c) {
			return nil, nil
		}
	}
	seg := a.cur
	a.cur, a.filled = nil, nil
	return seg, nil
}

func (a *Assembler) add(p *pluginv1.SegmentPart) error {
	switch {
	case p.Stream == "" || len(p.Stream) > MaxStreamName:
		return fmt.Errorf("%w: part with bad stream name", ErrInvalid)
	case p.LayerCount == 0 || p.LayerCount > MaxLayers || p.Layer >= p.LayerCount:
		return fmt.Errorf("%w: part of layer %d/%d", ErrInvalid, p.Layer, p.LayerCount)
	case p.ChunkSize == 0 || p.ChunkSize > MaxChunkBytes:
		return fmt.Errorf("%w: chunk size %d", ErrInvalid, p.ChunkSize)
	case len(p.Data) == 0 || len(p.Data) > MaxPartBytes:
		return fmt.Errorf("%w: part of %d bytes", ErrInvalid, len(p.Data))
	case uint64(p.Offset)+uint64(len(p.Data)) > uint64(p.ChunkSize):
		return fmt.Errorf("%w: part beyond its chunk", ErrInvalid)
	}
	if a.cur != nil && (a.cur.Stream != p.Stream || a.cur.Seq != p.Seq) {
		return fmt.Errorf("%w: segment %s #%d interrupted by #%d", ErrInvalid, a.cur.Stream, a.cur.Seq, p.Seq)
	}
	if a.cur == nil {
		if p.Layer != 0 || p.Offset != 0 {
			return fmt.Errorf("%w: segment %s #%d does not start at layer 0 offset 0", ErrInvalid, p.Stream, p.Seq)
		}
		a.cur = &Segment{Stream: p.Stream, Seq: p.Seq, DurationMs: p.DurationMs, RandomAccess: p.RandomAccess,
			Chunks: make([][]byte, p.LayerCount)}
		a.filled = make([]int, p.LayerCount)
	}
	if int(p.LayerCount) != len(a.cur.Chunks) {
		return fmt.Errorf("%w: layer count changed inside segment #%d", ErrInvalid, p.Seq)
	}
	l := int(p.Layer)
	for prev := 0; prev < l; prev++ {
		if a.cur.Chunks[prev] == nil || a.filled[prev] < len(a.cur.Chunks[prev]) {
			return fmt.Errorf("%w: layer %d before layer %d is complete", ErrInvalid, l, prev)
		}
	}
	if a.cur.Chunks[l] == nil {
		a.cur.Chunks[l] = make([]byte, p.ChunkSize)
	}
	if len(a.cur.Chunks[l]) != int(p.ChunkSize) || int(p.Offset) != a.filled[l] {
		return fmt.Errorf("%w: part at offset %d of layer %d, expected %d", ErrInvalid, p.Offset, l, a.filled[l])
	}
	a.filled[l] += copy(a.cur.Chunks[l][p.Offset:], p.Data)
	return nil
}

func iceToProto(list []ICEServer) []*pluginv1.IceServer {
	out := make([]*pluginv1.IceServer, 0, len(list))
	for _, s := range list {
		out = append(out, &pluginv1.IceServer{Urls: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return out
}

func iceFromProto(list []*pluginv1.IceServer) []ICEServer {
	var out []ICEServer
	for _, s := range list {
		out = append(out, ICEServer{URLs: s.GetUrls(), Username: s.GetUsername(), Credential: s.GetCredential()})
	}
	return out
}
