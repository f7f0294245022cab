package httpapi

import (
	"net/http"

	"github.com/coopstreaming/coop/origin/pluginhost"
	"github.com/coopstreaming/coop/origin/webui"
)

// register adds the figures, history, player redirect and asset routes.
func (src Sources) register(mux *http.ServeMux, writeJSON func(http.ResponseWriter, any)) {
	mux.HandleFunc("GET /v1/figures", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"streams": src.figures()})
	})
	mux.HandleFunc("GET /v1/history", func(w http.ResponseWriter, _ *http.Request) {
		series := map[string][]Point{}
		if src.History != nil {
			series = src.History.Series()
		}
		writeJSON(w, map[string]any{"streams": series})
	})
	mux.Handle("GET /_coop/", http.StripPrefix("/_coop", webui.Assets()))
	// The player lives on the HLS port (same origin as its playlists, so
	// the browser's basic-auth credentials cover both); send browsers there.
	mux.HandleFunc("GET /live/{key...}", func(w http.ResponseWriter, r *http.Request) {
		u := urlAt(r, src.HLSAddress, "live/"+r.PathValue("key"))
		if u == "" {
			http.Error(w, "HLS is off (hls.enabled)", http.StatusNotFound)
			return
		}
		http.Redirect(w, r, u, http.StatusFound)
	})
}

// figures returns the live and lifetime figures ([] without a History).
func (src Sources) figures() []Figures {
	if src.History == nil {
		return []Figures{}
	}
	return src.History.Figures()
}

// view gives the JSON API's camelCase view of a section.
func (src Sources) view(v any) any {
	if st, ok := v.(pluginhost.Status); ok {
		return newP2PView(st, src.figures())
	}
	return v
}
