// SPDX-License-Identifier: Apache-2.0

package allocator

import (
	"github.com/maglb/maglb/internal/lbservice"

	"testing"

	"github.com/google/go-cmp/cmp"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
)

// step is one event of a scenario: a pool change, a controller restart, a service
// deletion and/or the convergence of a service, with what the convergence must give.
type step struct {
	desc string

	pools   []maglbv1beta1.IPAddressPool // SetPools with these when set
	noPools bool                         // SetPools with no pool at all
	restart bool                         // a new allocator, given the current pools
	release string                       // the service with this key was deleted
	stale   bool                         // the service as read before the previous step's status write reached the cache

	svc      *corev1.Service // converge this service (its status carries over from the previous step unless it sets one)
	nsLabels map[string]string

	ips       []string
	pool      string
	shard     string
	events    []Event
	pending   bool
	unchanged bool // the service needs no update
	reprocess bool
}

type scenario struct {
	name       string
	namespaces []corev1.Namespace
	pools      []maglbv1beta1.IPAddressPool
	steps      []step
}

func runScenarios(t *testing.T, scenarios []scenario) {
	t.Helper()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			current := sc.pools
			a := New()
			a.SetPools(buildPools(t, sc.namespaces, current...))
			stored := map[string]*corev1.Service{}
			for i, st := range sc.steps {
				desc := st.desc
				if desc == "" {
					desc = "step"
				}
				if st.pools != nil || st.noPools {
					current = st.pools
					a.SetPools(buildPools(t, sc.namespaces, current...))
				}
				if st.restart {
					a = New()
					a.SetPools(buildPools(t, sc.namespaces, current...))
				}
				if st.release != "" {
					if !a.Release(st.release) {
						t.Fatalf("%d %s: releasing %s: it had no addresses", i, desc, st.release)
					}
					delete(stored, st.release)
				}
				if st.svc == nil {
					continue
				}
				in := st.svc.DeepCopy()
				if prev := stored[lbservice.Key(in)]; prev != nil && !st.stale {
					if len(in.Status.LoadBalancer.Ingress) == 0 {
						in.Status = prev.Status
					}
					if v, ok := prev.Annotations[lbservice.AnnotationIPAllocatedFromPool]; ok {
						if _, set := in.Annotations[lbservice.AnnotationIPAllocatedFromPool]; !set {
							annotated(lbservice.AnnotationIPAllocatedFromPool, v)(in)
						}
					}
				}
				r := a.Converge(in, st.nsLabels)
				if diff := cmp.Diff(st.ips, texts(r.IPs)); diff != "" {
					t.Errorf("%d %s: IPs (-want +got):\n%s", i, desc, diff)
				}
				if r.Pool != st.pool || r.Shard != st.shard {
					t.Errorf("%d %s: pool %q shard %q, want %q %q", i, desc, r.Pool, r.Shard, st.pool, st.shard)
				}
				if diff := cmp.Diff(st.events, r.Events); diff != "" {
					t.Errorf("%d %s: events (-want +got):\n%s", i, desc, diff)
				}
				if r.Pending != st.pending {
					t.Errorf("%d %s: pending %v, want %v", i, desc, r.Pending, st.pending)
				}
				if r.Changed == st.unchanged {
					t.Errorf("%d %s: changed %v, want %v", i, desc, r.Changed, !st.unchanged)
				}
				if r.Reprocess != st.reprocess {
					t.Errorf("%d %s: reprocess %v, want %v", i, desc, r.Reprocess, st.reprocess)
				}
				stored[lbservice.Key(in)] = apply(in, r)
			}
		})
	}
}

func assigned(ips string) Event { return normal(ReasonIPAllocated, "Assigned IP "+ips) }

func allocFailed(key, msg string) Event {
	return warning(ReasonAllocationFailed, "Failed to allocate IP for \""+key+"\": "+msg)
}

func clearAssignment(key, msg string) Event {
	return normal(ReasonClearAssignment, "current IP for \""+key+"\" not allowed by config, will attempt for new IP assignment: "+msg)
}

var (
	v4Pool   = pool("p1", []string{"192.168.10.0/24"})
	dualPool = pool("dual", []string{"192.168.10.0/24", "fd00::/120"})
)

