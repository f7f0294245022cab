package rtmpingest

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/coopstreaming/coop/origin/stream"
)

// TestCloseRightAfterStartReturns: an origin whose Initialize fails after
// the RTMP server started closes it at once; go-rtmp closes only a
// listener its Serve goroutine has registered, so Close used to hang
// forever when it came first (seen as a 10-minute hang under load).
func TestCloseRightAfterStartReturns(t *testing.T) {
	for i := 0; i < 200; i++ {
		s := &Server{Address: "127.0.0.1:0", Streams: &stream.Manager{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		require.NoError(t, s.Start())
		done := make(chan struct{})
		go func() { s.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("Close hung (iteration %d)", i)
		}
	}
}
