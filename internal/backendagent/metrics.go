// SPDX-License-Identifier: Apache-2.0

package backendagent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/maglb/maglb/datapath/ebpf"
)

// collector exports the decapsulation counters as maglb_decap_* metrics, read at each scrape.
type collector struct {
	stats    func() (ebpf.DecapCounters, error)
	packets  *prometheus.Desc
	bytes    *prometheus.Desc
	rejected *prometheus.Desc
}

// NewCollector returns the collector of stats that the agent serves at /metrics.
func NewCollector(stats func() (ebpf.DecapCounters, error)) prometheus.Collector {
	return &collector{
		stats: stats,
		packets: prometheus.NewDesc("maglb_decap_packets_total",
			"Tunnelled packets decapsulated, by encapsulation.", []string{"encapsulation"}, nil),
		bytes: prometheus.NewDesc("maglb_decap_bytes_total",
			"Bytes of the inner packets decapsulated.", nil, nil),
		rejected: prometheus.NewDesc("maglb_decap_rejected_total",
			"Tunnelled packets to the node dropped because their outer source is not an allowed tunnel source.", nil, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
	ch <- c.rejected
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.packets, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(s.IPIP), "ipip")
	ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(s.GUE), "gue")
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(s.Bytes))
	ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(s.Rejected))
}