func TestConvergeBasics(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "lowest address first, kept on resync",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{desc: "resync", svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", unchanged: true},
				{svc: service("b"), ips: []string{"192.168.10.1"}, pool: "p1", events: []Event{assigned(`["192.168.10.1"]`)}},
			},
		},
		{
			name:  "a pass reading the service before the last status write: the same IP, no second event",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{desc: "stale read", stale: true, svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1"},
				{desc: "resync", svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", unchanged: true},
			},
		},
		{
			name:  "IPv6 /64",
			pools: []maglbv1beta1.IPAddressPool{pool("v6", []string{"fd00:10::/64"})},
			steps: []step{
				{svc: service("a", clusterIPs("fd00:96::1")), ips: []string{"fd00:10::"}, pool: "v6", events: []Event{assigned(`["fd00:10::"]`)}},
				{svc: service("b", clusterIPs("fd00:96::2")), ips: []string{"fd00:10::1"}, pool: "v6", events: []Event{assigned(`["fd00:10::1"]`)}},
				{desc: "an IPv4 service", svc: service("c"), pending: true, unchanged: true, events: []Event{allocFailed("default/c", "no available IPs")}},
			},
		},
		{
			name:  "a pool with a shard names it in the event",
			pools: []maglbv1beta1.IPAddressPool{pool("gold", []string{"192.168.10.0/24"}, shard("gold"))},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.0"}, pool: "gold", shard: "gold",
					events: []Event{assigned(`["192.168.10.0"] from pool "gold" (shard "gold")`)}},
			},
		},
		{
			name:  "a service that stops being a LoadBalancer is released",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{svc: service("a", typed(corev1.ServiceTypeClusterIP)), reprocess: true},
				{desc: "nothing more to clear", svc: service("a", typed(corev1.ServiceTypeClusterIP)), unchanged: true},
				{svc: service("b"), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
			},
		},
		{
			name:  "no pools: cleared and pending, without events",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{noPools: true, svc: service("a"), pending: true},
			},
		},
		{
			name:  "no cluster IP: pending, without events",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a", clusterIPs()), pending: true, unchanged: true},
			},
		},
		{
			name:  "invalid cluster IPs with a current address: kept, pending",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a", clusterIPs("nope"), withStatus("192.168.10.4")), ips: []string{"192.168.10.4"}, pending: true, unchanged: true,
					events: []Event{warning(ReasonNoClusterIPsFamily, `Failed to retrieve ClusterIPs IPFamily for ["nope"] nope: IPFamilyForAddresses: Invalid address ["nope"]`)}},
			},
		},
		{
			name:  "an unparsable ingress address is replaced",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a", withStatus("not-an-ip")), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{
					warning(ReasonNoLBIPsFamily, `Failed to retrieve LBIPs IPFamily for ["<nil>"]: IPFamilyForAddresses: Invalid address ["<nil>"]`),
					assigned(`["192.168.10.0"]`),
				}},
			},
		},
		{
			name:  "an ingress address of the wrong family is replaced",
			pools: []maglbv1beta1.IPAddressPool{dualPool},
			steps: []step{
				{svc: service("a", withStatus("fd00::7")), ips: []string{"192.168.10.0"}, pool: "dual", events: []Event{assigned(`["192.168.10.0"]`)}},
			},
		},
		{
			name:  "hostname-only ingress entries are ignored",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: func() *corev1.Service {
					s := service("a")
					s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: "lb.example"}, {IP: "192.168.10.9"}}
					return s
				}(), ips: []string{"192.168.10.9"}, pool: "p1"},
			},
		},
	})
}

