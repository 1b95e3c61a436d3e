//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/maglb/maglb/internal/promtext"
)

var _ = Describe("Metrics", Label("metrics"), Ordered, func() {
	const ns = "e2e-metrics"
	ctx := context.Background()
	var vip, service string

	BeforeAll(func() {
		ensureNamespace(ctx, ns)
		createAdvertisedPool(ctx, "e2e-metrics", testCIDR(3))
		svc := createBackedService(ctx, ns, "web", map[string]string{"metallb.io/address-pool": "e2e-metrics"}, nil)
		vip, service = vipOf(ctx, svc), ns+"/web"
		Eventually(reachable(vip)).Should(WithTransform(backendOf, BeElementOf(backendNames())))
	})

	It("exposes the controller's allocator metrics with upstream's names", func() {
		Expect(env.ControllerMetrics).NotTo(BeEmpty(), "the environment's description names no controller metrics URL")
		metric := func(name string) func() (float64, error) {
			return func() (float64, error) {
				text, err := scrape(env.ControllerMetrics)
				if err != nil {
					return 0, err
				}
				return promtext.Value(text, name, "pool=e2e-metrics")
			}
		}
		size := float64(uint64(1) << (32 - netipBits(testCIDR(3))))
		Eventually(metric("metallb_allocator_addresses_total")).Should(Equal(size))
		Eventually(metric("metallb_allocator_addresses_in_use_total")).Should(Equal(1.0))
	})

	It("exposes the speakers' metrics with upstream's names", func() {
		protocol := map[string]string{"bgp": "bgp", "layer2": "layer2"}[env.Protocol]
		// Every node announces the BGP service; one node answers for the layer 2 one.
		announcing := func() (float64, error) {
			return lbMetric(lbNames(), "metallb_speaker_announced", "protocol="+protocol, "service="+service)
		}
		want := float64(len(lbNames()))
		if env.Protocol == "layer2" {
			want = 1
		}
		Eventually(announcing).Should(Equal(want))
		for _, lb := range lbNames() {
			text, err := scrape(env.LBNodes[lb].Metrics)
			Expect(err).NotTo(HaveOccurred())
			if env.Protocol == "bgp" {
				tor := fmt.Sprintf("peer=%s:179", env.Routers["tor"].Address)
				Expect(promtext.Value(text, "metallb_bgp_session_up", tor)).To(Equal(1.0), lb)
				Expect(promtext.Value(text, "metallb_bgp_announced_prefixes_total", tor)).To(BeNumerically(">=", 1), lb)
				Expect(promtext.Value(text, "metallb_bgp_updates_total", tor)).To(BeNumerically(">=", 1), lb)
			}
			if env.Datapath == "ebpf" {
				_, err := promtext.Value(text, "maglb_datapath_packets_total")
				Expect(err).NotTo(HaveOccurred(), lb)
			}
		}
		if env.Datapath == "ebpf" {
			// The traffic of BeforeAll crossed some LB node's datapath.
			Expect(lbMetric(lbNames(), "maglb_datapath_service_packets_total", "vip="+vip)).To(BeNumerically(">", 0))
		}
	})
})
