// SPDX-License-Identifier: Apache-2.0

package reflector

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maglb/maglb/internal/bgp"
)

// The reflector's own metrics, as its last pass left them.
var (
	lbNodesGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "maglb_reflector_lb_nodes",
		Help: "LB nodes (next hops) announcing at least one route to the reflector.",
	})
	receivedGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "maglb_reflector_received_routes",
		Help: "Routes the LB nodes announce to the reflector.",
	})
	pathsGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "maglb_reflector_paths",
		Help: "Paths the reflector announces to its upstream peers: aggregates, or host routes of VIPs whose nodes differ from their aggregate's.",
	}, []string{"kind"})
)

// registerMetrics registers the reflector's metrics with registry.
func registerMetrics(registry prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{lbNodesGauge, receivedGauge, pathsGauge} {
		if err := registry.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func recordPass(received map[netip.Addr][]netip.Prefix, paths []bgp.Path) {
	routes := 0
	for _, prefixes := range received {
		routes += len(prefixes)
	}
	lbNodesGauge.Set(float64(len(received)))
	receivedGauge.Set(float64(routes))
	hosts := 0
	for _, p := range paths {
		if p.Prefix.IsSingleIP() {
			hosts++
		}
	}
	pathsGauge.WithLabelValues("aggregate").Set(float64(len(paths) - hosts))
	pathsGauge.WithLabelValues("host").Set(float64(hosts))
}