func TestConvergeRequestedAddresses(t *testing.T) {
	twoPools := []maglbv1beta1.IPAddressPool{v4Pool, pool("p2", []string{"192.168.20.0/24"})}
	runScenarios(t, []scenario{
		{
			name:  "spec.loadBalancerIP",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a", lbIP("192.168.10.7")), ips: []string{"192.168.10.7"}, pool: "p1", events: []Event{assigned(`["192.168.10.7"]`)}},
				{desc: "resync", svc: service("a", lbIP("192.168.10.7")), ips: []string{"192.168.10.7"}, pool: "p1", unchanged: true},
				{desc: "another address requested", svc: service("a", lbIP("192.168.10.8")), ips: []string{"192.168.10.8"}, pool: "p1", events: []Event{assigned(`["192.168.10.8"]`)}},
			},
		},
		{
			name:  "loadBalancerIPs annotation, one address per family",
			pools: []maglbv1beta1.IPAddressPool{dualPool},
			steps: []step{
				{svc: service("a", dualStack, familyPolicy(corev1.IPFamilyPolicyRequireDualStack), annotated(lbservice.AnnotationLoadBalancerIPs, "192.168.10.5, fd00::5")),
					ips: []string{"192.168.10.5", "fd00::5"}, pool: "dual", events: []Event{assigned(`["192.168.10.5" "fd00::5"]`)}},
			},
		},
		{
			name:  "requested addresses are re-sorted by text on the next pass",
			pools: []maglbv1beta1.IPAddressPool{dualPool},
			steps: []step{
				{svc: service("a", dualStack, familyPolicy(corev1.IPFamilyPolicyPreferDualStack), annotated(lbservice.AnnotationLoadBalancerIPs, "fd00::5,192.168.10.5")),
					ips: []string{"fd00::5", "192.168.10.5"}, pool: "dual", events: []Event{assigned(`["fd00::5" "192.168.10.5"]`)}},
				{svc: service("a", dualStack, familyPolicy(corev1.IPFamilyPolicyPreferDualStack), annotated(lbservice.AnnotationLoadBalancerIPs, "fd00::5,192.168.10.5")),
					ips: []string{"192.168.10.5", "fd00::5"}, pool: "dual"},
				{svc: service("a", dualStack, familyPolicy(corev1.IPFamilyPolicyPreferDualStack), annotated(lbservice.AnnotationLoadBalancerIPs, "fd00::5,192.168.10.5")),
					ips: []string{"192.168.10.5", "fd00::5"}, pool: "dual", unchanged: true},
			},
		},
		{
			name:  "both the annotation and spec.loadBalancerIP",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{{svc: service("a", lbIP("192.168.10.1"), annotated(lbservice.AnnotationLoadBalancerIPs, "192.168.10.2")), pending: true, unchanged: true,
				events: []Event{allocFailed("default/a", "service can not have both metallb.io/loadBalancerIPs and svc.Spec.LoadBalancerIP")}}},
		},
		{
			name:  "unparsable annotation",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{{svc: service("a", annotated(lbservice.AnnotationLoadBalancerIPs, "192.168.10.300")), pending: true, unchanged: true,
				events: []Event{allocFailed("default/a", `invalid metallb.io/loadBalancerIPs: "192.168.10.300"`)}}},
		},
		{
			name:  "three addresses",
			pools: []maglbv1beta1.IPAddressPool{dualPool},
			steps: []step{{svc: service("a", dualStack, familyPolicy(corev1.IPFamilyPolicyRequireDualStack), annotated(lbservice.AnnotationLoadBalancerIPs, "192.168.10.1,192.168.10.2,fd00::1")), pending: true, unchanged: true,
				events: []Event{allocFailed("default/a", `IPFamilyForAddresses: invalid ips length 3 ["192.168.10.1" "192.168.10.2" "fd00::1"]`)}}},
		},
		{
			name:  "two addresses of one family",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{{svc: service("a", annotated(lbservice.AnnotationLoadBalancerIPs, "192.168.10.1,192.168.10.2")), pending: true, unchanged: true,
				events: []Event{allocFailed("default/a", `IPFamilyForAddresses: same address family ["192.168.10.1" "192.168.10.2"]`)}}},
		},
		{
			name:  "unparsable spec.loadBalancerIP",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{{svc: service("a", lbIP("foo")), pending: true, unchanged: true,
				events: []Event{allocFailed("default/a", `invalid spec.loadBalancerIP "foo"`)}}},
		},
		{
			name:  "requested family differs from the service's",
			pools: []maglbv1beta1.IPAddressPool{dualPool},
			steps: []step{{svc: service("a", lbIP("fd00::1")), pending: true, unchanged: true,
				events: []Event{allocFailed("default/a", `requested loadBalancer IP(s) ["fd00::1"] does not match the ipFamily of the service`)}}},
		},
		{
			name:  "requested address in no pool",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{{svc: service("a", lbIP("10.1.1.1")), pending: true, unchanged: true,
				events: []Event{allocFailed("default/a", `["10.1.1.1"] is not allowed in config`)}}},
		},
		{
			name:  "requested address outside the requested pool",
			pools: twoPools,
			steps: []step{{svc: service("a", lbIP("192.168.10.3"), annotated(lbservice.AnnotationAddressPool, "p2")), pending: true, unchanged: true,
				events: []Event{allocFailed("default/a", `requested loadBalancer IP(s) ["192.168.10.3"] is not compatible with requested address pool p2`)}}},
		},
		{
			name:  "requested address inside the requested pool",
			pools: twoPools,
			steps: []step{{svc: service("a", lbIP("192.168.20.3"), annotated(lbservice.AnnotationAddressPool, "p2")), ips: []string{"192.168.20.3"}, pool: "p2",
				events: []Event{assigned(`["192.168.20.3"]`)}}},
		},
		{
			name:  "unknown requested pool",
			pools: twoPools,
			steps: []step{{svc: service("a", annotated(lbservice.AnnotationAddressPool, "nope")), pending: true, unchanged: true,
				events: []Event{allocFailed("default/a", `unknown pool "nope"`)}}},
		},
		{
			name:  "requested pool changes",
			pools: twoPools,
			steps: []step{
				{svc: service("a", annotated(lbservice.AnnotationAddressPool, "p1")), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{svc: service("a", annotated(lbservice.AnnotationAddressPool, "p2")), ips: []string{"192.168.20.0"}, pool: "p2", events: []Event{assigned(`["192.168.20.0"]`)}},
			},
		},
		{
			name:  "invalid request while holding an address: kept, pending",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{svc: service("a", annotated(lbservice.AnnotationLoadBalancerIPs, "x")), ips: []string{"192.168.10.0"}, pool: "p1", pending: true, unchanged: true,
					events: []Event{warning(ReasonLoadBalancerFailed, `invalid requested loadbalancer IPs: invalid metallb.io/loadBalancerIPs: "x"`)}},
			},
		},
		{
			name:  "a pool reserved to another namespace refuses a requested address",
			pools: []maglbv1beta1.IPAddressPool{pool("ns-only", []string{"192.168.10.0/24"}, allocateTo(0, []string{"team-a"}, nil, nil))},
			steps: []step{
				{svc: service("a", lbIP("192.168.10.1")), pending: true, unchanged: true,
					events: []Event{allocFailed("default/a", "pool ns-only not compatible for ip assignment")}},
				{svc: service("a", lbIP("192.168.10.1"), inNamespace("team-a")), ips: []string{"192.168.10.1"}, pool: "ns-only",
					events: []Event{assigned(`["192.168.10.1"]`)}},
			},
		},
	})
}

