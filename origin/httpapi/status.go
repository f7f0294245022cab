package httpapi

import (
	"fmt"
	"html/template"
	"net"
	"net/http"
	"strings"

	"github.com/coopstreaming/coop/origin/pull"
	"github.com/coopstreaming/coop/origin/stream"
)

// streamRow is one line of the status page's stream table.
type streamRow struct {
	stream.Info
	Fig    Figures
	Player string
	// Watch is the browser peer's page on the plugin's web port ("" when
	// the plugin or its web port is off).
	Watch string
}

func (src Sources) rows(r *http.Request) []streamRow {
	figs := map[string]Figures{}
	if src.History != nil {
		for _, f := range src.History.Figures() {
			figs[f.Path] = f
		}
	}
	web := ""
	if st, ok := p2pStatus(src); ok && st.Up {
		web = st.WebAddress
	}
	var rows []streamRow
	for _, in := range src.Streams() {
		row := streamRow{Info: in, Fig: figs[in.Path], Player: urlAt(r, src.HLSAddress, in.Path)}
		if web != "" {
			row.Watch = urlAt(r, web, "watch/"+in.Path)
		}
		rows = append(rows, row)
	}
	return rows
}

// urlAt is path on the server listening at addr, at the host the browser
// used to reach this page when addr names no host ("" when addr is
// empty: the server is off).
func urlAt(r *http.Request, addr, path string) string {
	if addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			host = h
		}
	}
	return "http://" + net.JoinHostPort(host, port) + "/" + path
}

func (src Sources) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	data := map[string]any{"Streams": src.rows(r), "Readers": src.Readers()}
	if st, ok := p2pStatus(src); ok {
		var figs []Figures
		if src.History != nil {
			figs = src.History.Figures()
		}
		data["P2P"] = newP2PView(st, figs)
	}
	if ss, ok := pulledSources(src); ok {
		data["Sources"] = ss
	}
	if cl, ok := clusterStatus(src); ok {
		data["Cluster"] = cl
	}
	_ = statusPage.Execute(w, data)
}

// pulledSources returns the pulled sources' states, the data behind
// /v1/sources, when the origin has that section.
func pulledSources(src Sources) ([]pull.Status, bool) {
	f, ok := src.Extra["sources"]
	if !ok {
		return nil, false
	}
	ss, ok := f().([]pull.Status)
	return ss, ok
}

