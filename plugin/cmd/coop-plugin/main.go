// Command coop-plugin is the CoopStreaming P2P plugin. The origin launches
// it through hashicorp/go-plugin (running it by hand prints a notice and
// exits); it listens for peers on the plugin port and runs each stream's
// tracker and server partner.
//
// One subcommand is for operators: `coop-plugin token -stream live/KEY
// -ttl 24h` prints a join token signed with the secret in
// COOP_PLUGIN_TOKENSECRET (the origin's plugin.tokenSecret).
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/coopstreaming/coop/plugin/jointoken"
	"github.com/coopstreaming/coop/plugin/p2pserver"
	"github.com/coopstreaming/coop/plugin/pluginapi"
	"github.com/coopstreaming/coop/webassets"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "token" {
		if err := mintToken(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "coop-plugin token:", err)
			os.Exit(2)
		}
		return
	}
	level := new(slog.LevelVar)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("component", "plugin")
	slog.SetDefault(log)
	svc := &p2pserver.Service{Log: log, Level: level, Watch: webassets.Watch()} // /watch/ on the web port
	go exitWithParent(log)
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: pluginapi.Handshake,
		Plugins:         plugin.PluginSet{pluginapi.PluginName: &pluginapi.GRPCPlugin{Impl: svc}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			// Parts are at most 1 MiB; leave room for the envelope.
			opts = append(opts, grpc.MaxRecvMsgSize(2*pluginapi.MaxPartBytes))
			return grpc.NewServer(opts...)
		},
	})
	svc.Close()
}

// exitWithParent ends the plugin when the origin that started it is gone
// without killing it (SIGKILL of the origin): the plugin is re-parented.
func exitWithParent(log *slog.Logger) {
	parent := os.Getppid()
	for range time.Tick(500 * time.Millisecond) {
		if os.Getppid() != parent {
			log.Warn("the origin is gone; exiting")
			os.Exit(0)
		}
	}
}

func mintToken(args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	stream := fs.String("stream", "", "stream name, e.g. live/KEY")
	ttl := fs.Duration("ttl", 24*time.Hour, "validity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secret := os.Getenv("COOP_PLUGIN_TOKENSECRET")
	if secret == "" {
		return fmt.Errorf("set COOP_PLUGIN_TOKENSECRET to the origin's plugin.tokenSecret")
	}
	if *stream == "" {
		return fmt.Errorf("-stream is required")
	}
	fmt.Println(jointoken.Mint([]byte(secret), *stream, time.Now().Add(*ttl)))
	return nil
}