func TestConvergeLegacyAnnotations(t *testing.T) {
	pools := []maglbv1beta1.IPAddressPool{v4Pool, pool("p2", []string{"192.168.20.0/24"}, manual)}
	deprecated := func(msg string) Event {
		return warning(ReasonDeprecatedAnnotation, "Service uses deprecated annotation "+msg)
	}
	runScenarios(t, []scenario{
		{
			name:  "legacy address-pool",
			pools: pools,
			steps: []step{
				{svc: service("a", annotated(lbservice.LegacyAnnotationAddressPool, "p2")), ips: []string{"192.168.20.0"}, pool: "p2", events: []Event{
					assigned(`["192.168.20.0"]`),
					deprecated("metallb.universe.tf/address-pool; use metallb.io/address-pool instead"),
				}},
				{desc: "no warning when nothing changes", svc: service("a", annotated(lbservice.LegacyAnnotationAddressPool, "p2")), ips: []string{"192.168.20.0"}, pool: "p2", unchanged: true},
			},
		},
		{
			name:  "metallb.io/address-pool wins over the legacy one",
			pools: pools,
			steps: []step{
				{svc: service("a", annotated(lbservice.AnnotationAddressPool, "p1", lbservice.LegacyAnnotationAddressPool, "p2")), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{
					assigned(`["192.168.10.0"]`),
					deprecated("metallb.universe.tf/address-pool; it is ignored because metallb.io/address-pool is set"),
				}},
			},
		},
		{
			name:  "legacy loadBalancerIPs",
			pools: pools,
			steps: []step{
				{svc: service("a", annotated(lbservice.LegacyAnnotationLoadBalancerIPs, "192.168.20.9")), ips: []string{"192.168.20.9"}, pool: "p2", events: []Event{
					assigned(`["192.168.20.9"]`),
					deprecated("metallb.universe.tf/loadBalancerIPs; use metallb.io/loadBalancerIPs instead"),
				}},
			},
		},
		{
			name:  "an empty metallb.io/loadBalancerIPs hides the legacy one",
			pools: pools,
			steps: []step{
				{svc: service("a", annotated(lbservice.AnnotationLoadBalancerIPs, "", lbservice.LegacyAnnotationLoadBalancerIPs, "192.168.20.9")), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{
					assigned(`["192.168.10.0"]`),
					deprecated("metallb.universe.tf/loadBalancerIPs; it is ignored because metallb.io/loadBalancerIPs is set"),
				}},
			},
		},
		{
			name:  "legacy allow-shared-ip",
			pools: pools,
			steps: []step{
				{svc: service("a", annotated(lbservice.LegacyAnnotationAllowSharedIP, "k")), ips: []string{"192.168.10.0"}, pool: "p1", reprocess: true, events: []Event{
					assigned(`["192.168.10.0"]`),
					deprecated("metallb.universe.tf/allow-shared-ip; use metallb.io/allow-shared-ip instead"),
				}},
				{svc: service("b", ports("TCP/443"), annotated(lbservice.LegacyAnnotationAllowSharedIP, "k")), ips: []string{"192.168.10.0"}, pool: "p1", reprocess: true, events: []Event{
					assigned(`["192.168.10.0"]`),
					deprecated("metallb.universe.tf/allow-shared-ip; use metallb.io/allow-shared-ip instead"),
				}},
			},
		},
		{
			name:  "the legacy pool annotation of an older controller is replaced",
			pools: pools,
			steps: []step{
				{svc: service("a", withStatus("192.168.10.3"), annotated(lbservice.LegacyAnnotationIPAllocatedFromPool, "p1")), ips: []string{"192.168.10.3"}, pool: "p1", events: []Event{
					deprecated("metallb.universe.tf/ip-allocated-from-pool; it is removed, the controller records the pool in metallb.io/ip-allocated-from-pool"),
				}},
				{svc: service("a"), ips: []string{"192.168.10.3"}, pool: "p1", unchanged: true},
			},
		},
	})
}

func TestConvergeAutoAssignAndBuggyIPs(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "autoAssign=false pools only by request",
			pools: []maglbv1beta1.IPAddressPool{pool("manual", []string{"192.168.20.0/24"}, manual)},
			steps: []step{
				{svc: service("a"), pending: true, unchanged: true, events: []Event{allocFailed("default/a", "no available IPs")}},
				{svc: service("b", annotated(lbservice.AnnotationAddressPool, "manual")), ips: []string{"192.168.20.0"}, pool: "manual", events: []Event{assigned(`["192.168.20.0"]`)}},
				{svc: service("c", lbIP("192.168.20.77")), ips: []string{"192.168.20.77"}, pool: "manual", events: []Event{assigned(`["192.168.20.77"]`)}},
			},
		},
		{
			name:  "autoAssign=false pool skipped for the auto one",
			pools: []maglbv1beta1.IPAddressPool{pool("a-manual", []string{"192.168.20.0/24"}, manual), pool("b-auto", []string{"192.168.30.0/24"})},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.30.0"}, pool: "b-auto", events: []Event{assigned(`["192.168.30.0"]`)}},
			},
		},
		{
			name:  "avoidBuggyIPs skips .0 and .255",
			pools: []maglbv1beta1.IPAddressPool{pool("buggy", []string{"192.168.10.254-192.168.11.1"}, avoidBuggy)},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.254"}, pool: "buggy", events: []Event{assigned(`["192.168.10.254"]`)}},
				{svc: service("b"), ips: []string{"192.168.11.1"}, pool: "buggy", events: []Event{assigned(`["192.168.11.1"]`)}},
				{svc: service("c"), pending: true, unchanged: true, events: []Event{allocFailed("default/c", "no available IPs")}},
				{svc: service("d", lbIP("192.168.11.0")), pending: true, unchanged: true, events: []Event{allocFailed("default/d", `["192.168.11.0"] is not allowed in config`)}},
			},
		},
		{
			name:  "avoidBuggyIPs on a /24 starts at .1",
			pools: []maglbv1beta1.IPAddressPool{pool("buggy", []string{"192.168.10.0/24"}, avoidBuggy)},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.1"}, pool: "buggy", events: []Event{assigned(`["192.168.10.1"]`)}},
			},
		},
		{
			name:  "turning avoidBuggyIPs on moves a .0 service",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{pools: []maglbv1beta1.IPAddressPool{pool("p1", []string{"192.168.10.0/24"}, avoidBuggy)}, svc: service("a"), ips: []string{"192.168.10.1"}, pool: "p1", events: []Event{
					clearAssignment("default/a", `["192.168.10.0"] is not allowed in config`),
					assigned(`["192.168.10.1"]`),
				}},
			},
		},
		{
			name:  "range pools are walked in address order",
			pools: []maglbv1beta1.IPAddressPool{pool("r", []string{"192.168.10.3-192.168.10.5", "192.168.9.0/31"})},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.3"}, pool: "r", events: []Event{assigned(`["192.168.10.3"]`)}},
				{svc: service("b"), ips: []string{"192.168.10.4"}, pool: "r", events: []Event{assigned(`["192.168.10.4"]`)}},
				{svc: service("c"), ips: []string{"192.168.10.5"}, pool: "r", events: []Event{assigned(`["192.168.10.5"]`)}},
				{svc: service("d"), ips: []string{"192.168.9.0"}, pool: "r", events: []Event{assigned(`["192.168.9.0"]`)}},
			},
		},
	})
}

