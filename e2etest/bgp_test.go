//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/netlab"
)

var _ = Describe("BGP", Label("bgp"), Ordered, func() {
	const ns = "e2e-bgp"
	ctx := context.Background()
	var adv *metallbv1beta1.BGPAdvertisement

	BeforeAll(func() {
		requireProtocol("bgp")
		ensureNamespace(ctx, ns)
		createAdvertisedPool(ctx, "e2e-bgp", testCIDR(0))
		adv = &metallbv1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "e2e-bgp", Namespace: env.Namespace}}
	})
	inPool := map[string]string{"metallb.io/address-pool": "e2e-bgp"}

	It("announces an ETP=Cluster service from every LB node, and answers through its VIP", Label("smoke"), func() {
		svc := createBackedService(ctx, ns, "cluster", inPool, nil)
		vip := vipOf(ctx, svc)
		Eventually(nexthops("tor", vip)).Should(Equal(lbAddresses(lbNames()...)))
		expectAnswersThrough(svc, vip)
	})

	It("announces an ETP=Local service from the nodes that may forward it", func() {
		svc := createBackedService(ctx, ns, "local", inPool, nil, withLocalTraffic)
		vip := vipOf(ctx, svc)
		if env.Datapath == "ebpf" {
			// The XDP load balancer takes the packet to the backend node itself and the answer
			// comes straight back: every LB node may announce, and the client's address is kept.
			Eventually(nexthops("tor", vip)).Should(Equal(lbAddresses(lbNames()...)))
			Eventually(reachable(vip)).Should(HaveField("Client", env.ClientAddress))
			return
		}
		// kube-proxy forwards only to endpoints on its own node: no LB node has one yet.
		Consistently(nexthops("tor", vip), 5*time.Second).Should(BeEmpty())
		lb := lbNames()[0]
		setEndpoints(ctx, svc, []string{lb})
		Eventually(nexthops("tor", vip)).Should(Equal(lbAddresses(lb)))
	})

	It("announces a dual-stack service's IPv6 VIP over IPv6 sessions, and answers through it", func() {
		if env.VIPRange6 == "" {
			Skip("the environment has no IPv6 VIP range")
		}
		createAdvertisedPool(ctx, "e2e-bgp-dual", testCIDR(4), testCIDR6(0))
		svc := createBackedService(ctx, ns, "dual", map[string]string{"metallb.io/address-pool": "e2e-bgp-dual"}, nil, dualStack)
		Eventually(ingressOf(ctx, svc)).Should(HaveLen(2))
		ips, _ := ingressOf(ctx, svc)()
		vip6 := ips[slices.IndexFunc(ips, func(ip string) bool { return strings.Contains(ip, ":") })]
		Eventually(nexthops("tor", vip6)).Should(Equal(nodeAddressesOf(corev1.IPv6Protocol, lbNames()...)))
		expectAnswersThrough(svc, vip6)
	})

	It("updates communities, local preference and aggregation at the routers", func() {
		rr := env.Routers["rr"]
		peer := &metallbv1beta2.BGPPeer{
			ObjectMeta: metav1.ObjectMeta{Name: "e2e-rr", Namespace: env.Namespace},
			Spec: metallbv1beta2.BGPPeerSpec{MyASN: env.NodeASN, ASN: rr.ASN, Address: rr.Address,
				HoldTime: &metav1.Duration{Duration: 9 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second}},
		}
		create(ctx, peer)
		svc := createBackedService(ctx, ns, "attributes", inPool, nil)
		vip := vipOf(ctx, svc)
		Eventually(nexthops("tor", vip)).Should(Equal(lbAddresses(lbNames()...)))
		Eventually(nexthops("rr", vip)).Should(Equal(lbAddresses(lbNames()...)))

		// One update: a community, a local preference (iBGP only) and the pool's aggregate.
		Expect(updateAdvertisement(ctx, adv, func(s *metallbv1beta1.BGPAdvertisementSpec) {
			s.Communities = []string{"64512:300"}
			s.LocalPref = 150
			s.AggregationLength = ptr.To(int32(netipBits(testCIDR(0))))
		})).To(Succeed())
		DeferCleanup(func() {
			Expect(updateAdvertisement(ctx, adv, func(s *metallbv1beta1.BGPAdvertisementSpec) {
				*s = metallbv1beta1.BGPAdvertisementSpec{IPAddressPools: []string{"e2e-bgp"}}
			})).To(Succeed())
		})
		aggregate := testCIDR(0)
		Eventually(nexthops("tor", vip)).Should(BeEmpty(), "the host route gives way to the aggregate")
		Eventually(func() ([]netlab.Path, error) { return paths("tor", aggregate) }).Should(And(
			HaveLen(len(env.LBNodes)),
			HaveEach(HaveField("Community.String", "64512:300")),
			HaveEach(HaveField("LocalPref", BeNil())), // eBGP carries no local preference
		))
		Eventually(func() ([]netlab.Path, error) { return paths("rr", aggregate) }).Should(And(
			HaveLen(len(env.LBNodes)),
			HaveEach(HaveField("LocalPref", HaveValue(BeEquivalentTo(150)))),
			HaveEach(HaveField("Community.String", "64512:300")),
		))
	})

	It("announces to the peers an advertisement selects, from the nodes a peer selects", func() {
		rr := env.Routers["rr"]
		lb := lbNames()[0]
		create(ctx, &metallbv1beta2.BGPPeer{
			ObjectMeta: metav1.ObjectMeta{Name: "e2e-rr-one-node", Namespace: env.Namespace},
			Spec: metallbv1beta2.BGPPeerSpec{MyASN: env.NodeASN, ASN: rr.ASN, Address: rr.Address,
				HoldTime: &metav1.Duration{Duration: 9 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second},
				NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"kubernetes.io/hostname": lb}}}},
		})
		createAdvertisedPool(ctx, "e2e-bgp-rr", testCIDR(1))
		Expect(updateAdvertisement(ctx, &metallbv1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "e2e-bgp-rr", Namespace: env.Namespace}},
			func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Peers = []string{"e2e-rr-one-node"} })).To(Succeed())
		svc := createBackedService(ctx, ns, "rr-only", map[string]string{"metallb.io/address-pool": "e2e-bgp-rr"}, nil)
		vip := vipOf(ctx, svc)
		Eventually(nexthops("rr", vip)).Should(Equal(lbAddresses(lb)), "only %s peers with rr", lb)
		Consistently(nexthops("tor", vip), 3*time.Second).Should(BeEmpty(), "the advertisement selects the rr peer only")
	})
})

func updateAdvertisement(ctx context.Context, adv *metallbv1beta1.BGPAdvertisement, mutate func(*metallbv1beta1.BGPAdvertisementSpec)) error {
	var current metallbv1beta1.BGPAdvertisement
	if err := cs.Get(ctx, client.ObjectKeyFromObject(adv), &current); err != nil {
		return err
	}
	mutate(&current.Spec)
	return cs.Update(ctx, &current)
}
