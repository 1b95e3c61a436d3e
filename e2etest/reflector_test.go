//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/lbservice"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// The reflector specs check route-reflector mode where the ToR sees it: the LB nodes peer
// with the reflectors, which give the ToR each shard's aggregate (the aggregation length of
// the advertisement to the ToR) with one path per LB node of the shard, from each
// reflector. They run on the environment's demo Services (namespace demo), whose pools are
// each a shard's.
var _ = Describe("Route reflectors", Label("reflector"), Ordered, func() {
	ctx := context.Background()
	var demo []*corev1.Service
	var aggregates map[string]aggregate

	BeforeAll(func() {
		requireReflectors()
		Expect(env.Reflectors).To(HaveLen(2), "two reflectors")
		var list corev1.ServiceList
		Expect(cs.List(ctx, &list, client.InNamespace("demo"))).To(Succeed())
		for i := range list.Items {
			if list.Items[i].Spec.Type == corev1.ServiceTypeLoadBalancer {
				demo = append(demo, &list.Items[i])
			}
		}
		Expect(demo).NotTo(BeEmpty(), "the demo Services")
		aggregates = aggregatesOf(ctx, demo)
	})

	It("gives the ToR each shard's aggregate with one path per shard node from each reflector, no host route, ECMP in its kernel", func() {
		expectAggregates(aggregates, reflectorNames(), nil)
		for _, family := range []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol} {
			var want []string
			for p, a := range aggregates {
				if a.family == family {
					want = append(want, p)
				}
			}
			Expect(vipRoutes(family)).To(ConsistOf(want), "the ToR's %s routes in the VIP range: the aggregates alone", family)
		}
		// The kernel's IPv4 routes (the environment's kernel_routes command lists that family).
		for p, a := range aggregates {
			if a.family == corev1.IPv4Protocol {
				Eventually(forwardingNexthops("tor", p)).Should(Equal(lbAddresses(a.nodes...)),
					"the ToR's kernel route of %s: ECMP over its shard's nodes", p)
			}
		}
	})

	It("answers HTTP and UDP through every demo VIP", func() {
		for _, svc := range demo {
			for _, vip := range ingressIPs(svc) {
				expectAnswersThrough(svc, vip)
				everyNodeForwards(vip)
			}
		}
	})

	It("takes an LB node whose uplink fails out of its shard's aggregates, and keeps serving", func() {
		Expect(env.NodeUplinkDown).NotTo(BeEmpty(), "the environment's description has no node_uplink_down command")
		node, agg := nodeOfLargestShard(aggregates)
		vips := vipsIn(demo, aggregates, agg)
		runCommand(env.NodeUplinkDown, node)
		down := time.Now()
		DeferCleanup(func() {
			runCommand(env.NodeUplinkUp, node)
			expectAggregates(aggregates, reflectorNames(), nil)
			for _, vip := range vips {
				everyNodeForwards(vip)
			}
		})
		// The reflectors' sessions with the LB nodes run without BFD: the hold time ends them.
		expectAggregates(aggregates, reflectorNames(), []string{node})
		AddReportEntry("node path gone", fmt.Sprintf("%s left %s's paths %v after its uplink went down (their sessions with the reflectors run without BFD: the hold time ends them)", node, agg, time.Since(down)))
		for _, svc := range demo {
			for _, vip := range ingressIPs(svc) {
				everyNodeForwards(vip)
			}
		}
	})

	It("keeps every connection through the ebpf datapath when a reflector dies, and both reflectors' paths once it is back", Label("smoke"), func() {
		requireDatapath("ebpf")
		expectAggregates(aggregates, reflectorNames(), nil)
		dead, alive := reflectorNames()[0], reflectorNames()[1]
		gold, agg := firstVIP(demo, aggregates)
		result := reflectorResult{Reflector: dead, VIP: gold}
		survived := survival(gold, 200, func(string) {
			started := time.Now()
			runCommand(env.ReflectorStop, dead)
			killed := time.Now()
			result.StopCommandMillis = killed.Sub(started).Milliseconds()
			DeferCleanup(func() { runCommand(env.ReflectorStart, dead) })
			Eventually(reflectedPaths(agg)).WithPolling(10*time.Millisecond).
				Should(Equal(wantPaths(agg, aggregates[agg], []string{alive}, nil)), "the ToR's paths of %s after %s died", agg, dead)
			result.PathsGoneMillis = time.Since(killed).Milliseconds()
		})
		result.Established, result.Survived, result.Percent = survived.Established, survived.Survived, survived.Percent
		expectAggregates(aggregates, []string{alive}, nil)

		restarted := time.Now()
		runCommand(env.ReflectorStart, dead)
		expectAggregates(aggregates, reflectorNames(), nil)
		result.PathsBackMillis = time.Since(restarted).Milliseconds()
		AddReportEntry("reflector", result)
		writeReport("reflector-"+env.Datapath, result)
		Expect(result.Established).To(Equal(200))
		Expect(result.Survived).To(Equal(result.Established), "no connection through the ebpf datapath breaks")
	})
})