func TestConvergeConflictsAndPoolChanges(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "a requested address that is taken waits for its release",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{svc: service("b", lbIP("192.168.10.0")), pending: true, unchanged: true,
					events: []Event{allocFailed("default/b", `can't change sharing key for "default/b", address also in use by default/a`)}},
				{desc: "a deleted", release: "default/a"},
				{svc: service("b", lbIP("192.168.10.0")), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
			},
		},
		{
			name:  "restart: services with addresses replayed first keep them",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{svc: service("b"), ips: []string{"192.168.10.1"}, pool: "p1", events: []Event{assigned(`["192.168.10.1"]`)}},
				{svc: service("c"), ips: []string{"192.168.10.2"}, pool: "p1", events: []Event{assigned(`["192.168.10.2"]`)}},
				{desc: "b deleted", release: "default/b"},
				{desc: "replay c", restart: true, svc: service("c"), ips: []string{"192.168.10.2"}, pool: "p1", unchanged: true},
				{desc: "replay a", svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", unchanged: true},
				{desc: "new d takes the hole", svc: service("d"), ips: []string{"192.168.10.1"}, pool: "p1", events: []Event{assigned(`["192.168.10.1"]`)}},
				{svc: service("e"), ips: []string{"192.168.10.3"}, pool: "p1", events: []Event{assigned(`["192.168.10.3"]`)}},
			},
		},
		{
			name:  "restart: a status address that left the pools is replaced",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a", withStatus("10.0.0.1"), annotated(lbservice.AnnotationIPAllocatedFromPool, "gone")), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{
					clearAssignment("default/a", `["10.0.0.1"] is not allowed in config`),
					assigned(`["192.168.10.0"]`),
				}},
			},
		},
		{
			name:  "a shrunk pool re-homes the service, a deleted pool clears it",
			pools: []maglbv1beta1.IPAddressPool{pool("p1", []string{"192.168.10.0/31"})},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{svc: service("b"), ips: []string{"192.168.10.1"}, pool: "p1", events: []Event{assigned(`["192.168.10.1"]`)}},
				{desc: "p1 shrinks, p2 appears",
					pools: []maglbv1beta1.IPAddressPool{pool("p1", []string{"192.168.10.1/32"}), pool("p2", []string{"192.168.20.0/24"})},
					svc:   service("a"), ips: []string{"192.168.20.0"}, pool: "p2", events: []Event{
						clearAssignment("default/a", `["192.168.10.0"] is not allowed in config`),
						assigned(`["192.168.20.0"]`),
					}},
				{desc: "b unaffected", svc: service("b"), ips: []string{"192.168.10.1"}, pool: "p1", unchanged: true},
				{desc: "p2 deleted",
					pools: []maglbv1beta1.IPAddressPool{pool("p1", []string{"192.168.10.1/32"})},
					svc:   service("a"), pending: true, events: []Event{
						clearAssignment("default/a", `["192.168.20.0"] is not allowed in config`),
						allocFailed("default/a", "no available IPs"),
					}},
				{desc: "b deleted", release: "default/b"},
				{svc: service("a"), ips: []string{"192.168.10.1"}, pool: "p1", events: []Event{assigned(`["192.168.10.1"]`)}},
			},
		},
		{
			name:  "a renamed pool keeps its services' addresses",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{pools: []maglbv1beta1.IPAddressPool{pool("renamed", []string{"192.168.10.0/24"})}, svc: service("a"), ips: []string{"192.168.10.0"}, pool: "renamed"},
			},
		},
		{
			name:  "a status address taken meanwhile is replaced",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a"), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{svc: service("b", withStatus("192.168.10.0")), ips: []string{"192.168.10.1"}, pool: "p1", events: []Event{
					clearAssignment("default/b", `can't change sharing key for "default/b", address also in use by default/a`),
					assigned(`["192.168.10.1"]`),
				}},
			},
		},
	})
}

