package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/huddle-rtc/huddle/rooms/cluster"
	"github.com/huddle-rtc/huddle/turn"
)

// turnCollector exports the TURN server's counters at scrape time.
type turnCollector struct{ s *turn.Server }

var (
	descTurnAllocs   = prometheus.NewDesc("huddle_turn_allocations", "Live TURN allocations.", nil, nil)
	descTurnRelayed  = prometheus.NewDesc("huddle_turn_relayed_packets_total", "Packets TURN relays sent to peers.", nil, nil)
	descTurnReceived = prometheus.NewDesc("huddle_turn_received_packets_total", "Packets TURN relays received from peers.", nil, nil)
	descTurnRefused  = prometheus.NewDesc("huddle_turn_refused_total", "TURN requests refused, by reason.", []string{"reason"}, nil)
	descLeases       = prometheus.NewDesc("huddle_cluster_leases", "Room leases this node holds.", nil, nil)
)

func (c turnCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descTurnAllocs
	ch <- descTurnRelayed
	ch <- descTurnReceived
	ch <- descTurnRefused
}

func (c turnCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(descTurnAllocs, prometheus.GaugeValue, float64(st.Allocations))
	ch <- prometheus.MustNewConstMetric(descTurnRelayed, prometheus.CounterValue, float64(st.RelayedPackets))
	ch <- prometheus.MustNewConstMetric(descTurnReceived, prometheus.CounterValue, float64(st.ReceivedPkts))
	ch <- prometheus.MustNewConstMetric(descTurnRefused, prometheus.CounterValue, float64(st.Refused), "peer")
	ch <- prometheus.MustNewConstMetric(descTurnRefused, prometheus.CounterValue, float64(st.AuthFailures), "credential")
	ch <- prometheus.MustNewConstMetric(descTurnRefused, prometheus.CounterValue, float64(st.QuotaRefused), "quota")
}

// clusterCollector exports how many rooms this node holds.
type clusterCollector struct{ c *cluster.Cluster }

func (c clusterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descLeases }

func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descLeases, prometheus.GaugeValue, float64(len(c.c.Rooms())))
}
