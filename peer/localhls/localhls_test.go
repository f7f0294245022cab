package localhls

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/segment"
)

// The SPS/PPS of a 320x240 x264 ultrafast stream.
var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x0a, 0xa8}
	testPPS = []byte{0x68, 0xce, 0x0f, 0xc8}
	header  = segment.Header{Tracks: []segment.Track{{ID: 0, Codec: segment.CodecH264, Params: [][]byte{testSPS, testPPS}}}}
)

// frames returns n video frames from frame number first at 25 fps, a key
// frame every 25, each with size bytes of slice data.
func frames(t *testing.T, first, n, size int) []segment.Frame {
	t.Helper()
	var out []segment.Frame
	for i := first; i < first+n; i++ {
		nalu := make([]byte, 1+size)
		nalu[0] = 0x41
		key := i%25 == 0
		if key {
			nalu[0] = 0x65
		}
		payload, err := h264.AVCC([][]byte{nalu}).Marshal()
		require.NoError(t, err)
		pts := int64(i) * segment.Timebase / 25
		out = append(out, segment.Frame{Track: 0, Key: key, PTS: pts, DTS: pts, Payload: payload})
	}
	return out
}

// get serves one request (safe to call from any goroutine).
func get(x *Muxer, path string) (int, string) {
	rec := httptest.NewRecorder()
	x.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestTheMuxerStartsOnTheFirstRequestAndStopsWhenIdle(t *testing.T) {
	x := &Muxer{}
	t.Cleanup(x.Close)
	code, _ := get(x, "/index.m3u8")
	require.Equal(t, http.StatusServiceUnavailable, code, "no header yet")
	require.Zero(t, x.Starts())

	x.SetHeader(header)
	x.WriteFrames(frames(t, 0, 60, 100))
	require.False(t, x.Running(), "nobody asked: no muxing")
	require.Len(t, x.replay, 10, "kept: the frames since the last key frame (50..59)")
	require.True(t, x.replay[0].Key)

	type reply struct {
		code int
		body string
	}
	done := make(chan reply, 1)
	go func() {
		code, body := get(x, "/index.m3u8")
		done <- reply{code, body}
	}()
	// The request starts the muxer; then the playlist waits for a whole
	// segment: feed frames until it has one.
	deadline := time.Now().Add(30 * time.Second)
	for !x.Running() {
		require.True(t, time.Now().Before(deadline), "the request never started the muxer")
		time.Sleep(time.Millisecond)
	}
	var r reply
	for i := 60; ; i += 5 {
		require.Less(t, i, 60+25*10, "no playlist after 10 s of frames")
		x.WriteFrames(frames(t, i, 5, 100))
		select {
		case r = <-done:
		default:
			continue
		}
		break
	}
	require.Equal(t, http.StatusOK, r.code)
	require.Contains(t, r.body, "#EXTM3U")
	require.Equal(t, uint64(1), x.Starts())
	require.True(t, x.Running())

	x.mu.Lock()
	x.IdleClose = time.Nanosecond
	x.mu.Unlock()
	x.WriteFrames(frames(t, 400, 1, 100))
	require.False(t, x.Running(), "idle: stopped")
	x.WriteFrames(frames(t, 401, 1, 100))
	require.Equal(t, uint64(1), x.Starts(), "frames alone do not restart it")
}

func TestReplayHoldsAtMostMaxReplayBytes(t *testing.T) {
	x := &Muxer{}
	t.Cleanup(x.Close)
	x.SetHeader(header)
	big := maxReplayBytes / 10
	x.WriteFrames(frames(t, 0, 12, big))
	require.False(t, x.replayOK, "a GOP over the bound is not kept")
	require.Empty(t, x.replay)
	x.WriteFrames(frames(t, 12, 14, 100)) // key frame at 25
	require.True(t, x.replayOK)
	require.Len(t, x.replay, 1)
	require.True(t, x.replay[0].Key)
}

func TestFramesBeforeTheFirstKeyFrameAreNotKept(t *testing.T) {
	x := &Muxer{}
	t.Cleanup(x.Close)
	x.SetHeader(header)
	x.WriteFrames(frames(t, 1, 10, 100))
	require.Empty(t, x.replay, "no key frame yet")
}
