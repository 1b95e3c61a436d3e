// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The metrics of upstream's native speaker, with its names, help and "peer" label
// ("address:port", formatted as upstream does). They are read from GoBGP when scraped.
var (
	sessionUpDesc = prometheus.NewDesc("metallb_bgp_session_up",
		"BGP session state (1 is up, 0 is down)", []string{"peer"}, nil)
	updatesSentDesc = prometheus.NewDesc("metallb_bgp_updates_total",
		"Number of BGP UPDATE messages sent", []string{"peer"}, nil)
	prefixesDesc = prometheus.NewDesc("metallb_bgp_announced_prefixes_total",
		"Number of prefixes currently being advertised on the BGP session", []string{"peer"}, nil)
	pendingPrefixesDesc = prometheus.NewDesc("metallb_bgp_pending_prefixes_total",
		"Number of prefixes that should be advertised on the BGP session", []string{"peer"}, nil)
)

type collector struct {
	speaker *Speaker
}

func (c *collector) register() error {
	if err := crmetrics.Registry.Register(c); err != nil {
		return fmt.Errorf("registering the BGP metrics (one speaker per process): %w", err)
	}
	return nil
}

func (c *collector) unregister() { crmetrics.Registry.Unregister(c) }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionUpDesc
	ch <- updatesSentDesc
	ch <- prefixesDesc
	ch <- pendingPrefixesDesc
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.speaker.Peers() {
		label := fmt.Sprintf("%s:%d", p.Addr, p.Port)
		up := 0.0
		if p.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(sessionUpDesc, prometheus.GaugeValue, up, label)
		ch <- prometheus.MustNewConstMetric(updatesSentDesc, prometheus.CounterValue, float64(p.UpdatesSent), label)
		ch <- prometheus.MustNewConstMetric(prefixesDesc, prometheus.GaugeValue, float64(p.Advertised), label)
		ch <- prometheus.MustNewConstMetric(pendingPrefixesDesc, prometheus.GaugeValue, float64(p.Wanted), label)
	}
}
