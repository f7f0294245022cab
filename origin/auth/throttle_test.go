package auth

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestThrottle(t *testing.T) {
	now := time.Unix(1000, 0)
	th := &Throttle{MaxFailures: 3, Window: time.Minute, Block: 30 * time.Second, MaxEntries: 4,
		Now: func() time.Time { return now }}

	t.Run("an IP is blocked after MaxFailures within the window, and only that IP", func(t *testing.T) {
		require.False(t, th.Fail("10.0.0.1"))
		require.False(t, th.Fail("10.0.0.1"))
		require.False(t, th.Blocked("10.0.0.1"))
		require.True(t, th.Fail("10.0.0.1"))
		require.True(t, th.Blocked("10.0.0.1"))
		require.False(t, th.Blocked("10.0.0.2"))
	})
	t.Run("the block ends after Block", func(t *testing.T) {
		now = now.Add(31 * time.Second)
		require.False(t, th.Blocked("10.0.0.1"))
	})
	t.Run("failures spread wider than the window never block", func(t *testing.T) {
		for i := 0; i < 10; i++ {
			require.False(t, th.Fail("10.0.0.3"))
			now = now.Add(31 * time.Second)
		}
	})
	t.Run("the table stays bounded under many IPs", func(t *testing.T) {
		for i := 0; i < 1000; i++ {
			th.Fail(fmt.Sprintf("192.168.%d.%d", i/256, i%256))
		}
		require.LessOrEqual(t, th.Len(), 4)
	})
	t.Run("HostOf strips the port", func(t *testing.T) {
		require.Equal(t, "127.0.0.1", HostOf("127.0.0.1:5000"))
		require.Equal(t, "::1", HostOf("[::1]:5000"))
		require.Equal(t, "x", HostOf("x"))
	})
}
