package integration

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestP2PPeersFeedEachOtherOnAServerWithAboutOneCopyOfUpload: three
// coop-peers (no declared upload) on a server partner capped at 1200
// kbit/s, about one copy of the ~1 Mbit/s stream. Once the server's burst
// is spent the peers must feed each other. Such a server takes no push
// root (room for every layer of a sub-stream in a quarter of its budget),
// and before the fix, with push on, it told nobody of a fresh segment
// first: every peer waited for the delayed announcement, then all asked
// the server for the same chunk, everything came late and all three
// stalled about 20 s in (continuity 0.45-0.77 and falling). Now a
// sub-stream without roots is seeded as without push.
func TestP2PPeersFeedEachOtherOnAServerWithAboutOneCopyOfUpload(t *testing.T) {
	t.Parallel()
	requireTool(t, "ffmpeg")
	clip := encodedClip(t, "320x240", 90, "-preset", "ultrafast", "-b:v", "900k", "-minrate", "900k",
		"-maxrate", "900k", "-bufsize", "450k", "-x264-params", "nal-hrd=cbr", "-g", "30")
	o, peerAddr := startP2POrigin(t, "COOP_PLUGIN_UPLOADKBPS=1200")
	publishClipRTMP(t, clip, o.rtmpURL("capped"))
	o.waitPublishing(t, "live/capped")
	peers := []*peerProc{startPeer(t, peerAddr, "live/capped"), startPeer(t, peerAddr, "live/capped"), startPeer(t, peerAddr, "live/capped")}
	waitFor(t, 60*time.Second, "3 peers playing", func() bool {
		for _, p := range peers {
			if !p.playing(6) {
				return false
			}
		}
		return true
	})
	before := make([]peerStats, len(peers))
	for i, p := range peers {
		before[i] = p.stats(t)
	}
	// 80 segments (40 s) at every peer: the server's burst is spent after
	// ~20 s.
	waitFor(t, 150*time.Second, "80 more segments due at every peer", func() bool {
		for i, p := range peers {
			st, err := p.tryStats()
			if err != nil || st.Due < before[i].Due+80 {
				return false
			}
		}
		return true
	})
	for i, p := range peers {
		st := p.stats(t)
		cont := float64(st.BaseOnTime-before[i].BaseOnTime) / float64(max(st.Due-before[i].Due, 1))
		t.Logf("peer %d: continuity %.3f over %d segments, from server %d B, from peers %d B", i, cont,
			st.Due-before[i].Due, st.FromServer-before[i].FromServer, st.FromPeers-before[i].FromPeers)
		require.GreaterOrEqual(t, cont, 0.95, "peer %d base continuity", i)
	}
}
