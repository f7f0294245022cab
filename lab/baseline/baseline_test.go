package baseline

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/peerproto/wire"
)

type fakeEnv struct {
	now  time.Time
	sent []wire.Message
}

func (f *fakeEnv) Now() time.Time                     { return f.now }
func (f *fakeEnv) Send(_ wire.PeerID, m wire.Message) { f.sent = append(f.sent, m) }
func (f *fakeEnv) UploadBacklog() int                 { return 0 }
func (f *fakeEnv) Dial(wire.Candidate)                {}
func (f *fakeEnv) Disconnect(wire.PeerID)             {}
func (f *fakeEnv) Rand() *rand.Rand                   { return rand.New(rand.NewPCG(1, 2)) }

func TestPlaybackCountsLikeTheEngine(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	env := &fakeEnv{now: t0}
	n := NewNode(Config{ID: 2, StreamRate: 1000}, env, false)
	// The server holds segment 10 now: segment s is due at
	// t0 + (s-10)·500ms + 5s; the newcomer starts 3 s ahead at the least.
	n.Anchor(10, t0)
	seq, playing := n.Playhead()
	require.True(t, playing)
	require.Equal(t, uint64(6), seq, "oldest segment due at least 3 s ahead")
	require.Equal(t, t0.Add(3*time.Second), n.Deadline(6))

	require.True(t, n.Store(7, make([]byte, 100), true))
	require.True(t, n.Store(8, make([]byte, 100), false))
	require.False(t, n.Store(8, make([]byte, 100), false), "duplicate")
	env.now = t0.Add(4 * time.Second) // 6, 7 and 8 are due
	n.Play(env.now)
	st := n.Stats()
	// 6 missed before anything played: not counted; 7 and 8 played.
	require.Equal(t, uint64(2), st.Due)
	require.Equal(t, uint64(2), st.BaseOnTime)
	require.True(t, st.Started)
	require.Equal(t, 4*time.Second, st.StartupDelay)
	require.Equal(t, uint64(100), st.UsefulFromServer)
	require.Equal(t, uint64(100), st.UsefulFromPeers)
	require.Equal(t, uint64(100), st.DuplicateBytes)

	require.True(t, n.Store(5, make([]byte, 50), false))
	require.Equal(t, uint64(50), n.Stats().LateBytes, "behind the playhead: late")
	env.now = t0.Add(5 * time.Second) // 9 and 10 are due, both missing
	n.Play(env.now)
	st = n.Stats()
	require.Equal(t, uint64(4), st.Due)
	require.Equal(t, uint64(2), st.BaseOnTime)
	require.Len(t, st.PlayedAt, 5)
}

func TestPushOnlyStartsAtFirstSegmentReceived(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	env := &fakeEnv{now: t0}
	n := NewNode(Config{ID: 2, StreamRate: 1000}, env, true)
	n.Anchor(10, t0)
	_, playing := n.Playhead()
	require.False(t, playing)
	n.Store(12, []byte{1}, false)
	seq, playing := n.Playhead()
	require.True(t, playing)
	require.Equal(t, uint64(12), seq)
}

func TestSendAndReceiveAreCounted(t *testing.T) {
	env := &fakeEnv{now: time.Unix(0, 0)}
	n := NewNode(Config{ID: 2, StreamRate: 1000}, env, false)
	d := &wire.Data{Seq: 1, Payload: make([]byte, 1000)}
	n.Send(3, d)
	n.Send(3, &wire.Ping{Nonce: 1})
	n.CountIn(d)
	st := n.Stats()
	require.Equal(t, uint64(1000), st.MediaBytesOut)
	require.Equal(t, uint64(1000), st.MediaBytesIn)
	require.Equal(t, uint64(wire.FrameSize(d)-1000+wire.FrameSize(&wire.Ping{Nonce: 1})), st.ControlBytesOut)
	require.Len(t, env.sent, 2)
}
