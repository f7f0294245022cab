package edge

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/cluster/registry"
	"github.com/coopstreaming/coop/origin/stream"
	"github.com/coopstreaming/coop/plugin/pluginapi"
	"github.com/coopstreaming/coop/segment"
)

// fakeView is a registry view a test changes (a unit-test double).
type fakeView struct {
	mu  sync.Mutex
	v   registry.View
	err error
}

func (f *fakeView) set(v registry.View, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.v, f.err = v, err
}

func (f *fakeView) View(context.Context) (registry.View, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.v, f.err
}

// fakeRelayer records relay calls and runs each until its context ends.
type fakeRelayer struct {
	mu     sync.Mutex
	calls  []pluginapi.RelayRequest
	active map[string]int
}

func (f *fakeRelayer) Relay(ctx context.Context, req pluginapi.RelayRequest, _ func(pluginapi.RelayEvent) error) error {
	f.mu.Lock()
	f.calls = append(f.calls, req)
	f.active[req.Stream]++
	f.mu.Unlock()
	<-ctx.Done()
	f.mu.Lock()
	f.active[req.Stream]--
	f.mu.Unlock()
	return ctx.Err()
}

func (f *fakeRelayer) snapshot() ([]pluginapi.RelayRequest, map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	act := map[string]int{}
	for k, v := range f.active {
		act[k] = v
	}
	return append([]pluginapi.RelayRequest(nil), f.calls...), act
}

type noPublisher struct{}

func (noPublisher) Publish(string, stream.PublisherInfo) (*stream.Publication, error) {
	return nil, errors.New("not in this test")
}

func view(key byte, streams ...string) registry.View {
	v := registry.View{Nodes: []registry.Node{
		{ID: "o1", Role: registry.RoleOrigin, Addr: registry.Addresses{Peer: "[::]:7070", API: "10.0.0.5:9997"}},
		{ID: "e1", Role: registry.RoleEdge, Addr: registry.Addresses{Peer: "10.0.0.9:7070"}},
	}}
	for _, s := range streams {
		k := make([]byte, 32)
		k[0] = key
		v.Streams = append(v.Streams, registry.Stream{Name: s, Origin: "o1", Edges: []string{"e1"}, PublicKey: k})
	}
	return v
}

func TestTargetsAreTheOriginStreamsWithADialableAddress(t *testing.T) {
	v := view(1, "live/a")
	v.Streams = append(v.Streams,
		registry.Stream{Name: "live/nokey", Origin: "o1"},                             // no key yet
		registry.Stream{Name: "live/edgeonly", Edges: []string{"e1"}},                 // no origin
		registry.Stream{Name: "live/gone", Origin: "o9", PublicKey: make([]byte, 32)}) // origin not in the view
	got := targets(v, "")
	require.Len(t, got, 1)
	require.Equal(t, "10.0.0.5:7070", got["live/a"].upstream, "an unspecified host takes the API's")
	require.Equal(t, "o1", got["live/a"].origin)
	require.Equal(t, "192.0.2.1:7000", targets(v, "192.0.2.1:7000")["live/a"].upstream, "cluster.upstream overrides")

	require.Equal(t, "1.2.3.4:7070", dialable("1.2.3.4:7070", ""))
	require.Equal(t, "127.0.0.1:7070", dialable(":7070", "[::]:9997"))
	require.Equal(t, "", dialable("garbage", ""))
}

func TestTheEdgeFollowsTheRegistry(t *testing.T) {
	fv := &fakeView{}
	fv.set(view(1, "live/a", "live/b"), nil)
	fr := &fakeRelayer{active: map[string]int{}}
	e := &Edge{Registry: fv, Plugin: fr, Streams: noPublisher{}, Interval: 20 * time.Millisecond, Grace: 300 * time.Millisecond}
	e.Start()
	defer e.Close()
	running := func(want map[string]int) func() bool {
		return func() bool {
			_, act := fr.snapshot()
			for k, v := range want {
				if act[k] != v {
					return false
				}
			}
			return true
		}
	}
	require.Eventually(t, running(map[string]int{"live/a": 1, "live/b": 1}), 5*time.Second, 10*time.Millisecond)
	require.True(t, e.Relaying("live/a"))
	require.False(t, e.Relaying("live/c"))

	// An unreadable registry changes nothing.
	fv.set(registry.View{}, errors.New("redis down"))
	time.Sleep(100 * time.Millisecond) // several sync rounds (the assertion is that nothing changes)
	require.True(t, running(map[string]int{"live/a": 1, "live/b": 1})())

	// A readable but empty registry (Redis restarted) stops nothing
	// within the grace period.
	fv.set(registry.View{}, nil)
	time.Sleep(100 * time.Millisecond) // several sync rounds, within the grace (nothing may change)
	require.True(t, running(map[string]int{"live/a": 1, "live/b": 1})())
	fv.set(view(1, "live/a", "live/b"), nil)
	time.Sleep(400 * time.Millisecond) // past the grace had the streams stayed missing
	require.True(t, running(map[string]int{"live/a": 1, "live/b": 1})(), "streams back in the registry keep their relays")
	calls0, _ := fr.snapshot()
	require.Len(t, calls0, 2, "no relay was restarted")

	// The origin's key changes (its plugin restarted without a key file):
	// the relay restarts with the new key; live/b ends after the grace.
	fv.set(view(2, "live/a"), nil)
	require.Eventually(t, running(map[string]int{"live/a": 1, "live/b": 0}), 5*time.Second, 10*time.Millisecond)
	calls, _ := fr.snapshot()
	last := calls[len(calls)-1]
	require.Equal(t, "live/a", last.Stream)
	require.Equal(t, byte(2), last.StreamKey[0])
	require.False(t, e.Relaying("live/b"))
	st := e.Status()
	require.Len(t, st, 1)
	require.Equal(t, "live/a", st[0].Stream)

	e.Close()
	_, act := fr.snapshot()
	require.Zero(t, act["live/a"], "Close ends every relay")
}

// sinkRecorder records what the filter lets through.
type sinkRecorder struct{ started, segments, ended []string }

func (s *sinkRecorder) StreamStarted(p string, _ []byte) { s.started = append(s.started, p) }
func (s *sinkRecorder) SegmentReady(p string, _ *segment.Segment, _ [][]byte) {
	s.segments = append(s.segments, p)
}
func (s *sinkRecorder) StreamEnded(p string) { s.ended = append(s.ended, p) }

func TestTheSinkKeepsRelayedStreamsFromThePlugin(t *testing.T) {
	e := &Edge{relays: map[string]*relay{"live/relayed": {}}}
	rec := &sinkRecorder{}
	s := e.Sink(rec)
	for _, p := range []string{"live/relayed", "live/local"} {
		s.StreamStarted(p, nil)
		s.SegmentReady(p, &segment.Segment{}, nil)
		s.StreamEnded(p)
	}
	require.Equal(t, []string{"live/local"}, rec.started)
	require.Equal(t, []string{"live/local"}, rec.segments)
	require.Equal(t, []string{"live/local"}, rec.ended)
}

func TestDurationConvertsTicksWithoutOverflow(t *testing.T) {
	require.Equal(t, time.Second, duration(segment.Timebase))
	require.Equal(t, 100*time.Hour+time.Second/3, duration(100*3600*segment.Timebase+segment.Timebase/3))
}
