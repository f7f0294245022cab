package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	yaml "go.yaml.in/yaml/v3"

	"github.com/coopstreaming/coop/origin/config"
)

// composeFile is the part of docker-compose.yml the test reads.
type composeFile struct {
	Services map[string]struct {
		Profiles    []string          `yaml:"profiles"`
		Image       string            `yaml:"image"`
		Entrypoint  []string          `yaml:"entrypoint"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		DependsOn   map[string]any    `yaml:"depends_on"`
		Ports       []string          `yaml:"ports"`
	} `yaml:"services"`
}

// envKeys lists every COOP_ environment override the config knows (the
// leaf keys of config.Config, as applyEnv names them).
func envKeys(t reflect.Type, prefix string, out map[string]bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("yaml")
		if prefix != "" {
			key = prefix + "." + key
		}
		if f.Type.Kind() == reflect.Struct {
			envKeys(f.Type, key, out)
			continue
		}
		out[config.EnvPrefix+strings.ToUpper(strings.ReplaceAll(key, ".", "_"))] = true
	}
}

// interpolate applies compose's ${VAR:-default} with the defaults.
func interpolate(s string) string {
	return regexp.MustCompile(`\$\{[A-Z_]+:-([^}]*)\}`).ReplaceAllString(s, "$1")
}

// TestComposeFileIsValid parses docker-compose.yml (Docker is not run
// here): the default services run without a profile; the cluster
// profile has Redis, one origin and two edges; every COOP_ key a service
// sets exists and the origin/edge configs load with the shipped coop.yml
// (as the image runs them); every coop-peer flag exists; every
// depends_on names a service of the same profile or of no profile.
func TestComposeFileIsValid(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "docker-compose.yml"))
	require.NoError(t, err)
	var cf composeFile
	require.NoError(t, yaml.Unmarshal(b, &cf))

	byProfile := map[string][]string{}
	for name, s := range cf.Services {
		require.LessOrEqual(t, len(s.Profiles), 1, "%s: one profile at most", name)
		p := ""
		if len(s.Profiles) == 1 {
			p = s.Profiles[0]
		}
		byProfile[p] = append(byProfile[p], name)
	}
	for _, l := range byProfile {
		sort.Strings(l)
	}
	require.Equal(t, []string{"origin", "peer", "publisher"}, byProfile[""], "docker compose up (no profile)")
	require.Equal(t, []string{"cluster-origin", "cluster-peer", "cluster-publisher", "edge-a", "edge-b", "redis"},
		byProfile["cluster"])

	known := map[string]bool{}
	envKeys(reflect.TypeFor[config.Config](), "", known)
	require.True(t, known["COOP_CLUSTER_PLACEMENT_MAXREADERS"], "the key walk sees nested keys")
	roles := map[string]string{}
	hostPorts := map[string]string{}
	out, _ := exec.Command(filepath.Join(binDir, "coop-peer"), "-h").CombinedOutput() // -h: the flag list
	peerHelp := string(out)
	require.Contains(t, peerHelp, "-stream")
	for name, s := range cf.Services {
		for dep := range s.DependsOn {
			d, ok := cf.Services[dep]
			require.True(t, ok, "%s depends on unknown service %s", name, dep)
			require.True(t, len(d.Profiles) == 0 || slices.Equal(d.Profiles, s.Profiles),
				"%s depends on %s of another profile", name, dep)
		}
		for _, p := range s.Ports {
			host, _, _ := strings.Cut(p, ":")
			if other, dup := hostPorts[host]; dup {
				t.Errorf("host port %s mapped by %s and %s", host, other, name)
			}
			hostPorts[host] = name
		}
		var env []string
		for k, v := range s.Environment {
			require.True(t, known[k], "%s sets %s, which is no config key", name, k)
			env = append(env, k+"="+interpolate(v))
		}
		switch {
		case s.Image == "coopstreaming/coop:dev" && len(s.Entrypoint) == 0:
			// The image's entrypoint: coop-origin --config /etc/coop/coop.yml.
			c, err := config.Load(filepath.Join("..", "coop.yml"), env)
			require.NoError(t, err, "%s's configuration", name)
			roles[name] = c.Cluster.Role
			if c.Cluster.Role == "edge" {
				require.NotEmpty(t, c.Cluster.Upstream, "%s: an edge names its upstream", name)
				_, ok := cf.Services[strings.Split(c.Cluster.Upstream, ":")[0]]
				require.True(t, ok, "%s: upstream %s is a service", name, c.Cluster.Upstream)
			}
		case len(s.Entrypoint) > 0 && s.Entrypoint[0] == "coop-peer":
			for _, a := range s.Command {
				if f, ok := strings.CutPrefix(a, "--"); ok {
					require.Regexp(t, `(?m)^  -`+regexp.QuoteMeta(f)+`(\s|$)`, peerHelp, "%s: coop-peer has no flag --%s", name, f)
				}
			}
		}
	}
	require.Equal(t, "origin", roles["cluster-origin"])
	require.Equal(t, "edge", roles["edge-a"])
	require.Equal(t, "edge", roles["edge-b"])
	require.Equal(t, "origin", roles["origin"])
}
