// SPDX-License-Identifier: Apache-2.0

package datapath

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports a datapath's counters as maglb_datapath_* metrics, read at each scrape:
// the totals over every service, and per service (labelled vip, protocol, port).
type Collector struct {
	stats StatsReader
	descs map[string]*prometheus.Desc
}

var counterHelp = map[string]string{
	"packets_total":    "Packets to VIPs the datapath handled.",
	"bytes_total":      "Bytes of those packets.",
	"new_flows_total":  "Flows that got their backend from the Maglev ring.",
	"lru_misses_total": "Mid-flow TCP packets the connection table did not know: flows moved from another node, or evicted.",
	"drops_total":      "Packets to VIPs not forwarded, by reason.",
}

var gaugeHelp = map[string]string{
	"service_ids_used":     "Service ids in use: one per programmed VIP, protocol and port.",
	"service_ids_capacity": "Service ids the datapath has (the speaker's --datapath-max-services): services past it are not programmed and not announced.",
	"map_entries":          "Entries the datapath's kernel maps hold, by map (vips, vip_addresses, backends, rings: ring slots in use).",
}

// NewCollector returns a collector of stats.
func NewCollector(stats StatsReader) *Collector {
	c := &Collector{stats: stats, descs: map[string]*prometheus.Desc{}}
	for name, help := range counterHelp {
		labels := []string{}
		if name == "drops_total" {
			labels = []string{"reason"}
		}
		c.descs[name] = prometheus.NewDesc("maglb_datapath_"+name, help, labels, nil)
		c.descs["service_"+name] = prometheus.NewDesc("maglb_datapath_service_"+name, help+" Per service.",
			append([]string{"vip", "protocol", "port"}, labels...), nil)
	}
	for name, help := range gaugeHelp {
		labels := []string{}
		if name == "map_entries" {
			labels = []string{"map"}
		}
		c.descs[name] = prometheus.NewDesc("maglb_datapath_"+name, help, labels, nil)
	}
	return c
}

func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	stats, err := c.stats.Stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.descs["packets_total"], err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.descs["service_ids_used"], prometheus.GaugeValue, float64(stats.ServiceIDs))
	ch <- prometheus.MustNewConstMetric(c.descs["service_ids_capacity"], prometheus.GaugeValue, float64(stats.ServiceIDCapacity))
	for name, n := range stats.MapEntries {
		ch <- prometheus.MustNewConstMetric(c.descs["map_entries"], prometheus.GaugeValue, float64(n), name)
	}
	c.collect(ch, "", stats.Global)
	for key, counters := range stats.Services {
		c.collect(ch, "service_", counters, key.VIP.String(), key.Protocol.String(), itoa(key.Port))
	}
}

func (c *Collector) collect(ch chan<- prometheus.Metric, prefix string, counters Counters, labels ...string) {
	for name, value := range map[string]uint64{
		"packets_total": counters.Packets, "bytes_total": counters.Bytes,
		"new_flows_total": counters.NewFlows, "lru_misses_total": counters.LRUMisses,
	} {
		ch <- prometheus.MustNewConstMetric(c.descs[prefix+name], prometheus.CounterValue, float64(value), labels...)
	}
	for reason, value := range counters.Drops {
		ch <- prometheus.MustNewConstMetric(c.descs[prefix+"drops_total"], prometheus.CounterValue, float64(value), append(labels, reason)...)
	}
}

func itoa(port uint16) string {
	if port == 0 {
		return "any"
	}
	return strconv.Itoa(int(port))
}
