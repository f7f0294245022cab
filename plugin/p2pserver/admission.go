package p2pserver

import (
	"net"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/coopstreaming/coop/plugin/pluginapi"
)

// Admission defaults (Settings override the first two).
const (
	// defaultHelloTimeout bounds the wait for a new connection's Hello.
	defaultHelloTimeout = pluginapi.DefaultHandshakeTimeout
	// defaultMaxConns bounds the admitted peer connections, all streams.
	defaultMaxConns = pluginapi.DefaultMaxPeerConnections
	// maxPending bounds connections waiting for their Hello.
	maxPending = 256
	// maxPendingPerIP bounds one address's share of maxPending, so a
	// flood from one host cannot hold the slots a real peer needs.
	maxPendingPerIP = 16
)

// Reasons a peer connection is refused or dropped
// (coop_p2p_rejected_total{reason}).
const (
	reasonPendingFull  = "pending_full"
	reasonPendingPerIP = "pending_per_ip"
	reasonBadHello     = "bad_hello"
	reasonUnknown      = "unknown_stream"
	reasonBadToken     = "bad_token"
	reasonConnCap      = "connection_cap"
	reasonSlow         = "slow_partner"
)

// admission is the plugin's gate in front of the swarms: pending-handshake
// slots (in total and per IP), and counters of every refusal, with one
// log line per reason per interval.
type admission struct {
	mu sync.Mutex
	// pending counts connections waiting for their Hello, by IP (guarded
	// by mu); total is their sum.
	pending map[string]int
	total   int

	rejected sync.Map // reason -> *atomic.Uint64
	logs     sync.Map // reason -> *rate.Sometimes
}

// enter takes a pending slot for a connection from ip; it returns the
// refusal reason, or "".
func (a *admission) enter(ip string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending == nil {
		a.pending = make(map[string]int)
	}
	switch {
	case a.total >= maxPending:
		return reasonPendingFull
	case a.pending[ip] >= maxPendingPerIP:
		return reasonPendingPerIP
	}
	a.pending[ip]++
	a.total++
	return ""
}

// leave gives the slot back.
func (a *admission) leave(ip string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if a.pending[ip]--; a.pending[ip] <= 0 {
		delete(a.pending, ip)
	}
}

// reject counts a refusal and reports whether it should be logged now
// (once per reason every 10 s: an attacker controls the rate).
func (a *admission) reject(reason string) (log bool) {
	c, _ := a.rejected.LoadOrStore(reason, new(atomic.Uint64))
	c.(*atomic.Uint64).Add(1)
	s, _ := a.logs.LoadOrStore(reason, &rate.Sometimes{Interval: 10 * time.Second})
	s.(*rate.Sometimes).Do(func() { log = true })
	return log
}

func (a *admission) counts() map[string]uint64 {
	out := map[string]uint64{}
	a.rejected.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	return out
}

func remoteIP(nc net.Conn) string {
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return nc.RemoteAddr().String()
}

// Process implements pluginapi.ProcessReporter: goroutines and memory of
// the plugin process (runtime/metrics), its memory limit and the refusals.
func (s *Service) Process() pluginapi.ProcessStats {
	samples := []metrics.Sample{
		{Name: "/sched/goroutines:goroutines"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
	}
	metrics.Read(samples)
	val := func(i int) uint64 {
		if samples[i].Value.Kind() == metrics.KindUint64 {
			return samples[i].Value.Uint64()
		}
		return 0
	}
	limit := debug.SetMemoryLimit(-1)
	if limit == int64(^uint64(0)>>1) {
		limit = 0
	}
	rejected := s.adm.counts()
	s.mu.Lock()
	for _, sw := range s.streams {
		rejected[reasonSlow] += sw.node.Counters().SlowDisconnects.Load()
		rejected[reasonConnCap] += sw.node.Counters().FullRefusals.Load()
	}
	s.mu.Unlock()
	return pluginapi.ProcessStats{Goroutines: val(0), MemoryBytes: val(1), HeapBytes: val(2),
		MemoryLimitBytes: uint64(limit), Rejected: rejected}
}
