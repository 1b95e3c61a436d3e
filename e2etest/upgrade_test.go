//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// The upgrade spec starts from upstream MetalLB announcing the environment's configuration,
// replaces it with MagLB the way docs/upgrade.md tells a user to (the environment's
// swap_to_maglb: CRDs applied over upstream's, the controller replaced, then the speakers one
// node at a time, with upstream's arguments), and goes back (swap_to_upstream), while 200
// long-lived connections run through a VIP and the ToR's kernel routes are watched.
var _ = Describe("In-place upgrade", Label("upgrade"), Ordered, func() {
	ctx := context.Background()
	var before upgradeState
	var bgpVIPs []string
	var report upgradeReport

	BeforeAll(func() {
		requireProtocol("bgp")
		if env.MetalLB != "upstream" || len(env.SwapToMagLB) == 0 || len(env.SwapToUpstream) == 0 {
			Skip("needs an environment that starts with upstream MetalLB and swaps it (metallb: upstream, swap_to_maglb, swap_to_upstream)")
		}
		report.UpstreamVersion = env.UpstreamMetalLB.Version
		before = observeUpgrade(ctx)
		Expect(before.ips).NotTo(BeEmpty(), "LoadBalancer Services with IPs")
		Expect(before.versions).NotTo(BeEmpty(), "metallb.io configuration objects")
		bgpVIPs = before.bgpVIPs()
		Expect(bgpVIPs).NotTo(BeEmpty(), "IPs in %s, announced over BGP", env.VIPRange)
		report.VIP = before.connectionsVIP()
		expectServing(before)
		before.communities = communitiesAt(bgpVIPs)
	})

	// upgrade runs swap while the connections and the route watch run, and checks what must
	// not have changed. Upstream's controller rewrites every pool's status when it starts
	// (its counters drop to 0 and come back), so going back leaves pools with their spec
	// (generation) and status but a new resourceVersion.
	upgrade := func(swap []string, poolStatusRewritten bool) *upgradeResult {
		GinkgoHelper()
		watch := watchRoutes(bgpVIPs)
		var r upgradeResult
		r.survivalResult = survival(report.VIP, 200, func(string) {
			started := time.Now()
			runCommand(swap)
			r.SwapMillis = time.Since(started).Milliseconds()
		})
		r.LBNode = "each, one at a time"
		watch.finish(&r)
		AddReportEntry("upgrade", r)

		after := observeUpgrade(ctx)
		Expect(after.ips).To(Equal(before.ips), "every Service keeps its IPs")
		Expect(after.generations).To(Equal(before.generations), "no metallb.io configuration object's spec changed")
		Expect(after.poolStatus).To(Equal(before.poolStatus), "the pools' status")
		unchanged := maps.Clone(before.versions)
		if poolStatusRewritten {
			maps.DeleteFunc(unchanged, func(key, _ string) bool { return strings.HasPrefix(key, "IPAddressPool ") })
			maps.DeleteFunc(after.versions, func(key, _ string) bool { return strings.HasPrefix(key, "IPAddressPool ") })
		}
		Expect(after.versions).To(Equal(unchanged), "no metallb.io configuration object written (resourceVersions)")
		Expect(r.Established).To(Equal(200))
		Expect(r.VIPWithoutRouteMillis).To(BeZero(), "the ToR always had a route to every VIP: %+v", r)
		for _, vip := range bgpVIPs {
			Eventually(forwardingNexthops("tor", vip)).Should(Equal(lbAddresses(lbNames()...)), "the ToR's kernel route to %s", vip)
		}
		Eventually(func() (map[string][]string, error) { return communitiesAt(bgpVIPs), nil }).Should(Equal(before.communities),
			"the communities of the routes at the ToR")
		expectServing(after)
		return &r
	}

	It("replaces upstream MetalLB with MagLB: IPs, routes and configuration objects kept", func() {
		report.ToMagLB = upgrade(env.SwapToMagLB, false)
		writeReport("upgrade-"+env.Datapath, report)
		Eventually(controllerState(ctx)).Should(Equal(metallbv1beta1.ConfigurationResultValid), "MagLB's ConfigurationState")
		Eventually(func() (map[string]metallbv1beta1.ConfigurationResult, error) {
			var states metallbv1beta1.ConfigurationStateList
			err := cs.List(ctx, &states, client.InNamespace(env.Namespace))
			results := map[string]metallbv1beta1.ConfigurationResult{}
			for _, st := range states.Items {
				results[st.Name] = st.Status.Result
			}
			return results, err
		}).Should(And(HaveLen(1+len(lbNames())), HaveEach(metallbv1beta1.ConfigurationResultValid)),
			"the ConfigurationState of the controller and of every speaker")
	})

	It("goes back from MagLB to upstream MetalLB the same way", func() {
		if report.ToMagLB == nil {
			Skip("the upgrade to MagLB did not complete")
		}
		report.ToMetalLB = upgrade(env.SwapToUpstream, true)
		writeReport("upgrade-"+env.Datapath, report)
	})
})