func TestConvergeSharing(t *testing.T) {
	runScenarios(t, []scenario{
		{
			name:  "same key and distinct ports share; a port clash does not",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a", shared("k")), ips: []string{"192.168.10.0"}, pool: "p1", reprocess: true, events: []Event{assigned(`["192.168.10.0"]`)}},
				{svc: service("b", shared("k"), ports("TCP/443")), ips: []string{"192.168.10.0"}, pool: "p1", reprocess: true, events: []Event{assigned(`["192.168.10.0"]`)}},
				{svc: service("c", shared("k"), ports("UDP/80")), ips: []string{"192.168.10.0"}, pool: "p1", reprocess: true, events: []Event{assigned(`["192.168.10.0"]`)}},
				{desc: "port clash: next address", svc: service("d", shared("k")), ips: []string{"192.168.10.1"}, pool: "p1", reprocess: true, events: []Event{assigned(`["192.168.10.1"]`)}},
				{desc: "port clash on the requested address", svc: service("e", shared("k"), ports("TCP/443", "TCP/8443"), lbIP("192.168.10.0")), pending: true, unchanged: true,
					events: []Event{allocFailed("default/e", `port TCP/443 is already in use on "192.168.10.0"`)}},
				{desc: "no key: a free address", svc: service("f", ports("TCP/9000")), ips: []string{"192.168.10.2"}, pool: "p1", events: []Event{assigned(`["192.168.10.2"]`)}},
				{desc: "other key: a free address", svc: service("g", shared("other"), ports("TCP/9000")), ips: []string{"192.168.10.3"}, pool: "p1", reprocess: true, events: []Event{assigned(`["192.168.10.3"]`)}},
				{desc: "b deleted", release: "default/b"},
				{svc: service("e", shared("k"), ports("TCP/443", "TCP/8443"), lbIP("192.168.10.0")), ips: []string{"192.168.10.0"}, pool: "p1", reprocess: true, events: []Event{assigned(`["192.168.10.0"]`)}},
			},
		},
		{
			name:  "externalTrafficPolicy Local shares only with the same selector",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a", shared("k"), local(map[string]string{"app": "x"})), ips: []string{"192.168.10.0"}, pool: "p1", reprocess: true, events: []Event{assigned(`["192.168.10.0"]`)}},
				{desc: "other selector", svc: service("b", shared("k"), local(map[string]string{"app": "y"}), ports("TCP/443"), lbIP("192.168.10.0")), pending: true, unchanged: true,
					events: []Event{allocFailed("default/b", `can't change sharing key for "default/b", address also in use by default/a`)}},
				{desc: "other selector, no request", svc: service("b", shared("k"), local(map[string]string{"app": "y"}), ports("TCP/443")), ips: []string{"192.168.10.1"}, pool: "p1", reprocess: true, events: []Event{assigned(`["192.168.10.1"]`)}},
				{desc: "Cluster policy", svc: service("c", shared("k"), ports("TCP/8080"), lbIP("192.168.10.0")), pending: true, unchanged: true,
					events: []Event{allocFailed("default/c", `can't change sharing key for "default/c", address also in use by default/a`)}},
				{desc: "same selector", svc: service("d", shared("k"), local(map[string]string{"app": "x"}), ports("TCP/443")), ips: []string{"192.168.10.0"}, pool: "p1", reprocess: true, events: []Event{assigned(`["192.168.10.0"]`)}},
			},
		},
		{
			name:  "the only user of an address may change its key",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a", shared("k1")), ips: []string{"192.168.10.0"}, pool: "p1", reprocess: true, events: []Event{assigned(`["192.168.10.0"]`)}},
				{svc: service("a", shared("k2")), ips: []string{"192.168.10.0"}, pool: "p1", reprocess: true, unchanged: true},
				{svc: service("b", shared("k2"), ports("TCP/443")), ips: []string{"192.168.10.0"}, pool: "p1", reprocess: true, events: []Event{assigned(`["192.168.10.0"]`)}},
				{desc: "no longer alone", svc: service("a", shared("k3")), ips: []string{"192.168.10.1"}, pool: "p1", reprocess: true, events: []Event{
					clearAssignment("default/a", `can't change sharing key for "default/a", address also in use by default/b`),
					assigned(`["192.168.10.1"]`),
				}},
			},
		},
	})
}

