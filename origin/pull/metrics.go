package pull

import "github.com/prometheus/client_golang/prometheus"

var (
	descUp = prometheus.NewDesc("coop_origin_source_up",
		"1 while a pulled source is ready, 0 while it connects or failed.", []string{"path"}, nil)
	descRetries = prometheus.NewDesc("coop_origin_source_failures_total",
		"Failed sessions of a pulled source (each one is retried).", []string{"path"}, nil)
	descSessions = prometheus.NewDesc("coop_origin_source_sessions_total",
		"Times a pulled source became ready.", []string{"path"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) {
	ch <- descUp
	ch <- descRetries
	ch <- descSessions
}

// Collect implements prometheus.Collector.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	for _, s := range m.Status() {
		up := 0.0
		if s.State == StateReady {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, s.Path)
		ch <- prometheus.MustNewConstMetric(descRetries, prometheus.CounterValue, float64(s.Retries), s.Path)
		ch <- prometheus.MustNewConstMetric(descSessions, prometheus.CounterValue, float64(s.Sessions), s.Path)
	}
}