// upgradeReport is the upgrade's figure, both directions.
type upgradeReport struct {
	UpstreamVersion string         `json:"upstream_version"`
	VIP             string         `json:"vip"` // the connections' VIP
	ToMagLB         *upgradeResult `json:"to_maglb,omitempty"`
	ToMetalLB       *upgradeResult `json:"to_metallb,omitempty"`
}

type upgradeResult struct {
	survivalResult
	SwapMillis int64 `json:"swap_ms"` // the swap command, from start to return
	// VIPWithoutRouteMillis is the longest time a VIP had no route at the ToR;
	// NodePathMissingMillis the longest an LB node was not a next hop of one (by node in
	// NodePathMissing), as often as RoutePolls read the ToR's routing table.
	VIPWithoutRouteMillis int64            `json:"vip_without_route_ms"`
	NodePathMissingMillis int64            `json:"node_path_missing_ms"`
	NodePathMissing       map[string]int64 `json:"node_path_missing_ms_by_node"`
	RoutePolls            int              `json:"route_polls"`
}

// upgradeState is what an upgrade keeps: the Services' IPs, the resourceVersions and
// generations of the metallb.io configuration objects, the pools' status, and the
// communities the ToR's routes carry.
type upgradeState struct {
	ips         map[string][]string // namespace/name -> ingress IPs
	ports       map[string][]corev1.ServicePort
	versions    map[string]string // kind namespace/name -> resourceVersion
	generations map[string]int64
	poolStatus  map[string]metallbv1beta1.IPAddressPoolStatus
	communities map[string][]string
}

// configurationKinds are the metallb.io kinds a user writes.
var configurationKinds = []schema.GroupVersionKind{
	{Group: "metallb.io", Version: "v1beta1", Kind: "IPAddressPool"},
	{Group: "metallb.io", Version: "v1beta2", Kind: "BGPPeer"},
	{Group: "metallb.io", Version: "v1beta1", Kind: "BGPAdvertisement"},
	{Group: "metallb.io", Version: "v1beta1", Kind: "L2Advertisement"},
	{Group: "metallb.io", Version: "v1beta1", Kind: "Community"},
	{Group: "metallb.io", Version: "v1beta1", Kind: "BFDProfile"},
}

func observeUpgrade(ctx context.Context) upgradeState {
	GinkgoHelper()
	s := upgradeState{ips: map[string][]string{}, ports: map[string][]corev1.ServicePort{}, versions: map[string]string{},
		generations: map[string]int64{}, poolStatus: map[string]metallbv1beta1.IPAddressPoolStatus{}}
	services, err := loadBalancerServices(ctx)
	Expect(err).NotTo(HaveOccurred())
	for _, svc := range services {
		key := svc.Namespace + "/" + svc.Name
		for _, in := range svc.Status.LoadBalancer.Ingress {
			s.ips[key] = append(s.ips[key], in.IP)
		}
		s.ports[key] = svc.Spec.Ports
	}
	for _, gvk := range configurationKinds {
		var list metav1.PartialObjectMetadataList
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		Expect(cs.List(ctx, &list, client.InNamespace(env.Namespace))).To(Succeed(), gvk.Kind)
		for _, o := range list.Items {
			key := gvk.Kind + " " + o.Namespace + "/" + o.Name
			s.versions[key], s.generations[key] = o.ResourceVersion, o.Generation
		}
	}
	var pools maglbv1beta1.IPAddressPoolList
	Expect(cs.List(ctx, &pools, client.InNamespace(env.Namespace))).To(Succeed())
	for _, p := range pools.Items {
		s.poolStatus[p.Name] = p.Status
	}
	return s
}

// bgpVIPs are the Services' IPv4 addresses in the environment's BGP range, sorted.
func (s upgradeState) bgpVIPs() []string {
	r := netip.MustParsePrefix(env.VIPRange)
	var vips []string
	for _, ips := range s.ips {
		for _, ip := range ips {
			if a := netip.MustParseAddr(ip); a.Is4() && r.Contains(a) {
				vips = append(vips, ip)
			}
		}
	}
	slices.Sort(vips)
	return slices.Compact(vips)
}

// connectionsVIP is the first BGP VIP with a Service on the HTTP port.
func (s upgradeState) connectionsVIP() string {
	GinkgoHelper()
	for _, vip := range s.bgpVIPs() {
		for _, key := range slices.Sorted(maps.Keys(s.ips)) {
			if slices.Contains(s.ips[key], vip) && servesPort(s.ports[key], corev1.ProtocolTCP, env.HTTPPort) {
				return vip
			}
		}
	}
	Fail("no Service with a BGP VIP serves TCP port " + fmt.Sprint(env.HTTPPort))
	return ""
}

