package registry

import (
	"context"
	"sync"
)

// Memory is the registry of a single node (no cluster.redis): the same
// contract as Redis, held in the process.
type Memory struct {
	opts Options

	mu      sync.Mutex // guards nodes, dropped
	nodes   map[string]Node
	dropped uint64
}

var _ Registry = (*Memory)(nil)

// NewMemory returns an empty in-memory registry.
func NewMemory(opts Options) *Memory {
	return &Memory{opts: opts.withDefaults(), nodes: make(map[string]Node)}
}

// Heartbeat implements Registry.
func (m *Memory) Heartbeat(_ context.Context, n Node) error {
	d, err := normalize(&n, m.opts.MaxStreamsPerNode)
	if err != nil {
		return err
	}
	now := m.opts.Now()
	n.Seen = now
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropped += uint64(d)
	m.expire()
	if _, ok := m.nodes[n.ID]; !ok && len(m.nodes) >= m.opts.MaxNodes {
		oldest := ""
		for id, x := range m.nodes {
			if oldest == "" || x.Seen.Before(m.nodes[oldest].Seen) {
				oldest = id
			}
		}
		delete(m.nodes, oldest)
		m.dropped++
	}
	m.nodes[n.ID] = n
	return nil
}

// expire runs under mu.
func (m *Memory) expire() {
	cut := m.opts.Now().Add(-m.opts.TTL)
	for id, n := range m.nodes {
		if !n.Seen.After(cut) {
			delete(m.nodes, id)
		}
	}
}

// Leave implements Registry.
func (m *Memory) Leave(_ context.Context, id string) error {
	m.mu.Lock()
	delete(m.nodes, id)
	m.mu.Unlock()
	return nil
}

// View implements Registry.
func (m *Memory) View(context.Context) (View, error) {
	m.mu.Lock()
	m.expire()
	nodes := make([]Node, 0, len(m.nodes))
	for _, n := range m.nodes {
		nodes = append(nodes, n)
	}
	dropped := m.dropped
	m.mu.Unlock()
	v := aggregate("memory", nodes, m.opts.MaxStreams)
	v.Dropped += dropped
	return v, nil
}

// Close implements Registry.
func (m *Memory) Close() error { return nil }
