//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// The suite owns 10.250.0.0/16 and the namespace e2e-assignment: nothing else may use them.
const testNamespace = "e2e-assignment"

var _ = Describe("IP Assignment", Ordered, func() {
	ctx := context.Background()

	BeforeAll(func() {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNamespace, Labels: map[string]string{"e2e": "assignment"}}}
		// The namespace stays: clusters without a namespace controller (the dev-env) would keep
		// it terminating forever. The specs delete what they create in it.
		Expect(client.IgnoreAlreadyExists(cs.Create(ctx, ns))).To(Succeed())
		createPool(ctx, "e2e-a", []string{"10.250.1.0/29"}, nil)
		createPool(ctx, "e2e-b", []string{"10.250.2.0/29"}, func(s *maglbv1beta1.IPAddressPoolSpec) { s.AutoAssign = ptr.To(false) })
	})

	It("assigns from the pool named by the address-pool annotation", func() {
		svc := createService(ctx, testNamespace, "by-pool", map[string]string{"metallb.io/address-pool": "e2e-b"}, 80)
		Eventually(ingressOf(ctx, svc)).Should(Equal([]string{"10.250.2.0"}))
		Eventually(annotationOf(ctx, svc, "metallb.io/ip-allocated-from-pool")).Should(Equal("e2e-b"))
	})

	It("assigns the requested IP", func() {
		svc := createService(ctx, testNamespace, "requested", map[string]string{"metallb.io/loadBalancerIPs": "10.250.1.5"}, 80)
		Eventually(ingressOf(ctx, svc)).Should(Equal([]string{"10.250.1.5"}))
	})

	It("shares an IP between services with the same key and different ports, and refuses a clash", func() {
		shared := map[string]string{"metallb.io/allow-shared-ip": "e2e", "metallb.io/loadBalancerIPs": "10.250.1.6"}
		http := createService(ctx, testNamespace, "shared-http", shared, 80)
		https := createService(ctx, testNamespace, "shared-https", shared, 443)
		Eventually(ingressOf(ctx, http)).Should(Equal([]string{"10.250.1.6"}))
		Eventually(ingressOf(ctx, https)).Should(Equal([]string{"10.250.1.6"}))
		clash := createService(ctx, testNamespace, "shared-clash", shared, 443)
		Eventually(eventReasons(ctx, clash)).Should(ContainElement("AllocationFailed"))
		Consistently(ingressOf(ctx, clash), 2*time.Second).Should(BeEmpty())
	})

	It("prefers the pool with the lowest priority among those selecting the namespace", func() {
		for _, p := range []struct {
			name, cidr string
			priority   int
		}{{"e2e-prio-20", "10.250.20.0/29", 20}, {"e2e-prio-10", "10.250.10.0/29", 10}} {
			createPool(ctx, p.name, []string{p.cidr}, func(s *maglbv1beta1.IPAddressPoolSpec) {
				s.AllocateTo = &metallbv1beta1.ServiceAllocation{Priority: p.priority,
					NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"e2e": "assignment"}}}}
			})
		}
		svc := createService(ctx, testNamespace, "prioritized", nil, 80)
		Eventually(ingressOf(ctx, svc)).Should(Equal([]string{"10.250.10.0"}))
	})

	It("clears a service whose pool is removed", func() {
		pool := createPool(ctx, "e2e-removed", []string{"10.250.30.0/29"}, func(s *maglbv1beta1.IPAddressPoolSpec) { s.AutoAssign = ptr.To(false) })
		svc := createService(ctx, testNamespace, "orphan", map[string]string{"metallb.io/address-pool": "e2e-removed"}, 80)
		Eventually(ingressOf(ctx, svc)).Should(Equal([]string{"10.250.30.0"}))
		Expect(cs.Delete(ctx, pool)).To(Succeed())
		Eventually(ingressOf(ctx, svc)).Should(BeEmpty())
	})
})

var _ = Describe("Webhooks", func() {
	ctx := context.Background()

	It("rejects invalid objects with their messages", func() {
		createPool(ctx, "e2e-existing", []string{"10.250.40.0/24"}, nil)
		for _, tc := range []struct {
			spec maglbv1beta1.IPAddressPoolSpec
			want string
		}{
			{pool([]string{"10.250.40.128/25"}, ""), `overlaps with already defined CIDR "10.250.40.0/24"`},
			{pool([]string{"10.250.41.0/33"}, ""), `invalid CIDR "10.250.41.0/33"`},
			{pool([]string{"10.250.42.0/24"}, "Not_A_Label"), "spec.shard"},
		} {
			p := &maglbv1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-invalid-", Namespace: env.Namespace}, Spec: tc.spec}
			err := cs.Create(ctx, p)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(tc.want))
		}
	})
})

var _ = Describe("ConfigurationState", func() {
	ctx := context.Background()

	It("goes Invalid for a configuration the webhooks cannot catch, and back to Valid", func() {
		adv := &metallbv1beta1.BGPAdvertisement{
			ObjectMeta: metav1.ObjectMeta{Name: "e2e-alias", Namespace: env.Namespace},
			Spec:       metallbv1beta1.BGPAdvertisementSpec{Communities: []string{"e2e-not-yet-defined"}},
		}
		Expect(cs.Create(ctx, adv)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(cs.Delete(ctx, adv))).To(Succeed()) })
		Eventually(controllerState(ctx)).Should(Equal(metallbv1beta1.ConfigurationResultInvalid))
		Expect(cs.Delete(ctx, adv)).To(Succeed())
		Eventually(controllerState(ctx)).Should(Equal(metallbv1beta1.ConfigurationResultValid))
	})
})