func servesPort(ports []corev1.ServicePort, protocol corev1.Protocol, port int32) bool {
	return slices.ContainsFunc(ports, func(p corev1.ServicePort) bool { return p.Protocol == protocol && p.Port == port })
}

// expectServing waits until every Service answers on its IPs: HTTP and UDP echo where its
// ports have them.
func expectServing(s upgradeState) {
	GinkgoHelper()
	for _, key := range slices.Sorted(maps.Keys(s.ips)) {
		for _, ip := range s.ips[key] {
			if servesPort(s.ports[key], corev1.ProtocolTCP, env.HTTPPort) {
				Eventually(reachable(ip)).Should(WithTransform(backendOf, BeElementOf(backendNames())), "HTTP to %s through %s", key, ip)
			}
			if servesPort(s.ports[key], corev1.ProtocolUDP, env.UDPPort) {
				Eventually(func() (answer, error) { return udpEcho(ip, env.UDPPort) }).
					Should(WithTransform(backendOf, BeElementOf(backendNames())), "UDP to %s through %s", key, ip)
			}
		}
	}
}

// communitiesAt returns the sorted communities of the ToR's paths to each VIP.
func communitiesAt(vips []string) map[string][]string {
	GinkgoHelper()
	communities := map[string][]string{}
	for _, vip := range vips {
		ps, err := paths("tor", vip+"/32")
		Expect(err).NotTo(HaveOccurred())
		for _, p := range ps {
			communities[vip] = append(communities[vip], p.Community.String)
		}
		slices.Sort(communities[vip])
		communities[vip] = slices.Compact(communities[vip])
	}
	return communities
}

// routeWatch reads the ToR's kernel routing table as often as it can and keeps, for each
// VIP, the longest time it had no route, and for each LB node, the longest time it was not
// a next hop of one of them.
type routeWatch struct {
	stop, done chan struct{}
	mu         sync.Mutex
	polls      int
	err        error
	vipGone    map[string]time.Duration
	nodeGone   map[string]time.Duration
}

func watchRoutes(vips []string) *routeWatch {
	w := &routeWatch{stop: make(chan struct{}), done: make(chan struct{}), vipGone: map[string]time.Duration{}, nodeGone: map[string]time.Duration{}}
	nodes := map[string]string{} // address -> LB node
	for _, n := range lbNames() {
		nodes[nodeAddress(n, corev1.IPv4Protocol)] = n
	}
	go func() {
		defer close(w.done)
		missingSince := map[string]time.Time{} // vip, or vip+" "+node
		gap := func(key string, missing bool, now time.Time, longest map[string]time.Duration, name string) {
			since, was := missingSince[key]
			switch {
			case missing && !was:
				missingSince[key] = now
			case !missing && was:
				longest[name] = max(longest[name], now.Sub(since))
				delete(missingSince, key)
			}
		}
		for {
			routes, err := kernelRoutes("tor")
			now := time.Now()
			w.mu.Lock()
			if err != nil {
				w.err = err
			} else {
				w.polls++
				for _, vip := range vips {
					gap(vip, len(routes[vip]) == 0, now, w.vipGone, vip)
					for addr, node := range nodes {
						gap(vip+" "+node, !slices.Contains(routes[vip], addr), now, w.nodeGone, node)
					}
				}
			}
			stopping := false
			select {
			case <-w.stop:
				stopping = true
				for key, since := range missingSince {
					vip, node, perNode := strings.Cut(key, " ")
					if perNode {
						w.nodeGone[node] = max(w.nodeGone[node], now.Sub(since))
					} else {
						w.vipGone[vip] = max(w.vipGone[vip], now.Sub(since))
					}
				}
			default:
			}
			w.mu.Unlock()
			if stopping {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return w
}

// finish stops the watch and writes what it saw into r.
func (w *routeWatch) finish(r *upgradeResult) {
	GinkgoHelper()
	close(w.stop)
	<-w.done
	Expect(w.err).NotTo(HaveOccurred(), "reading the ToR's routes")
	r.RoutePolls = w.polls
	r.NodePathMissing = map[string]int64{}
	for _, d := range w.vipGone {
		r.VIPWithoutRouteMillis = max(r.VIPWithoutRouteMillis, d.Milliseconds())
	}
	for node, d := range w.nodeGone {
		r.NodePathMissing[node] = d.Milliseconds()
		r.NodePathMissingMillis = max(r.NodePathMissingMillis, d.Milliseconds())
	}
	Expect(r.RoutePolls).To(BeNumerically(">", 10), "the ToR's routes were read throughout")
}
