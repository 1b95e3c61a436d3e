// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/testenv"
)

// BenchmarkAnnounce measures, for N Services (MAGLB_BENCH_SERVICES, default 1,000) getting
// their IP at once, the time from a Service's IP being written to its route being visible at
// the router, and the rate at which routes appear.
func BenchmarkAnnounce(b *testing.B) {
	n := benchServices()
	for range b.N {
		benchAnnounce(b, n)
	}
}

func benchAnnounce(b *testing.B, n int) {
	lab, c := newBenchLab(b)
	lab.startSpeaker(b, "lb1")
	ctx := context.Background()
	services := make([]*corev1.Service, n)
	parallel(b, n, func(i int) error {
		var err error
		services[i], err = createBenchService(ctx, b, c, i, false)
		return err
	})

	// Measured: write every Service's IP (as the controller does) and watch the router.
	written := make([]time.Time, n)
	seen := map[string]time.Time{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(seen) < n {
			routes, err := routerPrefixes(lab)
			if err != nil {
				continue
			}
			now := time.Now()
			for prefix := range routes {
				if _, ok := seen[prefix]; !ok {
					seen[prefix] = now
				}
			}
		}
	}()
	start := time.Now()
	parallel(b, n, func(i int) error {
		svc := services[i]
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: benchIP(i).String()}}
		written[i] = time.Now()
		return c.Status().Update(ctx, svc)
	})
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d routes at the router after 5 minutes", len(seen), n)
	}
	var latencies []time.Duration
	last := start
	for i := range n {
		at := seen[netip.PrefixFrom(benchIP(i), 32).String()]
		latencies = append(latencies, at.Sub(written[i]))
		if at.After(last) {
			last = at
		}
	}
	slices.Sort(latencies)
	p50, p99 := latencies[n/2], latencies[n*99/100]
	rate := float64(n) / last.Sub(start).Seconds()
	b.ReportMetric(p50.Seconds()*1000, "p50-ms")
	b.ReportMetric(p99.Seconds()*1000, "p99-ms")
	b.ReportMetric(rate, "services/s")

	// Every announced Service gets its nodeAssigned event, however many at once.
	events := 0
	for name, count := range testenv.SettledEvents(b, lab.env.Client, "default", "nodeAssigned") {
		if strings.HasPrefix(name, "bench-") {
			events += count
		}
	}
	perService := float64(events) / float64(n)
	b.ReportMetric(perService, "events/service")
	fmt.Printf("\n%d services: IP written → route at the router: p50 %v, p99 %v; %.0f services announced per second; %.2f nodeAssigned events per service\n",
		n, p50.Round(time.Millisecond), p99.Round(time.Millisecond), rate, perService)
	if events != n {
		b.Errorf("%d nodeAssigned events for %d announced Services, want one each", events, n)
	}
}

// newBenchLab is one LB node peering with the ToR, the configuration that announces the
// bench pool from it, and a fast client for the setup, which is not measured.
func newBenchLab(b *testing.B) (*bgpLab, client.Client) {
	lab := newBGPLab(b, map[string]string{"lb1": "172.30.0.2"})
	announcePool(b, "bench", "10.100.0.0/16")
	return lab, fastClient(b, lab)
}

// fastClient is a client of the lab's API server for a benchmark's setup, which is not measured.
func fastClient(b *testing.B, lab *bgpLab) client.Client {
	cfg := rest.CopyConfig(lab.env.Config)
	cfg.QPS, cfg.Burst = 2000, 4000
	c, err := client.New(cfg, client.Options{Scheme: k8s.NewScheme()})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// createBenchService creates the i-th bench Service with a ready endpoint on lb1 and, when
// withIP, its IP written as the controller does. Both objects are deleted when b ends.
func createBenchService(ctx context.Context, b *testing.B, c client.Client, i int, withIP bool) (*corev1.Service, error) {
	var ip netip.Addr
	if withIP {
		ip = benchIP(i)
	}
	return createPoolService(ctx, b, c, fmt.Sprintf("bench-%d", i), "bench", "lb1", ip)
}

// createPoolService creates a Service of pool with a ready endpoint on node and, when ip is
// valid, that IP written as the controller does. Both objects are deleted when b ends.
func createPoolService(ctx context.Context, b *testing.B, c client.Client, name, pool, node string, ip netip.Addr) (*corev1.Service, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: map[string]string{"metallb.io/ip-allocated-from-pool": pool}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, AllocateLoadBalancerNodePorts: ptr.To(false),
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}, NodeName: ptr.To(node), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	b.Cleanup(func() {
		_ = client.IgnoreNotFound(c.Delete(ctx, svc))
		_ = client.IgnoreNotFound(c.Delete(ctx, slice))
	})
	if err := c.Create(ctx, svc); err != nil {
		return nil, err
	}
	if ip.IsValid() {
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String()}}
		if err := c.Status().Update(ctx, svc); err != nil {
			return nil, err
		}
	}
	return svc, c.Create(ctx, slice)
}

// routerPrefixes returns the IPv4 prefixes in the router's BGP table.
func routerPrefixes(lab *bgpLab) (map[string]any, error) {
	var table struct {
		Routes map[string]any `json:"routes"`
	}
	err := lab.router.VtyshJSON("show bgp ipv4 unicast json", &table)
	return table.Routes, err
}

// benchServices is MAGLB_BENCH_SERVICES, default 1,000.
func benchServices() int { return envInt("MAGLB_BENCH_SERVICES", 1000) }

// envInt is the positive integer in the environment variable name, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func benchIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)})
}

// parallel runs f for 0..n-1 on 32 workers and fails b on the first error. A long run prints
// its progress every 10 s.
func parallel(b testing.TB, n int, f func(int) error) {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	start, lastPrint := time.Now(), time.Now()
	for i := range n {
		next <- i
		if time.Since(lastPrint) > 10*time.Second {
			fmt.Printf("  %d of %d started after %v\n", i+1, n, time.Since(start).Round(time.Second))
			lastPrint = time.Now()
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}
