// Package auth decides who may publish and read: configured stream keys
// and/or an HTTP hook.
package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// ErrDenied is wrapped by every refusal.
var ErrDenied = errors.New("auth: denied")

// Request describes who asks for what.
type Request struct {
	Action   string `json:"action"` // "publish" or "read"
	Protocol string `json:"protocol"`
	Path     string `json:"path"`
	Key      string `json:"key"`
	Remote   string `json:"remote"`
}

// Checker checks publish and read requests.
type Checker struct {
	// PublishKeys lists the accepted stream keys; empty means any key.
	PublishKeys []string
	// HookURL, when set, receives a JSON POST of each Request; any status
	// other than 2xx refuses it.
	HookURL string
	// HookTimeout bounds a hook call (default 3s).
	HookTimeout time.Duration
	// Client is the HTTP client for the hook (default http.DefaultClient).
	Client *http.Client
}

// KeyOf returns the stream key of a path ("live/KEY" -> "KEY").
func KeyOf(path string) string {
	path = strings.Trim(path, "/")
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[i+1:]
	}
	return path
}

// Check allows or refuses r.
func (c *Checker) Check(ctx context.Context, r Request) error {
	if r.Action == "publish" && len(c.PublishKeys) > 0 && !slices.Contains(c.PublishKeys, r.Key) {
		return fmt.Errorf("%w: unknown stream key for %s", ErrDenied, r.Path)
	}
	if c.HookURL == "" {
		return nil
	}
	timeout := c.HookTimeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, _ := json.Marshal(r)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.HookURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("auth hook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	client := c.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: auth hook unreachable: %w", ErrDenied, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w: auth hook answered %d", ErrDenied, resp.StatusCode)
	}
	return nil
}
