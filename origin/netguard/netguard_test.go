package netguard

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// flakyListener fails Accept with EMFILE a number of times first.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return f.Listener.Accept()
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestAcceptRetriesWhenOutOfDescriptors(t *testing.T) {
	fl := &flakyListener{Listener: listen(t)}
	fl.fails.Store(5)
	var rejects atomic.Int32
	l := &Listener{Listener: fl, Name: "test", OnReject: func(string) { rejects.Add(1) }}
	go func() {
		c, err := net.Dial("tcp", fl.Addr().String())
		if err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	c, err := l.Accept()
	require.NoError(t, err, "EMFILE is retried, not returned")
	c.Close()
	require.EqualValues(t, 5, rejects.Load())
}

func TestAcceptReturnsWhenClosed(t *testing.T) {
	l := &Listener{Listener: listen(t)}
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	require.NoError(t, l.Close())
	select {
	case err := <-done:
		require.True(t, errors.Is(err, net.ErrClosed), "%v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
}

func TestConnectionsBeyondTheCapAreClosed(t *testing.T) {
	var limited atomic.Int32
	inner := listen(t)
	l := &Listener{Listener: inner, MaxConns: 1, OnReject: func(r string) {
		if r == "conn_limit" {
			limited.Add(1)
		}
	}}
	c1, err := net.Dial("tcp", inner.Addr().String())
	require.NoError(t, err)
	defer c1.Close()
	a1, err := l.Accept()
	require.NoError(t, err)
	require.Equal(t, 1, l.Open())

	got := make(chan net.Conn, 1)
	go func() { c, _ := l.Accept(); got <- c }()
	c2, err := net.Dial("tcp", inner.Addr().String())
	require.NoError(t, err)
	defer c2.Close()
	_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c2.Read(make([]byte, 1))
	require.Error(t, err, "the connection over the cap was closed")
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "closed, not left hanging")
	require.EqualValues(t, 1, limited.Load())

	require.NoError(t, a1.Close())
	require.Equal(t, 0, l.Open())
	c3, err := net.Dial("tcp", inner.Addr().String())
	require.NoError(t, err)
	defer c3.Close()
	a3 := <-got
	require.NotNil(t, a3, "a freed slot takes the next connection")
	a3.Close()
}

func TestIdleDeadlineUnlessExempt(t *testing.T) {
	inner := listen(t)
	l := &Listener{Listener: inner, IdleTimeout: 200 * time.Millisecond}
	cli, err := net.Dial("tcp", inner.Addr().String())
	require.NoError(t, err)
	defer cli.Close()
	sc, err := l.Accept()
	require.NoError(t, err)
	defer sc.Close()
	gc := sc.(*Conn)

	require.NoError(t, gc.SetReadDeadline(time.Time{}), "the owner's zero deadline cannot lift the idle one")
	start := time.Now()
	_, err = gc.Read(make([]byte, 1))
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "an idle connection times out: %v", err)
	require.Less(t, time.Since(start), 5*time.Second)

	gc.Exempt(true)
	go func() { time.Sleep(500 * time.Millisecond); _, _ = cli.Write([]byte{1}) }()
	n, err := gc.Read(make([]byte, 1))
	require.NoError(t, err, "an exempt connection may stay quiet longer than the idle timeout")
	require.Equal(t, 1, n)
}
