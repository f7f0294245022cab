// Package integration holds end-to-end tests that start real binaries and
// real clients, the emulated swarm and the benchmarks. It may import
// anything; the rules below say what the product packages may import.
package integration

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/coopstreaming/coop"

// importRule forbids packages under prefix from depending on anything
// that starts with one of the forbidden prefixes.
type importRule struct {
	prefix    string
	forbidden []string
	allowed   []string // exceptions to forbidden (exact package paths)
}

var mediaLibs = []string{
	"github.com/bluenviron/gortsplib", "github.com/bluenviron/mediacommon",
	"github.com/yutopp/go-rtmp", "github.com/yutopp/go-amf0",
}

var importRules = []importRule{
	{
		prefix: module + "/peerproto",
		forbidden: append([]string{
			module + "/origin", module + "/plugin", module + "/segment", module + "/lab",
			"github.com/hashicorp/go-plugin", "google.golang.org/grpc",
		}, mediaLibs...),
	},
	{
		// The evaluation lab (simulated network, swarm scenarios,
		// baselines, topologies) builds on the P2P core; the core never
		// imports it (rule above), and the lab is no media server either.
		prefix: module + "/lab",
		forbidden: append([]string{
			module + "/origin", module + "/plugin", module + "/segment",
			"github.com/hashicorp/go-plugin", "google.golang.org/grpc",
		}, mediaLibs...),
	},
	{
		prefix: module + "/plugin/pluginapi",
		forbidden: append([]string{
			module + "/origin", module + "/peerproto", module + "/segment",
		}, mediaLibs...),
	},
	{
		prefix:    module + "/plugin",
		forbidden: []string{module + "/origin"},
	},
	{
		prefix:    module + "/origin",
		forbidden: []string{module + "/peerproto", module + "/plugin"},
		allowed:   []string{module + "/plugin/pluginapi"},
	},
	{
		// The peer client: P2P core plus container-aware playout; never
		// the origin or the plugin's internals.
		prefix: module + "/peer",
		forbidden: []string{
			module + "/origin", module + "/plugin", "github.com/hashicorp/go-plugin", "google.golang.org/grpc",
			"github.com/yutopp/go-rtmp", "github.com/yutopp/go-amf0",
		},
	},
	{
		// Vendored browser files shared by the origin and coop-peer: a
		// leaf that either side may import.
		prefix:    module + "/webassets",
		forbidden: []string{module + "/origin", module + "/peer", module + "/peerproto", module + "/plugin", module + "/segment"},
	},
	{
		// The cluster's shared state (registry, heartbeats): neutral, so
		// the origin and the plugin may both import it.
		prefix: module + "/cluster",
		forbidden: append([]string{
			module + "/origin", module + "/peerproto", module + "/plugin", module + "/lab", module + "/peer",
			"github.com/hashicorp/go-plugin", "google.golang.org/grpc",
		}, mediaLibs...),
	},
	{
		prefix:    module + "/segment",
		forbidden: []string{module + "/origin", module + "/peerproto", module + "/plugin"},
	},
}

// TestImportRules enforces the boundaries of docs/architecture.md with
// `go list -deps`: the P2P core never imports media-server code, the origin
// talks to the plugin only through plugin/pluginapi.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, module+"/...").CombinedOutput()
	require.NoError(t, err, string(out))
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, deps := fields[0], fields[1:]
		for _, rule := range importRules {
			if pkg != rule.prefix && !strings.HasPrefix(pkg, rule.prefix+"/") {
				continue
			}
			checked++
			for _, dep := range deps {
				if violates(dep, rule) {
					t.Errorf("%s must not depend on %s", pkg, dep)
				}
			}
		}
	}
	require.NotZero(t, checked, "no package matched any rule")
}

func violates(dep string, rule importRule) bool {
	for _, a := range rule.allowed {
		if dep == a || strings.HasPrefix(dep, a+"/") {
			return false
		}
	}
	for _, f := range rule.forbidden {
		if dep == f || strings.HasPrefix(dep, f+"/") {
			return true
		}
	}
	return false
}

func TestImportRuleCheckerCatchesAViolation(t *testing.T) {
	rule := importRules[0]
	require.True(t, violates(module+"/origin/stream", rule))
	require.True(t, violates("github.com/bluenviron/gortsplib/v4", rule))
	require.False(t, violates("golang.org/x/time/rate", rule))
	require.True(t, violates(module+"/lab/swarm", rule), "peerproto never imports lab")
	require.False(t, violates(module+"/plugin/pluginapi", importRules[4]))
	require.True(t, violates(module+"/plugin/server", importRules[4]))
}
