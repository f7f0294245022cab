package pluginapi

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/coopstreaming/coop/plugin/pluginapi/pluginv1"
)

// recorder is a P2P that records what it receives (a unit-test double).
type recorder struct {
	mu       sync.Mutex
	segments []Segment
	refused  []error
}

func (r *recorder) Configure(context.Context, Settings) (Configured, error) {
	return Configured{PeerAddress: "127.0.0.1:7070", StreamPublicKey: make([]byte, 32), PID: 42}, nil
}
func (r *recorder) AnnounceStream(context.Context, StreamInfo) error { return nil }
func (r *recorder) PushSegment(_ context.Context, s Segment) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.Seq == 13 {
		return ErrInvalid
	}
	r.segments = append(r.segments, s)
	return nil
}
func (r *recorder) CloseStream(_ context.Context, name string) error { return ErrUnknownStream }
func (r *recorder) Stats(context.Context) ([]StreamStats, error) {
	return []StreamStats{{Stream: "live/a", Peers: 3, PeerBytesFromServer: 1, PeerBytesFromPeers: 3}}, nil
}
func (r *recorder) SegmentRefused(_ string, _ uint64, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refused = append(r.refused, err)
}

func dial(t *testing.T, impl P2P) *Client {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	pluginv1.RegisterP2PServer(srv, &grpcServer{impl: impl})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return NewClient(pluginv1.NewP2PClient(conn))
}

func TestSegmentsLargerThanGRPCLimitsArriveWhole(t *testing.T) {
	rec := &recorder{}
	c := dial(t, rec)
	ctx := context.Background()
	conf, err := c.Configure(ctx, Settings{PeerAddress: ":0"})
	require.NoError(t, err)
	require.Equal(t, 42, conf.PID)
	big := bytes.Repeat([]byte{0xab}, 5<<20+17) // over gRPC's 4 MiB default
	want := []Segment{
		{Stream: "live/a", Seq: 1, DurationMs: 500, RandomAccess: true, Chunks: [][]byte{big, []byte("l1"), []byte("l2")}},
		{Stream: "live/a", Seq: 2, DurationMs: 500, Chunks: [][]byte{[]byte("only base")}},
		{Stream: "live/a", Seq: 13, DurationMs: 500, Chunks: [][]byte{[]byte("refused")}},
		{Stream: "live/b", Seq: 7, DurationMs: 1000, Chunks: [][]byte{bytes.Repeat([]byte{1}, MaxPartBytes), {2}}},
	}
	for _, s := range want {
		require.NoError(t, c.PushSegment(ctx, s))
	}
	c.ClosePush()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.segments, 3)
	require.Equal(t, want[0], rec.segments[0])
	require.Equal(t, want[1], rec.segments[1])
	require.Equal(t, want[3], rec.segments[2])
	require.Len(t, rec.refused, 1, "the refusal is reported to the plugin")

	st, err := c.Stats(ctx)
	require.NoError(t, err)
	require.InDelta(t, 0.75, st[0].Offload(), 1e-9)
	require.ErrorContains(t, c.CloseStream(ctx, "x"), "NotFound")
	require.ErrorIs(t, c.CloseStream(ctx, "x"), ErrUnknownStream, "the contract error survives the wire")
}

func TestClientRejectsInvalidRequests(t *testing.T) {
	c := dial(t, &recorder{})
	ctx := context.Background()
	require.ErrorIs(t, c.PushSegment(ctx, Segment{Stream: "s"}), ErrInvalid)
	require.ErrorIs(t, c.PushSegment(ctx, Segment{Stream: "s", Chunks: make([][]byte, 9)}), ErrInvalid)
	require.ErrorIs(t, c.PushSegment(ctx, Segment{Stream: "s", Chunks: [][]byte{{}}}), ErrInvalid)
	require.ErrorIs(t, c.AnnounceStream(ctx, StreamInfo{Name: "s", Layers: 0, SegmentDurationMs: 500}), ErrInvalid)
	require.ErrorIs(t, c.AnnounceStream(ctx, StreamInfo{Name: "s", Layers: 3, SegmentDurationMs: 500, Header: make([]byte, MaxHeaderBytes+1)}), ErrInvalid)
	ctx2, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, c.AnnounceStream(ctx2, StreamInfo{Name: "s", Layers: 3, SegmentDurationMs: 500}))
}

func TestAssemblerRefusesBrokenPartSequences(t *testing.T) {
	part := func(seq uint64, layer, count, size, off uint32, data string) *pluginv1.SegmentPart {
		return &pluginv1.SegmentPart{Stream: "s", Seq: seq, LayerCount: count, Layer: layer, ChunkSize: size, Offset: off, Data: []byte(data)}
	}
	cases := map[string][]*pluginv1.SegmentPart{
		"starts at layer 1":     {part(1, 1, 2, 2, 0, "ab")},
		"starts mid-chunk":      {part(1, 0, 1, 4, 2, "ab")},
		"gap in offsets":        {part(1, 0, 1, 6, 0, "ab"), part(1, 0, 1, 6, 4, "ef")},
		"beyond chunk":          {part(1, 0, 1, 2, 0, "abc")},
		"layer past count":      {part(1, 2, 2, 2, 0, "ab")},
		"too many layers":       {part(1, 0, 9, 2, 0, "ab")},
		"interrupted":           {part(1, 0, 1, 4, 0, "ab"), part(2, 0, 1, 2, 0, "ab")},
		"layer before previous": {part(1, 0, 3, 4, 0, "ab"), part(1, 1, 3, 2, 0, "ab")},
		"oversized chunk":       {part(1, 0, 1, MaxChunkBytes+1, 0, "a")},
		"empty data":            {part(1, 0, 1, 2, 0, "")},
	}
	for name, parts := range cases {
		var a Assembler
		var err error
		for _, p := range parts {
			if _, err = a.Add(p); err != nil {
				break
			}
		}
		require.ErrorIs(t, err, ErrInvalid, name)
		// The assembler recovers: a good segment after a bad one is whole.
		seg, err := a.Add(part(5, 0, 1, 2, 0, "ok"))
		require.NoError(t, err, name)
		require.Equal(t, [][]byte{[]byte("ok")}, seg.Chunks, name)
	}
}

// FuzzAssembler feeds arbitrary part sequences: no panic, bounded memory
// (chunk sizes are checked before allocation), and every segment returned
// is complete and valid.
func FuzzAssembler(f *testing.F) {
	f.Add(uint64(1), uint32(0), uint32(1), uint32(2), uint32(0), []byte("ab"), uint32(0), uint32(0))
	f.Add(uint64(1), uint32(0), uint32(2), uint32(4), uint32(0), []byte("ab"), uint32(2), uint32(1))
	f.Fuzz(func(t *testing.T, seq uint64, layer, count, size, off uint32, data []byte, off2, layer2 uint32) {
		var a Assembler
		for _, p := range []*pluginv1.SegmentPart{
			{Stream: "s", Seq: seq, Layer: layer, LayerCount: count, ChunkSize: size % (1 << 16), Offset: off, Data: data},
			{Stream: "s", Seq: seq, Layer: layer2, LayerCount: count, ChunkSize: size % (1 << 16), Offset: off2, Data: data},
		} {
			seg, err := a.Add(p)
			if err == nil && seg != nil {
				require.NoError(t, seg.Validate())
			}
		}
	})
}
