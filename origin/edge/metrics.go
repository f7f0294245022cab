package edge

import "github.com/prometheus/client_golang/prometheus"

var (
	descRelays   = prometheus.NewDesc("coop_edge_relays", "Streams this edge relays from the cluster's origins.", nil, nil)
	relayLabels  = []string{"stream"}
	descSegments = prometheus.NewDesc("coop_edge_relay_segments_total", "Relayed segments handed to the edge's readers.", relayLabels, nil)
	descGaps     = prometheus.NewDesc("coop_edge_relay_gaps_total", "Segments the relay never got (the readers waited for a random-access one).", relayLabels, nil)
	descAttempts = prometheus.NewDesc("coop_edge_relay_attempts_total", "Relay attempts (1 plus the retries after a failure).", relayLabels, nil)
)

// Describe implements prometheus.Collector.
func (e *Edge) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRelays, descSegments, descGaps, descAttempts} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (e *Edge) Collect(ch chan<- prometheus.Metric) {
	list := e.Status()
	ch <- prometheus.MustNewConstMetric(descRelays, prometheus.GaugeValue, float64(len(list)))
	for _, s := range list {
		ch <- prometheus.MustNewConstMetric(descSegments, prometheus.CounterValue, float64(s.Segments), s.Stream)
		ch <- prometheus.MustNewConstMetric(descGaps, prometheus.CounterValue, float64(s.Gaps), s.Stream)
		ch <- prometheus.MustNewConstMetric(descAttempts, prometheus.CounterValue, float64(s.Attempts), s.Stream)
	}
}
