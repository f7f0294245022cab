package httpapi

import (
	"html/template"

	"github.com/coopstreaming/coop/cluster/registry"
)

// Cluster is /v1/cluster: the registry's view from this node.
type Cluster struct {
	// Node is this node's id.
	Node string `json:"node"`
	registry.View
	// Error says why the view is empty or stale (registry unreachable).
	Error string `json:"error,omitempty"`
}

// clusterStatus returns the cluster section when the origin has one.
func clusterStatus(src Sources) (Cluster, bool) {
	f, ok := src.Extra["cluster"]
	if !ok {
		return Cluster{}, false
	}
	c, ok := f().(Cluster)
	return c, ok
}

// The status page's cluster section (its own template: the page's other
// sections are edited elsewhere).
var _ = template.Must(statusPage.New("cluster").Funcs(template.FuncMap{
	"kbps": func(bps float64) float64 { return bps * 8 / 1000 },
}).Parse(`<h2>Cluster</h2>
<p><small>node {{.Node}} · registry {{.Backend}}{{with .Error}} · <b class="state-failed">{{.}}</b>{{end}} ·
{{.Totals.Nodes}} nodes, {{.Totals.Streams}} streams, {{.Totals.Peers}} peers, {{.Totals.Readers}} readers, server egress {{rate (kbps .Totals.EgressBytesPerSec)}}</small></p>
<table><tr><th>node</th><th>role</th><th>streams</th><th>peers</th><th>readers</th><th>server egress</th><th>RTSP</th><th>peer port</th><th>API</th><th>last heartbeat</th></tr>
{{range .Nodes}}<tr><td>{{.ID}}</td><td>{{.Role}}</td><td>{{len .Streams}}</td><td>{{.Load.Peers}}</td><td>{{.Load.Readers}}</td><td>{{rate (kbps .Load.EgressBytesPerSec)}}</td>
<td>{{.Addr.RTSP}}</td><td>{{.Addr.Peer}}</td><td>{{.Addr.API}}</td><td>{{.Seen.Format "15:04:05"}}</td></tr>
{{else}}<tr><td colspan="10">no node</td></tr>{{end}}</table>
`))
