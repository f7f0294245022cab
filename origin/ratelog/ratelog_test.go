package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLimiterWritesEachMessageOncePerInterval(t *testing.T) {
	now := time.Unix(0, 0)
	l := &Limiter{Interval: time.Second, Now: func() time.Time { return now }}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	for i := 0; i < 1000; i++ {
		l.Warn(log, "refused", "i", i)
		l.Warn(log, "other")
	}
	require.Equal(t, 2, strings.Count(buf.String(), "\n"), "one line per message in the interval")
	now = now.Add(time.Second)
	l.Warn(log, "refused")
	require.Contains(t, buf.String(), "suppressed=999", "the next line says how many were suppressed")
}

func TestLimiterStaysBoundedUnderManyMessages(t *testing.T) {
	l := &Limiter{}
	for i := 0; i < 10*maxMessages; i++ {
		l.Allow(strings.Repeat("x", i%50) + string(rune(i)))
	}
	require.LessOrEqual(t, len(l.last), maxMessages)
}
