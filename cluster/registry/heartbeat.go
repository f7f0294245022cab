package registry

import (
	"context"
	"log/slog"
	"time"
)

// Heartbeater refreshes one node's entry every Interval until its context
// ends, then leaves the registry.
type Heartbeater struct {
	Registry Registry
	// Interval is the heartbeat period (default DefaultHeartbeat).
	Interval time.Duration
	// Self builds the node's entry at each beat.
	Self func() Node
	// Log reports failures, at most one line per state change.
	Log *slog.Logger
}

// Run beats until ctx ends; it beats once at once.
func (h *Heartbeater) Run(ctx context.Context) {
	iv := h.Interval
	if iv <= 0 {
		iv = DefaultHeartbeat
	}
	log := h.Log
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	failing := false
	var id string
	for {
		n := h.Self()
		id = n.ID
		bctx, cancel := context.WithTimeout(ctx, iv)
		err := h.Registry.Heartbeat(bctx, n)
		cancel()
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			log.Warn("cluster heartbeat failing (logged again when it recovers)", "node", id, "err", err)
			failing = true
		case err == nil && failing:
			log.Info("cluster heartbeat recovered", "node", id)
			failing = false
		}
		select {
		case <-ctx.Done():
			lctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = h.Registry.Leave(lctx, id)
			cancel()
			return
		case <-t.C:
		}
	}
}
