// Package redistest starts a real redis-server for tests: on a free
// loopback port, with persistence off, killed at the test's end. Without
// the binary the test is skipped, unless CI=true, where it fails (the CI
// image must have it: .ci/run installs the Debian package).
package redistest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// Server is a redis-server the test started.
type Server struct {
	// Addr is host:port on 127.0.0.1.
	Addr string
	t    testing.TB
	cmd  *exec.Cmd
	out  *bytes.Buffer
}

// Start runs redis-server on a free loopback port and waits until it
// answers PING; t.Cleanup kills it.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is required under CI=true: %v", err)
		}
		t.Skip("redis-server not installed (apt-get install redis-server)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Server{Addr: addr, t: t}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Stop kills the server (SIGKILL: nothing is saved) and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart kills the server if it runs and starts an empty one on the same
// port, waiting until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	_, port, _ := net.SplitHostPort(s.Addr)
	s.out = &bytes.Buffer{}
	deadline := time.Now().Add(20 * time.Second)
	for {
		cmd := exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--protected-mode", "no")
		cmd.Stdout, cmd.Stderr = s.out, s.out
		if err := cmd.Start(); err != nil {
			s.t.Fatalf("start redis-server: %v", err)
		}
		s.cmd = cmd
		if s.waitPing(10 * time.Second) {
			return
		}
		s.Stop() // the port may still be in TIME_WAIT use by the old one: retry
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %s did not answer: %s", s.Addr, s.out.String())
		}
	}
}

// waitPing polls PING over a raw socket until +PONG or the deadline.
func (s *Server) waitPing(within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 7)
			n, _ := c.Read(buf)
			c.Close()
			if string(buf[:n]) == "+PONG\r\n" {
				return true
			}
		}
		if s.cmd.ProcessState != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Port is the server's port number.
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// String names the server for logs.
func (s *Server) String() string { return fmt.Sprintf("redis-server@%s", s.Addr) }
