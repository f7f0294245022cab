package httpapi

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPprofIsServedOnlyWhenAsked(t *testing.T) {
	base := http.NewServeMux()
	base.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	for name, tc := range map[string]struct {
		h    http.Handler
		want int
	}{
		"off: /debug/pprof/ is not found": {base, http.StatusNotFound},
		"on: /debug/pprof/ answers":       {WithPprof(base), http.StatusOK},
	} {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tc.h.ServeHTTP(rec, httptest.NewRequest("GET", "/debug/pprof/", nil))
			require.Equal(t, tc.want, rec.Code)
			rec = httptest.NewRecorder()
			tc.h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
			require.Equal(t, http.StatusOK, rec.Code, "the API still answers")
		})
	}
}

func TestNewServerSetsEveryReadTimeout(t *testing.T) {
	s := NewServer(http.NotFoundHandler(), 3*time.Second, slog.Default())
	require.Equal(t, 3*time.Second, s.ReadHeaderTimeout)
	require.Equal(t, 3*time.Second, s.ReadTimeout)
	require.Equal(t, 3*time.Second, s.IdleTimeout)
}
