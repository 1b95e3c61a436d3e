// SPDX-License-Identifier: Apache-2.0

package layer2

import (
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The counters keep upstream MetalLB's names and "ip" label, so dashboards and alerts
// written for MetalLB keep working.
var (
	requestsReceived = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "metallb",
		Subsystem: "layer2",
		Name:      "requests_received",
		Help:      "ARP requests and NDP neighbor solicitations received for announced IPs.",
	}, []string{"ip"})

	responsesSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "metallb",
		Subsystem: "layer2",
		Name:      "responses_sent",
		Help:      "ARP replies and NDP neighbor advertisements sent in answer to requests for announced IPs.",
	}, []string{"ip"})

	gratuitousSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "metallb",
		Subsystem: "layer2",
		Name:      "gratuitous_sent",
		Help:      "Gratuitous ARP packets and unsolicited NDP neighbor advertisements sent, for newly announced IPs and periodically with --gratuitous-arp-interval.",
	}, []string{"ip"})
)

func init() {
	crmetrics.Registry.MustRegister(requestsReceived, responsesSent, gratuitousSent)
}
