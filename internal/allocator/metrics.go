// SPDX-License-Identifier: Apache-2.0

package allocator

import (
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The allocator's gauges, with MetalLB's names, labelled by pool. They live in
// controller-runtime's registry, which the manager serves.
var (
	addressesTotal     = poolGauge("addresses_total", "Number of usable IP addresses, per pool")
	ipv4AddressesTotal = poolGauge("ipv4_addresses_total", "Number of usable IPV4 addresses, per pool")
	ipv6AddressesTotal = poolGauge("ipv6_addresses_total", "Number of usable IPV6 addresses, per pool")
	addressesInUse     = poolGauge("addresses_in_use_total", "Number of IP addresses in use, per pool")
	ipv4AddressesInUse = poolGauge("ipv4_addresses_in_use_total", "Number of IPV4 addresses in use, per pool")
	ipv6AddressesInUse = poolGauge("ipv6_addresses_in_use_total", "Number of IPV6 addresses in use, per pool")
	servicesAllocated  = poolGauge("services_allocated_total", "Number of services allocated, per pool")

	allGauges = []*prometheus.GaugeVec{
		addressesTotal, ipv4AddressesTotal, ipv6AddressesTotal,
		addressesInUse, ipv4AddressesInUse, ipv6AddressesInUse,
		servicesAllocated,
	}
)

func init() {
	for _, g := range allGauges {
		crmetrics.Registry.MustRegister(g)
	}
}

func poolGauge(name, help string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "metallb",
		Subsystem: "allocator",
		Name:      name,
		Help:      help,
	}, []string{"pool"})
}

// poolGauges caches one pool's gauges, so that an update does not look them up.
type poolGauges struct {
	total, v4, v6, inUse, v4InUse, v6InUse, services prometheus.Gauge
}

func (a *Allocator) publish(pool string, total, v4, v6 int64, u *poolUsage) {
	g := a.gauges[pool]
	if g == nil {
		g = &poolGauges{
			total:    addressesTotal.WithLabelValues(pool),
			v4:       ipv4AddressesTotal.WithLabelValues(pool),
			v6:       ipv6AddressesTotal.WithLabelValues(pool),
			inUse:    addressesInUse.WithLabelValues(pool),
			v4InUse:  ipv4AddressesInUse.WithLabelValues(pool),
			v6InUse:  ipv6AddressesInUse.WithLabelValues(pool),
			services: servicesAllocated.WithLabelValues(pool),
		}
		a.gauges[pool] = g
	}
	g.total.Set(float64(total))
	g.v4.Set(float64(v4))
	g.v6.Set(float64(v6))
	g.inUse.Set(float64(len(u.users)))
	g.v4InUse.Set(float64(u.v4))
	g.v6InUse.Set(float64(u.v6))
	g.services.Set(float64(u.services))
}

func (a *Allocator) deleteMetrics(pool string) {
	delete(a.gauges, pool)
	for _, g := range allGauges {
		g.DeleteLabelValues(pool)
	}
}
