//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var _ = Describe("L2", Label("layer2"), Ordered, func() {
	const ns = "e2e-l2"
	ctx := context.Background()
	var svc *corev1.Service
	var vips []string

	BeforeAll(func() {
		requireProtocol("layer2")
		ensureNamespace(ctx, ns)
		cidrs := []string{testCIDR(0)}
		var options []func(*corev1.Service)
		if env.VIPRange6 != "" {
			cidrs = append(cidrs, testCIDR6(0))
			options = append(options, dualStack)
		}
		createAdvertisedPool(ctx, "e2e-l2", cidrs...)
		svc = createBackedService(ctx, ns, "web", map[string]string{"metallb.io/address-pool": "e2e-l2"}, nil, options...)
		Eventually(ingressOf(ctx, svc)).Should(HaveLen(len(cidrs)))
		vips, _ = ingressOf(ctx, svc)()
	})

	It("answers through the VIPs (ARP, and NDP for IPv6) from the one node that announces them", func() {
		Eventually(l2Nodes(ctx, svc)).Should(HaveLen(1))
		for _, vip := range vips {
			expectAnswersThrough(svc, vip)
		}
	})

	It("fails over to another node when the announcing one leaves", func() {
		Eventually(l2Nodes(ctx, svc)).Should(HaveLen(1))
		nodes, _ := l2Nodes(ctx, svc)()
		owner := nodes[0]
		nodeDown(owner)
		DeferCleanup(func() { nodeUp(owner) })
		Eventually(l2Nodes(ctx, svc)).Should(And(HaveLen(1), Not(ContainElement(owner))), "another node takes over from %s", owner)
		for _, vip := range vips {
			Eventually(reachable(vip)).Should(WithTransform(backendOf, BeElementOf(backendNames())), vip)
		}
	})
})

// l2Nodes returns, for Eventually, the nodes whose ServiceL2Status says they announce svc.
func l2Nodes(ctx context.Context, svc *corev1.Service) func() ([]string, error) {
	return func() ([]string, error) {
		var statuses metallbv1beta1.ServiceL2StatusList
		if err := cs.List(ctx, &statuses, client.InNamespace(env.Namespace)); err != nil {
			return nil, err
		}
		nodes := []string{}
		for _, s := range statuses.Items {
			if s.Status.ServiceName == svc.Name && s.Status.ServiceNamespace == svc.Namespace {
				nodes = append(nodes, s.Status.Node)
			}
		}
		return nodes, nil
	}
}
