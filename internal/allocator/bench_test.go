// SPDX-License-Identifier: Apache-2.0

package allocator

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// BenchmarkAllocate10kServicesSlash16 converges 10,000 new services, one after the
// other, against one /16 pool, and reports the allocation rate.
func BenchmarkAllocate10kServicesSlash16(b *testing.B) {
	const services = 10000
	pools := buildPools(b, nil, pool("bench", []string{"10.20.0.0/16"}))
	svcs := make([]*corev1.Service, services)
	for i := range svcs {
		svcs[i] = service(fmt.Sprintf("svc-%d", i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		a := New()
		a.SetPools(pools)
		for _, s := range svcs {
			if r := a.Converge(s, nil); r.Pending || len(r.IPs) != 1 {
				b.Fatalf("%s: %+v", s.Name, r)
			}
		}
	}
	b.ReportMetric(float64(services)*float64(b.N)/b.Elapsed().Seconds(), "allocs/s")
}

// BenchmarkChurnSlash16 keeps 10,000 services on a /16 and replaces one at a time, so
// that every allocation reuses the low hole the release left.
func BenchmarkChurnSlash16(b *testing.B) {
	const services = 10000
	a := New()
	a.SetPools(buildPools(b, nil, pool("bench", []string{"10.20.0.0/16"})))
	for i := 0; i < services; i++ {
		a.Converge(service(fmt.Sprintf("svc-%d", i)), nil)
	}
	fresh := make([]*corev1.Service, b.N)
	for i := range fresh {
		fresh[i] = service(fmt.Sprintf("new-%d", i))
	}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		victim := fmt.Sprintf("default/svc-%d", (n*7919)%services)
		if n >= services {
			victim = fmt.Sprintf("default/new-%d", n-services)
		}
		a.Release(victim)
		if r := a.Converge(fresh[n], nil); r.Pending {
			b.Fatalf("%+v", r)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "allocs/s")
}