// reflectorResult is the figure of the reflector-failure spec.
type reflectorResult struct {
	Reflector   string  `json:"reflector_killed"`
	VIP         string  `json:"vip"`
	Established int     `json:"established"`
	Survived    int     `json:"survived"`
	Percent     float64 `json:"percent"`
	// PathsGoneMillis: from the return of the stop command (the kill is at most
	// StopCommandMillis before) until the ToR held only the other reflector's paths of the
	// VIP's aggregate; PathsBackMillis: from the restart until it held both again (every
	// aggregate).
	PathsGoneMillis   int64 `json:"paths_gone_ms"`
	StopCommandMillis int64 `json:"stop_command_ms"`
	PathsBackMillis   int64 `json:"paths_back_ms"`
}

// aggregate is what the ToR holds for a shard's prefix: a path per LB node of the shard
// from each reflector, with the advertisement's communities.
type aggregate struct {
	family      corev1.IPFamily
	nodes       []string
	communities string
}

func reflectorNames() []string { return slices.Sorted(maps.Keys(env.Reflectors)) }

func reflectorAddress(name string, family corev1.IPFamily) string {
	if family == corev1.IPv6Protocol {
		return env.Reflectors[name].Address6
	}
	return env.Reflectors[name].Address
}

func ingressIPs(svc *corev1.Service) []string {
	var ips []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP)
	}
	return ips
}

// aggregatesOf returns, by prefix, the aggregates the VIPs of svcs fall in, as a reflector
// makes them: each VIP's prefix of the aggregation length of its pool's advertisement to the
// ToR when shorter than a host route, else its pool's CIDR; through the LB nodes of its
// pool's shard.
func aggregatesOf(ctx context.Context, svcs []*corev1.Service) map[string]aggregate {
	GinkgoHelper()
	var advs metallbv1beta1.BGPAdvertisementList
	var peers metallbv1beta2.BGPPeerList
	Expect(cs.List(ctx, &advs, client.InNamespace(env.Namespace))).To(Succeed())
	Expect(cs.List(ctx, &peers, client.InNamespace(env.Namespace))).To(Succeed())
	tor := env.Routers["tor"]
	var torPeers []string
	for _, p := range peers.Items {
		if p.Spec.Address == tor.Address || p.Spec.Address == tor.Address6 {
			torPeers = append(torPeers, p.Name)
		}
	}
	out := map[string]aggregate{}
	for _, svc := range svcs {
		poolName := svc.Annotations[lbservice.AnnotationIPAllocatedFromPool]
		var pool maglbv1beta1.IPAddressPool
		Expect(cs.Get(ctx, client.ObjectKey{Namespace: env.Namespace, Name: poolName}, &pool)).To(Succeed(), "pool of %s", svc.Name)
		i := slices.IndexFunc(advs.Items, func(a metallbv1beta1.BGPAdvertisement) bool {
			toToR := len(a.Spec.Peers) == 0 || slices.ContainsFunc(a.Spec.Peers, func(p string) bool { return slices.Contains(torPeers, p) })
			return toToR && slices.Contains(a.Spec.IPAddressPools, poolName)
		})
		Expect(i).NotTo(Equal(-1), "an advertisement of pool %s to the ToR", poolName)
		adv := advs.Items[i].Spec
		var nodes []string
		for _, n := range lbNames() {
			if pool.Spec.Shard == "" || slices.Contains(env.LBNodes[n].Shards, pool.Spec.Shard) {
				nodes = append(nodes, n)
			}
		}
		Expect(svc.Status.LoadBalancer.Ingress).NotTo(BeEmpty(), "%s's VIPs", svc.Name)
		for _, vip := range ingressIPs(svc) {
			addr := netip.MustParseAddr(vip)
			family, length := corev1.IPv4Protocol, adv.AggregationLength
			if addr.Is6() {
				family, length = corev1.IPv6Protocol, adv.AggregationLengthV6
			}
			prefix, err := addr.Prefix(int(ptr.Deref(length, int32(addr.BitLen()))))
			Expect(err).NotTo(HaveOccurred())
			if prefix.Bits() == addr.BitLen() {
				i := slices.IndexFunc(pool.Spec.Addresses, func(c string) bool {
					p, err := netip.ParsePrefix(c)
					return err == nil && p.Contains(addr)
				})
				Expect(i).NotTo(Equal(-1), "%s: no aggregation length, and no CIDR of pool %s holds it", vip, poolName)
				prefix = netip.MustParsePrefix(pool.Spec.Addresses[i])
			}
			out[prefix.String()] = aggregate{family: family, nodes: nodes, communities: strings.Join(adv.Communities, " ")}
		}
	}
	return out
}

