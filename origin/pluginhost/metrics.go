package pluginhost

import "github.com/prometheus/client_golang/prometheus"

var (
	descUp       = prometheus.NewDesc("coop_plugin_up", "1 while the P2P plugin process runs and answers.", nil, nil)
	descStarts   = prometheus.NewDesc("coop_plugin_starts_total", "Plugin process launches.", nil, nil)
	descRestarts = prometheus.NewDesc("coop_plugin_restarts_total", "Plugin restarts after a failure.", nil, nil)
	descPushed   = prometheus.NewDesc("coop_plugin_segments_pushed_total", "Segments handed to the plugin.", nil, nil)
	descDropped  = prometheus.NewDesc("coop_plugin_segments_dropped_total", "Segments dropped because the plugin queue was full.", nil, nil)
	descBytes    = prometheus.NewDesc("coop_plugin_pushed_bytes_total", "Segment bytes handed to the plugin.", nil, nil)
	labels       = []string{"stream"}
	descPeers    = prometheus.NewDesc("coop_p2p_peers", "Peers connected to the stream's server partner.", labels, nil)
	descSrvMedia = prometheus.NewDesc("coop_p2p_server_media_bytes_total", "Media bytes the server partner uploaded to peers.", labels, nil)
	descSrvCtl   = prometheus.NewDesc("coop_p2p_server_control_bytes_total", "Control bytes the server partner sent.", labels, nil)
	descFromSrv  = prometheus.NewDesc("coop_p2p_peer_bytes_from_server_total", "Useful media bytes peers report they received from the server.", labels, nil)
	descFromPeer = prometheus.NewDesc("coop_p2p_peer_bytes_from_peers_total", "Useful media bytes peers report they received from other peers.", labels, nil)
	descOffload  = prometheus.NewDesc("coop_p2p_offload_ratio", "Share of peers' useful media bytes that came from peers.", labels, nil)
	descCont     = prometheus.NewDesc("coop_p2p_continuity", "Mean base-layer continuity reported by connected peers.", labels, nil)
	descRefused  = prometheus.NewDesc("coop_p2p_refused_joins_total", "Joins refused for a bad token.", labels, nil)
	descBanned   = prometheus.NewDesc("coop_p2p_banned_total", "Peers banned for bad data.", labels, nil)
	descGor      = prometheus.NewDesc("coop_plugin_goroutines", "Goroutines of the plugin process.", nil, nil)
	descMem      = prometheus.NewDesc("coop_plugin_memory_bytes", "Memory the plugin's Go runtime holds from the OS.", nil, nil)
	descHeap     = prometheus.NewDesc("coop_plugin_heap_bytes", "Heap objects of the plugin process.", nil, nil)
	descMemLimit = prometheus.NewDesc("coop_plugin_memory_limit_bytes", "Go soft memory limit of the plugin (0: none).", nil, nil)
	descRejected = prometheus.NewDesc("coop_p2p_rejected_total", "Peer connections the plugin refused or dropped, by reason.", []string{"reason"}, nil)
	// A relayed stream's (an edge's) relay in the origin's swarm.
	descRelayConn = prometheus.NewDesc("coop_p2p_relay_connected", "1 while the edge's relay of the stream is connected to the origin's server partner.", labels, nil)
	descRelaySrv  = prometheus.NewDesc("coop_p2p_relay_bytes_from_server_total", "Useful media bytes the relay received from the origin's server partner (per plugin process).", labels, nil)
	descRelayPeer = prometheus.NewDesc("coop_p2p_relay_bytes_from_peers_total", "Useful media bytes the relay received from other peers of the origin's swarm (per plugin process).", labels, nil)
)

// Describe implements prometheus.Collector.
func (h *Host) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descStarts, descRestarts, descPushed, descDropped, descBytes,
		descPeers, descSrvMedia, descSrvCtl, descFromSrv, descFromPeer, descOffload, descCont, descRefused, descBanned,
		descGor, descMem, descHeap, descMemLimit, descRejected, descRelayConn, descRelaySrv, descRelayPeer} {
		ch <- d
	}
}

// Collect implements prometheus.Collector from the last health check.
func (h *Host) Collect(ch chan<- prometheus.Metric) {
	st := h.Status()
	up := 0.0
	if st.Up {
		up = 1
	}
	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue
	ch <- prometheus.MustNewConstMetric(descUp, gauge, up)
	ch <- prometheus.MustNewConstMetric(descStarts, counter, float64(st.Starts))
	ch <- prometheus.MustNewConstMetric(descRestarts, counter, float64(st.Restarts))
	ch <- prometheus.MustNewConstMetric(descPushed, counter, float64(st.SegmentsPushed))
	ch <- prometheus.MustNewConstMetric(descDropped, counter, float64(st.SegmentsDropped))
	ch <- prometheus.MustNewConstMetric(descBytes, counter, float64(st.BytesPushed))
	ch <- prometheus.MustNewConstMetric(descGor, gauge, float64(st.Process.Goroutines))
	ch <- prometheus.MustNewConstMetric(descMem, gauge, float64(st.Process.MemoryBytes))
	ch <- prometheus.MustNewConstMetric(descHeap, gauge, float64(st.Process.HeapBytes))
	ch <- prometheus.MustNewConstMetric(descMemLimit, gauge, float64(st.Process.MemoryLimitBytes))
	for reason, n := range st.Process.Rejected {
		ch <- prometheus.MustNewConstMetric(descRejected, counter, float64(n), reason)
	}
	for _, s := range st.Streams {
		ch <- prometheus.MustNewConstMetric(descPeers, gauge, float64(s.Peers), s.Stream)
		ch <- prometheus.MustNewConstMetric(descSrvMedia, counter, float64(s.ServerMediaBytes), s.Stream)
		ch <- prometheus.MustNewConstMetric(descSrvCtl, counter, float64(s.ServerControlBytes), s.Stream)
		ch <- prometheus.MustNewConstMetric(descFromSrv, counter, float64(s.PeerBytesFromServer), s.Stream)
		ch <- prometheus.MustNewConstMetric(descFromPeer, counter, float64(s.PeerBytesFromPeers), s.Stream)
		ch <- prometheus.MustNewConstMetric(descOffload, gauge, s.Offload(), s.Stream)
		ch <- prometheus.MustNewConstMetric(descCont, gauge, s.Continuity, s.Stream)
		ch <- prometheus.MustNewConstMetric(descRefused, counter, float64(s.RefusedJoins), s.Stream)
		ch <- prometheus.MustNewConstMetric(descBanned, counter, float64(s.Banned), s.Stream)
		if s.Upstream != "" {
			conn := 0.0
			if s.RelayConnected {
				conn = 1
			}
			ch <- prometheus.MustNewConstMetric(descRelayConn, gauge, conn, s.Stream)
			ch <- prometheus.MustNewConstMetric(descRelaySrv, counter, float64(s.RelayBytesFromServer), s.Stream)
			ch <- prometheus.MustNewConstMetric(descRelayPeer, counter, float64(s.RelayBytesFromPeers), s.Stream)
		}
	}
}