func TestConvergeDualStack(t *testing.T) {
	prefer := familyPolicy(corev1.IPFamilyPolicyPreferDualStack)
	require := familyPolicy(corev1.IPFamilyPolicyRequireDualStack)
	runScenarios(t, []scenario{
		{
			name:  "RequireDualStack gets both families",
			pools: []maglbv1beta1.IPAddressPool{dualPool},
			steps: []step{
				{svc: service("a", dualStack, require), ips: []string{"192.168.10.0", "fd00::"}, pool: "dual", events: []Event{assigned(`["192.168.10.0" "fd00::"]`)}},
			},
		},
		{
			name:  "RequireDualStack without two cluster IPs",
			pools: []maglbv1beta1.IPAddressPool{dualPool},
			steps: []step{
				{svc: service("a", require), pending: true, unchanged: true,
					events: []Event{warning(ReasonNotEnoughClusterIPs, "Service requires dual stack but not enough clusterips [10.96.0.1]")}},
				{desc: "with a current address", svc: service("a", require, withStatus("192.168.10.0")), pending: true,
					events: []Event{warning(ReasonNotEnoughClusterIPs, "Service requires dual stack but not enough clusterips [10.96.0.1]")}},
			},
		},
		{
			name:  "RequireDualStack with single-family pools",
			pools: []maglbv1beta1.IPAddressPool{v4Pool, pool("p6", []string{"fd00::/120"})},
			steps: []step{
				{svc: service("a", dualStack, require), pending: true, unchanged: true, events: []Event{allocFailed("default/a", "no available IPs")}},
			},
		},
		{
			name:  "single-stack IPv6 service from a dual pool",
			pools: []maglbv1beta1.IPAddressPool{dualPool},
			steps: []step{
				{svc: service("a", clusterIPs("fd00:96::1")), ips: []string{"fd00::"}, pool: "dual", events: []Event{assigned(`["fd00::"]`)}},
			},
		},
		{
			name:  "IPv4 service from a pool with only IPv6",
			pools: []maglbv1beta1.IPAddressPool{pool("p6", []string{"fd00::/120"}, manual)},
			steps: []step{
				{svc: service("a", annotated(lbservice.AnnotationAddressPool, "p6")), pending: true, unchanged: true, events: []Event{allocFailed("default/a", `["<nil>"] is not allowed in config`)}},
			},
		},
		{
			name:  "PreferDualStack adds the missing family once the pool has it",
			pools: []maglbv1beta1.IPAddressPool{v4Pool},
			steps: []step{
				{svc: service("a", dualStack, prefer), ips: []string{"192.168.10.0"}, pool: "p1", events: []Event{assigned(`["192.168.10.0"]`)}},
				{svc: service("a", dualStack, prefer), ips: []string{"192.168.10.0"}, pool: "p1", unchanged: true, events: []Event{
					normal(ReasonAdditionalAssignFailed, `cannot assign additional IP in PreferDualStack: ["192.168.10.0" "<nil>"] is not allowed in config`),
				}},
				{desc: "an IPv6 range is added", pools: []maglbv1beta1.IPAddressPool{pool("p1", []string{"192.168.10.0/24", "fd00::/120"})},
					svc: service("a", dualStack, prefer), ips: []string{"192.168.10.0", "fd00::"}, pool: "p1",
					events: []Event{normal(ReasonIPAllocated, `Assigned additional IP "fd00::"`)}},
				{svc: service("a", dualStack, prefer), ips: []string{"192.168.10.0", "fd00::"}, pool: "p1", unchanged: true},
			},
		},
		{
			name:  "PreferDualStack additional address names the shard",
			pools: []maglbv1beta1.IPAddressPool{pool("gold", []string{"192.168.10.0/24", "fd00::/120"}, shard("g"))},
			steps: []step{
				{svc: service("a", dualStack, prefer, withStatus("192.168.10.4")), ips: []string{"192.168.10.4", "fd00::"}, pool: "gold", shard: "g",
					events: []Event{normal(ReasonIPAllocated, `Assigned additional IP "fd00::" from pool "gold" (shard "g")`)}},
			},
		},
		{
			name:  "PreferDualStack prefers the first family of spec.ipFamilies",
			pools: []maglbv1beta1.IPAddressPool{pool("a4", []string{"192.168.10.0/24"}), pool("b6", []string{"fd00::/120"})},
			steps: []step{
				{svc: service("v6first", dualStack, prefer, ipFamilies(corev1.IPv6Protocol, corev1.IPv4Protocol)), ips: []string{"fd00::"}, pool: "b6", events: []Event{assigned(`["fd00::"]`)}},
				{svc: service("v4first", dualStack, prefer, ipFamilies(corev1.IPv4Protocol, corev1.IPv6Protocol)), ips: []string{"192.168.10.0"}, pool: "a4", events: []Event{assigned(`["192.168.10.0"]`)}},
			},
		},
		{
			name:  "PreferDualStack takes a pool with both families first",
			pools: []maglbv1beta1.IPAddressPool{pool("a4", []string{"192.168.10.0/24"}), pool("b-dual", []string{"192.168.20.0/24", "fd00::/120"})},
			steps: []step{
				{svc: service("a", dualStack, prefer), ips: []string{"192.168.20.0", "fd00::"}, pool: "b-dual", events: []Event{assigned(`["192.168.20.0" "fd00::"]`)}},
			},
		},
		{
			// MetalLB adds the other family even when the service has a single cluster IP,
			// then drops it on the next pass since the family no longer matches, forever.
			name:  "PreferDualStack with one cluster IP keeps one family, where MetalLB alternates",
			pools: []maglbv1beta1.IPAddressPool{dualPool},
			steps: []step{
				{svc: service("a", prefer), ips: []string{"192.168.10.0"}, pool: "dual", events: []Event{assigned(`["192.168.10.0"]`)}},
				{svc: service("a", prefer), ips: []string{"192.168.10.0"}, pool: "dual", unchanged: true},
				{svc: service("a", prefer), ips: []string{"192.168.10.0"}, pool: "dual", unchanged: true},
			},
		},
	})
}

