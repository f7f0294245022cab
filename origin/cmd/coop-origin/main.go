// Command coop-origin runs the CoopStreaming origin: RTMP and RTSP ingest,
// RTSP playback, the layered segmenter, metrics and the JSON API, and the
// P2P plugin it launches (coop-plugin, through hashicorp/go-plugin).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"

	"github.com/coopstreaming/coop/origin/config"
	"github.com/coopstreaming/coop/origin/core"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "coop-origin:", err)
		os.Exit(1)
	}
}

func run() error {
	configPath := flag.String("config", "", "path to coop.yml (default: embedded defaults)")
	flag.Parse()
	cfg, err := config.Load(*configPath, os.Environ())
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return fmt.Errorf("logLevel: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	if err := applyMemoryLimit(&cfg, log); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := &core.Origin{Config: cfg, Log: log}
	// Every way out of run closes the origin, which kills the plugin
	// process; the plugin also exits by itself if the origin is killed.
	defer o.Close()
	if err := o.Initialize(); err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// applyMemoryLimit sets the Go soft memory limit from memoryLimit, and
// exports it as GOMEMLIMIT, which the plugin process inherits (go-plugin
// passes the host's environment on), so the plugin's runtime applies the
// same limit at start-up.
func applyMemoryLimit(cfg *config.Config, log *slog.Logger) error {
	n, err := cfg.MemoryLimitBytes()
	if err != nil {
		return fmt.Errorf("memoryLimit: %w", err)
	}
	if n <= 0 {
		return nil
	}
	debug.SetMemoryLimit(n)
	if err := os.Setenv("GOMEMLIMIT", strconv.FormatInt(n, 10)+"B"); err != nil {
		return fmt.Errorf("memoryLimit: %w", err)
	}
	log.Info("Go memory limit set", "bytes", n, "memoryLimit", cfg.MemoryLimit)
	return nil
}
