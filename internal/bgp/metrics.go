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

// The BFD metrics of upstream's FRR mode, with its names, help and labels: "peer" is the
// peer's address, "vrf" always "default". GoBGP sends no echo packets, so those count 0.
// Upstream's metallb_bfd_zebra_notifications counts FRR's internal messages, which have
// no counterpart here.
var (
	bfdLabels         = []string{"peer", "vrf"}
	bfdSessionUpDesc  = prometheus.NewDesc("metallb_bfd_session_up", "BFD session state (1 is up, 0 is down)", bfdLabels, nil)
	bfdControlInDesc  = prometheus.NewDesc("metallb_bfd_control_packet_input", "Number of received BFD control packets", bfdLabels, nil)
	bfdControlOutDesc = prometheus.NewDesc("metallb_bfd_control_packet_output", "Number of sent BFD control packets", bfdLabels, nil)
	bfdEchoInDesc     = prometheus.NewDesc("metallb_bfd_echo_packet_input", "Number of received BFD echo packets", bfdLabels, nil)
	bfdEchoOutDesc    = prometheus.NewDesc("metallb_bfd_echo_packet_output", "Number of sent BFD echo packets", bfdLabels, nil)
	bfdUpEventsDesc   = prometheus.NewDesc("metallb_bfd_session_up_events", "Number of BFD session up events", bfdLabels, nil)
	bfdDownEventsDesc = prometheus.NewDesc("metallb_bfd_session_down_events", "Number of BFD session down events", bfdLabels, nil)
)

const bfdVRF = "default"

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
	for _, d := range []*prometheus.Desc{bfdSessionUpDesc, bfdControlInDesc, bfdControlOutDesc, bfdEchoInDesc, bfdEchoOutDesc, bfdUpEventsDesc, bfdDownEventsDesc} {
		ch <- d
	}
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
	for _, b := range c.speaker.BFD() {
		up := 0.0
		if b.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(bfdSessionUpDesc, prometheus.GaugeValue, up, b.Addr, bfdVRF)
		ch <- prometheus.MustNewConstMetric(bfdControlInDesc, prometheus.CounterValue, float64(b.PacketsIn), b.Addr, bfdVRF)
		ch <- prometheus.MustNewConstMetric(bfdControlOutDesc, prometheus.CounterValue, float64(b.PacketsOut), b.Addr, bfdVRF)
		ch <- prometheus.MustNewConstMetric(bfdEchoInDesc, prometheus.CounterValue, 0, b.Addr, bfdVRF)
		ch <- prometheus.MustNewConstMetric(bfdEchoOutDesc, prometheus.CounterValue, 0, b.Addr, bfdVRF)
		ch <- prometheus.MustNewConstMetric(bfdUpEventsDesc, prometheus.CounterValue, float64(b.UpEvents), b.Addr, bfdVRF)
		ch <- prometheus.MustNewConstMetric(bfdDownEventsDesc, prometheus.CounterValue, float64(b.DownEvents), b.Addr, bfdVRF)
	}
}
