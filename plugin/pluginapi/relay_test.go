package pluginapi

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// relayer is a recorder that also relays: it emits a header and two
// segments, the second larger than one part, then waits for the end.
type relayer struct {
	recorder
	got chan RelayRequest
}

func (r *relayer) Relay(ctx context.Context, req RelayRequest, emit func(RelayEvent) error) error {
	r.got <- req
	big := bytes.Repeat([]byte{7}, MaxPartBytes+10)
	for _, ev := range []RelayEvent{
		{Epoch: 5, Header: []byte("hdr")},
		{Epoch: 5, Segment: &Segment{Stream: req.Stream, Seq: 1, DurationMs: 500, RandomAccess: true, Chunks: [][]byte{[]byte("a"), []byte("b")}}},
		{Epoch: 5, Segment: &Segment{Stream: req.Stream, Seq: 2, DurationMs: 500, Chunks: [][]byte{big}}},
	} {
		if err := emit(ev); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}

func TestRelayCarriesHeaderAndSegmentsToTheHost(t *testing.T) {
	impl := &relayer{got: make(chan RelayRequest, 1)}
	c := dial(t, impl)
	req := RelayRequest{Stream: "live/a", Upstream: "127.0.0.1:7070", StreamKey: make([]byte, 32), Token: "tok"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var evs []RelayEvent
	err := c.Relay(ctx, req, func(ev RelayEvent) error {
		evs = append(evs, ev)
		if len(evs) == 3 {
			cancel()
		}
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, req, <-impl.got)
	require.Len(t, evs, 3)
	require.Equal(t, []byte("hdr"), evs[0].Header)
	require.Equal(t, uint64(5), evs[1].Epoch)
	require.Equal(t, uint64(1), evs[1].Segment.Seq)
	require.True(t, evs[1].Segment.RandomAccess)
	require.Equal(t, [][]byte{[]byte("a"), []byte("b")}, evs[1].Segment.Chunks)
	require.Len(t, evs[2].Segment.Chunks[0], MaxPartBytes+10, "a segment over one part is reassembled")
}

func TestRelayRequestsAreValidated(t *testing.T) {
	for name, req := range map[string]RelayRequest{
		"no stream":       {Upstream: "h:1", StreamKey: make([]byte, 32)},
		"no upstream":     {Stream: "s", StreamKey: make([]byte, 32)},
		"not host:port":   {Stream: "s", Upstream: "nohost", StreamKey: make([]byte, 32)},
		"short key":       {Stream: "s", Upstream: "h:1", StreamKey: make([]byte, 31)},
		"token too large": {Stream: "s", Upstream: "h:1", StreamKey: make([]byte, 32), Token: string(make([]byte, MaxHeaderBytes+1))},
	} {
		require.ErrorIs(t, req.Validate(), ErrInvalid, name)
	}
	c := dial(t, &recorder{})
	err := c.Relay(context.Background(), RelayRequest{Stream: "s", Upstream: "h:1", StreamKey: make([]byte, 32)}, func(RelayEvent) error { return nil })
	require.ErrorContains(t, err, "does not relay", "a plugin without Relay says so")
}