func TestConvergePoolSelection(t *testing.T) {
	namespaces := []corev1.Namespace{
		namespace("default", nil),
		namespace("team-a", nil),
		namespace("prod", map[string]string{"env": "prod"}),
	}
	pools := []maglbv1beta1.IPAddressPool{
		pool("open", []string{"10.0.0.0/24"}),
		pool("prio10", []string{"10.0.10.0/32"}, allocateTo(10, []string{"team-a"}, nil, nil)),
		pool("prio5", []string{"10.0.5.0/32"}, allocateTo(5, []string{"team-a"}, nil, nil)),
		pool("noprio", []string{"10.0.1.0/32"}, allocateTo(0, []string{"team-a"}, nil, nil)),
		pool("web", []string{"10.0.20.0/24"}, allocateTo(1, nil, nil, []map[string]string{{"app": "web"}})),
		pool("prodsel", []string{"10.0.30.0/24"}, allocateTo(2, nil, []map[string]string{{"env": "prod"}}, nil)),
		pool("web-manual", []string{"10.0.40.0/24"}, manual, allocateTo(0, nil, nil, []map[string]string{{"app": "web"}})),
	}
	runScenarios(t, []scenario{
		{
			name:       "priority, namespaces, namespace and service selectors",
			namespaces: namespaces,
			pools:      pools,
			steps: []step{
				{desc: "no reserved pool fits", svc: service("x"), ips: []string{"10.0.0.0"}, pool: "open", events: []Event{assigned(`["10.0.0.0"]`)}},
				{desc: "lowest priority value first", svc: service("y1", inNamespace("team-a")), ips: []string{"10.0.5.0"}, pool: "prio5", events: []Event{assigned(`["10.0.5.0"]`)}},
				{desc: "then the next", svc: service("y2", inNamespace("team-a")), ips: []string{"10.0.10.0"}, pool: "prio10", events: []Event{assigned(`["10.0.10.0"]`)}},
				{desc: "unset priority last", svc: service("y3", inNamespace("team-a")), ips: []string{"10.0.1.0"}, pool: "noprio", events: []Event{assigned(`["10.0.1.0"]`)}},
				{desc: "reserved pools full: the open ones", svc: service("y4", inNamespace("team-a")), ips: []string{"10.0.0.1"}, pool: "open", events: []Event{assigned(`["10.0.0.1"]`)}},
				{desc: "service selector, priority 1", svc: service("w", inNamespace("team-a"), labelled(map[string]string{"app": "web"})), ips: []string{"10.0.20.0"}, pool: "web", events: []Event{assigned(`["10.0.20.0"]`)}},
				{desc: "namespace selector resolved by the configuration", svc: service("p", inNamespace("prod")), nsLabels: map[string]string{"env": "prod"}, ips: []string{"10.0.30.0"}, pool: "prodsel", events: []Event{assigned(`["10.0.30.0"]`)}},
				{desc: "namespace selector matched by the namespace labels", svc: service("q", inNamespace("new")), nsLabels: map[string]string{"env": "prod"}, ips: []string{"10.0.30.1"}, pool: "prodsel", events: []Event{assigned(`["10.0.30.1"]`)}},
				{desc: "autoAssign=false reserved pool skipped", svc: service("m", labelled(map[string]string{"app": "web"})), ips: []string{"10.0.20.1"}, pool: "web", events: []Event{assigned(`["10.0.20.1"]`)}},
				{desc: "requested pool that does not select the service", svc: service("n", annotated(lbservice.AnnotationAddressPool, "web-manual")), pending: true, unchanged: true,
					events: []Event{allocFailed("default/n", "pool web-manual not compatible for ip assignment")}},
				{desc: "requested pool that selects the service", svc: service("n", annotated(lbservice.AnnotationAddressPool, "web-manual"), labelled(map[string]string{"app": "web"})), ips: []string{"10.0.40.0"}, pool: "web-manual", events: []Event{assigned(`["10.0.40.0"]`)}},
			},
		},
		{
			name:  "a priority-only pool ranks for every service",
			pools: []maglbv1beta1.IPAddressPool{pool("a-open", []string{"10.0.0.0/24"}), pool("z-prio", []string{"10.0.9.0/24"}, allocateTo(3, nil, nil, nil))},
			steps: []step{
				{svc: service("x"), ips: []string{"10.0.9.0"}, pool: "z-prio", events: []Event{assigned(`["10.0.9.0"]`)}},
			},
		},
		{
			name:  "service labels change: the reserved pool no longer fits",
			pools: []maglbv1beta1.IPAddressPool{pool("open", []string{"10.0.0.0/24"}), pool("web", []string{"10.0.20.0/24"}, allocateTo(1, nil, nil, []map[string]string{{"app": "web"}}))},
			steps: []step{
				{svc: service("w", labelled(map[string]string{"app": "web"})), ips: []string{"10.0.20.0"}, pool: "web", events: []Event{assigned(`["10.0.20.0"]`)}},
				{svc: service("w", labelled(map[string]string{"app": "db"})), ips: []string{"10.0.0.0"}, pool: "open", events: []Event{
					clearAssignment("default/w", "pool web not compatible for ip assignment"),
					assigned(`["10.0.0.0"]`),
				}},
			},
		},
	})
}

func TestConvergeBeforePools(t *testing.T) {
	a := New()
	svc := service("a", withStatus("192.168.10.3"), annotated(lbservice.AnnotationIPAllocatedFromPool, "p1"))
	r := a.Converge(svc, nil)
	want := Result{IPs: addrs("192.168.10.3"), Pool: "p1", Pending: true}
	if diff := cmp.Diff(want, r, cmp.Comparer(func(x, y Result) bool {
		return cmp.Equal(texts(x.IPs), texts(y.IPs)) && x.Pool == y.Pool && x.Pending == y.Pending && x.Changed == y.Changed && len(x.Events) == len(y.Events)
	})); diff != "" {
		t.Errorf("before SetPools: %s", diff)
	}
	a.SetPools(nil)
	if r := a.Converge(svc, nil); r.Changed || !r.Pending {
		t.Errorf("a nil configuration must be ignored: %+v", r)
	}
}

func TestConvergeDoesNotModifyTheService(t *testing.T) {
	a := New()
	a.SetPools(buildPools(t, nil, v4Pool))
	svc := service("a", withStatus("10.9.9.9"), annotated(lbservice.LegacyAnnotationIPAllocatedFromPool, "x", lbservice.AnnotationIPAllocatedFromPool, "y"))
	before := svc.DeepCopy()
	r := a.Converge(svc, nil)
	if !r.Changed {
		t.Fatal("expected a change")
	}
	if diff := cmp.Diff(before, svc); diff != "" {
		t.Errorf("service modified: %s", diff)
	}
}
