package stream

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the origin's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	segments    *prometheus.CounterVec
	layerBytes  *prometheus.CounterVec
	ingestBytes *prometheus.CounterVec
	// Readers counts RTSP readers per path.
	Readers *prometheus.GaugeVec
	// ReaderDrops counts RTP packets dropped for slow readers, per path.
	ReaderDrops *prometheus.CounterVec
	// Rejected counts refused connections and publishes by protocol and reason.
	Rejected *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coop_origin_segments_total", Help: "Segments cut, per stream path.",
		}, []string{"path"}),
		layerBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coop_origin_segment_layer_bytes_total", Help: "Encoded segment bytes per stream path and layer.",
		}, []string{"path", "layer"}),
		ingestBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coop_origin_ingest_bytes_total", Help: "Media payload bytes received from publishers.",
		}, []string{"path", "protocol"}),
		Readers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coop_origin_rtsp_readers", Help: "RTSP readers playing, per stream path.",
		}, []string{"path"}),
		ReaderDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coop_origin_rtsp_reader_dropped_packets_total", Help: "RTP packets dropped because a reader's queue was full.",
		}, []string{"path"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coop_origin_rejected_total", Help: "Refused connections and publishes, by protocol and reason.",
		}, []string{"protocol", "reason"}),
	}
	reg.MustRegister(m.segments, m.layerBytes, m.ingestBytes, m.Readers, m.ReaderDrops, m.Rejected)
	return m
}

func (m *Metrics) segment(path string, layer, bytes int) {
	if m == nil {
		return
	}
	if layer == 0 {
		m.segments.WithLabelValues(path).Inc()
	}
	m.layerBytes.WithLabelValues(path, strconv.Itoa(layer)).Add(float64(bytes))
}

func (m *Metrics) ingest(path, protocol string, bytes int) {
	if m == nil {
		return
	}
	m.ingestBytes.WithLabelValues(path, protocol).Add(float64(bytes))
}

// Reject counts a refusal; safe on a nil *Metrics.
func (m *Metrics) Reject(protocol, reason string) {
	if m == nil {
		return
	}
	m.Rejected.WithLabelValues(protocol, reason).Inc()
}

func (m *Metrics) readerDrop(path string) {
	if m == nil {
		return
	}
	m.ReaderDrops.WithLabelValues(path).Inc()
}