// aggregateOf returns the prefix of aggregates that holds vip.
func aggregateOf(vip string, aggregates map[string]aggregate) string {
	GinkgoHelper()
	for p := range aggregates {
		if netip.MustParsePrefix(p).Contains(netip.MustParseAddr(vip)) {
			return p
		}
	}
	Fail("no aggregate holds " + vip)
	return ""
}

// vipsIn returns the VIPs of svcs inside the aggregate agg.
func vipsIn(svcs []*corev1.Service, aggregates map[string]aggregate, agg string) []string {
	var out []string
	for _, svc := range svcs {
		for _, vip := range ingressIPs(svc) {
			if aggregateOf(vip, aggregates) == agg {
				out = append(out, vip)
			}
		}
	}
	return out
}

// firstVIP returns the first IPv4 VIP of svcs whose aggregate has several nodes, and that
// aggregate: its flows spread over them.
func firstVIP(svcs []*corev1.Service, aggregates map[string]aggregate) (string, string) {
	GinkgoHelper()
	for _, svc := range svcs {
		for _, vip := range ingressIPs(svc) {
			if agg := aggregateOf(vip, aggregates); aggregates[agg].family == corev1.IPv4Protocol && len(aggregates[agg].nodes) > 1 {
				return vip, agg
			}
		}
	}
	Fail("no IPv4 VIP whose shard has several LB nodes")
	return "", ""
}

// nodeOfLargestShard returns the last LB node of the IPv4 aggregate with the most nodes, and
// that aggregate: the node can fail and the shard still be served.
func nodeOfLargestShard(aggregates map[string]aggregate) (string, string) {
	GinkgoHelper()
	best := ""
	for _, p := range slices.Sorted(maps.Keys(aggregates)) {
		if a := aggregates[p]; a.family == corev1.IPv4Protocol && (best == "" || len(a.nodes) > len(aggregates[best].nodes)) {
			best = p
		}
	}
	Expect(best).NotTo(BeEmpty())
	Expect(len(aggregates[best].nodes)).To(BeNumerically(">", 1), "a shard with several LB nodes")
	return aggregates[best].nodes[len(aggregates[best].nodes)-1], best
}

// reflectedPaths returns, for Eventually, the ToR's valid paths of prefix, each as
// "<reflector> via <node> <communities>", sorted.
func reflectedPaths(prefix string) func() ([]string, error) {
	return func() ([]string, error) {
		ps, err := paths("tor", prefix)
		out := []string{}
		for _, p := range ps {
			for _, h := range p.Nexthops {
				if !netip.MustParseAddr(h.IP).IsLinkLocalUnicast() {
					out = append(out, fmt.Sprintf("%s via %s %s", p.Peer.PeerID, h.IP, p.Community.String))
				}
			}
		}
		slices.Sort(out)
		return out, err
	}
}

// wantPaths lists reflectedPaths' paths of a, from each of reflectors, through each of its
// nodes but those of without.
func wantPaths(prefix string, a aggregate, reflectors, without []string) []string {
	out := []string{}
	for _, r := range reflectors {
		for _, n := range a.nodes {
			if !slices.Contains(without, n) {
				out = append(out, fmt.Sprintf("%s via %s %s", reflectorAddress(r, a.family), nodeAddress(n, a.family), a.communities))
			}
		}
	}
	slices.Sort(out)
	return out
}

// expectAggregates waits until the ToR holds every aggregate with a path per node (but those
// of without) from each of reflectors.
func expectAggregates(aggregates map[string]aggregate, reflectors, without []string) {
	GinkgoHelper()
	for _, p := range slices.Sorted(maps.Keys(aggregates)) {
		Eventually(reflectedPaths(p)).Should(Equal(wantPaths(p, aggregates[p], reflectors, without)), "the ToR's paths of %s", p)
	}
}

// vipRoutes returns the prefixes of the ToR's BGP table of family inside the environment's VIP
// range of that family.
func vipRoutes(family corev1.IPFamily) []string {
	GinkgoHelper()
	afi, vipRange := "ipv4", env.VIPRange
	if family == corev1.IPv6Protocol {
		afi, vipRange = "ipv6", env.VIPRange6
	}
	out, err := vtysh("tor", "show bgp "+afi+" unicast json")
	Expect(err).NotTo(HaveOccurred())
	var table struct {
		Routes map[string]json.RawMessage `json:"routes"`
	}
	Expect(json.Unmarshal([]byte(out), &table)).To(Succeed(), out)
	r := netip.MustParsePrefix(vipRange)
	prefixes := []string{}
	for p := range table.Routes {
		if prefix := netip.MustParsePrefix(p); r.Overlaps(prefix) {
			prefixes = append(prefixes, p)
		}
	}
	return prefixes
}