// humanBytes writes a byte count with a decimal unit (kB, MB, GB).
func humanBytes(n uint64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

// humanRate writes a kbit/s figure, switching to Mbit/s above 10 000.
func humanRate(kbps float64) string {
	if kbps >= 10000 {
		return fmt.Sprintf("%.1f Mbit/s", kbps/1000)
	}
	return fmt.Sprintf("%.0f kbit/s", kbps)
}

// percent writes a share (0..1) as a percentage; "–" when unknown.
func percent(v any) string {
	switch x := v.(type) {
	case *float64:
		if x == nil {
			return "–"
		}
		return fmt.Sprintf("%.1f %%", *x*100)
	case float64:
		return fmt.Sprintf("%.1f %%", x*100)
	}
	return "–"
}

// percents writes layer shares as "70 % / 20 % / 10 %".
func percents(v []float64) string {
	if len(v) == 0 {
		return "–"
	}
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.0f %%", x*100)
	}
	return strings.Join(parts, " / ")
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes": humanBytes, "rate": humanRate, "pct": percent, "pcts": percents,
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>CoopStreaming origin</title>
<noscript><meta http-equiv="refresh" content="5"></noscript>
<style>
body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin-bottom:1em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}td:first-child,th:first-child{text-align:left}
th{background:#f4f4f4}small{color:#777}.plots{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0 24px}
.plot{border:1px solid #ddd;padding:4px 6px}.plot b{font-size:12px}.plot svg{display:block}
.state-ready{color:#1a7f37}.state-connecting{color:#9a6700}.state-failed{color:#cf222e;font-weight:bold}td.err{text-align:left;white-space:normal;max-width:40em}
</style></head>
<body><h1>CoopStreaming origin</h1>
<div id="tables">
<h2>Streams</h2>
<p><small>live = over the last minute (or since the stream started); totals are lifetime. Bytes out = RTSP + HLS + P2P (what the plugin's server partner sent).</small></p>
<table><tr><th>path</th><th>publisher</th><th>tracks</th><th>ingest (live)</th><th>out (live)</th><th>out RTSP / HLS / P2P (live)</th><th>bytes in</th><th>bytes out</th><th>RTSP readers</th><th>P2P peers</th><th>offload live</th><th>offload lifetime</th><th>layer shares</th><th>watch</th></tr>
{{range .Streams}}<tr><td>{{.Path}}{{if not .Publishing}} <small>(waiting for the publisher)</small>{{end}}</td><td>{{.Protocol}} {{.Publisher}}</td><td>{{range $i, $t := .Tracks}}{{if $i}}, {{end}}{{$t}}{{end}}</td>
<td>{{rate .Fig.IngestKbps}}</td><td>{{rate .Fig.OutKbps}}</td><td>{{rate .Fig.RTSPOutKbps}} / {{rate .Fig.HLSOutKbps}} / {{rate .Fig.P2POutKbps}}</td>
<td>{{bytes .BytesIn}}</td><td>{{bytes .Fig.BytesOut}}</td><td>{{.Readers}}</td><td>{{.Fig.Peers}}</td><td>{{pct .Fig.Offload}}</td><td>{{pct .Fig.OffloadLifetime}}</td><td>{{pcts .LayerShares}}</td>
<td>{{with .Player}}<a href="{{.}}">player</a> · <a href="{{.}}/index.m3u8">HLS</a>{{else}}–{{end}}{{with .Watch}} · <a href="{{.}}">browser peer</a>{{end}}</td></tr>
{{else}}<tr><td colspan="14">no stream</td></tr>{{end}}</table>
{{with .Cluster}}{{template "cluster" .}}{{end}}
<h2>RTSP readers</h2>
<table><tr><th>path</th><th>remote</th><th>transport</th><th>bytes sent</th><th>dropped packets</th></tr>
{{range .Readers}}<tr><td>{{.Path}}</td><td>{{.Remote}}</td><td>{{.Transport}}</td><td>{{bytes .BytesSent}}</td><td>{{.Dropped}}</td></tr>
{{else}}<tr><td colspan="5">no reader</td></tr>{{end}}</table>
{{with .Sources}}<h2>Pulled sources</h2>
<p><small>paths that name an upstream in coop.yml (paths.*.source); failed sources are retried with backoff.</small></p>
<table id="sources"><tr><th>path</th><th>upstream</th><th>state</th><th>since</th><th>retries</th><th>sessions</th><th>last error</th></tr>
{{range .}}<tr data-path="{{.Path}}" data-state="{{.State}}"><td>{{.Path}}</td><td>{{.URL}}</td><td class="state-{{.State}}">{{.State}}</td><td>{{.Since.UTC.Format "15:04:05"}} UTC</td><td>{{.Retries}}</td><td>{{.Sessions}}</td><td class="err">{{with .LastError}}{{.}}{{else}}–{{end}}</td></tr>
{{end}}</table>
{{end}}{{with .P2P}}<h2>P2P plugin</h2>
{{if .Enabled}}<p>{{if .Up}}up, pid {{.PID}}, peer port {{.PeerAddress}}{{else}}down{{end}} · starts {{.Starts}} · restarts {{.Restarts}} · segments pushed {{.SegmentsPushed}}, dropped {{.SegmentsDropped}}{{with .LastError}} · last error: {{.}}{{end}}</p>
<p>Stream public key (for <code>coop-peer --stream-key</code>): <code>{{.StreamPublicKey}}</code></p>
<table><tr><th>stream</th><th>peers</th><th>server sent (media)</th><th>peers got from server</th><th>peers got from peers</th><th>offload live</th><th>offload lifetime</th><th>continuity</th></tr>
{{range .Streams}}<tr><td>{{.Stream}}</td><td>{{.Peers}}</td><td>{{bytes .ServerMediaBytes}}</td><td>{{bytes .PeerBytesFromServer}}</td><td>{{bytes .PeerBytesFromPeers}}</td><td>{{pct .OffloadLastMinute}}</td><td>{{pct .OffloadLifetime}}</td><td>{{printf "%.3f" .Continuity}}</td></tr>
{{else}}<tr><td colspan="8">no swarm</td></tr>{{end}}</table>
{{else}}<p>disabled</p>{{end}}{{end}}
</div>
<h2>Last minutes</h2>
<div id="plots"><small>plots need JavaScript</small></div>
<p>JSON: <a href="/v1/status">/v1/status</a>, <a href="/v1/figures">/v1/figures</a>, <a href="/v1/history">/v1/history</a>, <a href="/v1/p2p">/v1/p2p</a>, <a href="/v1/sources">/v1/sources</a> · metrics: <a href="/metrics">/metrics</a></p>
<script src="/_coop/status.js"></script>
</body></html>`))
