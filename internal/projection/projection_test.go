// SPDX-License-Identifier: Apache-2.0

package projection

import (
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/lbservice"
)

var dnsLabel = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

func TestName(t *testing.T) {
	long := strings.Repeat("n", 63)
	for _, tc := range []struct {
		desc, cluster, ns, name, wantPrefix string
	}{
		{"short", "a", "default", "web", "default-web-"},
		{"namespace starting with a digit", "a", "1ns", "web", "s1ns-web-"},
		{"truncated", "a", long, long, long[:54] + "-"},
		{"truncation ending on a dash", "a", strings.Repeat("n", 53), "web", strings.Repeat("n", 53) + "-"},
	} {
		got := Name(tc.cluster, tc.ns, tc.name)
		if !strings.HasPrefix(got, tc.wantPrefix) || len(got) != len(tc.wantPrefix)+nameHashLen || len(got) > 63 || !dnsLabel.MatchString(got) {
			t.Errorf("%s: Name = %q, want %q + 8 hex digits, a DNS label", tc.desc, got, tc.wantPrefix)
		}
	}
	if Name("a", "default", "web") == Name("b", "default", "web") {
		t.Error("the same Service of two clusters has the same projected name")
	}
	if Name("a", "default", "web") != Name("a", "default", "web") {
		t.Error("Name is not stable")
	}
	if Name("a", long, long+"x") == Name("a", long, long+"y") {
		t.Error("names differing beyond the truncation collide")
	}
}

func TestTaken(t *testing.T) {
	lb := func(class *string, lbls map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Labels: lbls}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: class}}
	}
	team := labels.SelectorFromSet(labels.Set{"team": "a"})
	for _, tc := range []struct {
		desc     string
		svc      *corev1.Service
		selector labels.Selector
		want     bool
	}{
		{"LoadBalancer without class", lb(nil, nil), labels.Everything(), true},
		{"the cluster's class", lb(ptr.To("maglb.io/lb-cluster"), nil), labels.Everything(), true},
		{"another class", lb(ptr.To("other"), nil), labels.Everything(), false},
		{"ClusterIP", &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP}}, labels.Everything(), false},
		{"selected", lb(nil, map[string]string{"team": "a"}), team, true},
		{"not selected", lb(nil, map[string]string{"team": "b"}), team, false},
	} {
		if got := Taken(tc.svc, "maglb.io/lb-cluster", tc.selector); got != tc.want {
			t.Errorf("%s: Taken = %v, want %v", tc.desc, got, tc.want)
		}
	}
}

func node(name string, addrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.9"})
	return n
}

type ep struct {
	pod, node, addr            string
	ready, serving, terminates *bool
}

func slice(family discoveryv1.AddressType, eps ...ep) discoveryv1.EndpointSlice {
	s := discoveryv1.EndpointSlice{AddressType: family}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.addr},
			NodeName:   ptr.To(e.node),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: e.pod},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminates},
		})
	}
	return s
}

func TestServingNodes(t *testing.T) {
	yes, no := ptr.To(true), ptr.To(false)
	deleting := node("gone")
	deleting.DeletionTimestamp = &metav1.Time{}
	excluded := node("excluded")
	excluded.Labels = map[string]string{LabelExcludeFromLB: ""}
	nodes := map[string]*corev1.Node{"n1": node("n1"), "n2": node("n2"), "gone": deleting, "excluded": excluded}
	for _, tc := range []struct {
		desc   string
		slices []discoveryv1.EndpointSlice
		want   map[string]int
	}{
		{"ready pods counted per node", []discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeIPv4,
			ep{pod: "a", node: "n1", addr: "10.0.0.1", ready: yes}, ep{pod: "b", node: "n1", addr: "10.0.0.2"}, ep{pod: "c", node: "n2", addr: "10.0.0.3", ready: yes})},
			map[string]int{"n1": 2, "n2": 1}},
		{"a dual-stack pod counts once", []discoveryv1.EndpointSlice{
			slice(discoveryv1.AddressTypeIPv4, ep{pod: "a", node: "n1", addr: "10.0.0.1", ready: yes}),
			slice(discoveryv1.AddressTypeIPv6, ep{pod: "a", node: "n1", addr: "fd00::1", ready: yes})},
			map[string]int{"n1": 1}},
		{"not ready left out, serving while terminating kept", []discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeIPv4,
			ep{pod: "a", node: "n1", addr: "10.0.0.1", ready: no},
			ep{pod: "b", node: "n2", addr: "10.0.0.2", ready: no, serving: yes, terminates: yes},
			ep{pod: "c", node: "n2", addr: "10.0.0.3", ready: no, serving: no, terminates: yes})},
			map[string]int{"n2": 1}},
		{"missing, deleted and excluded nodes left out", []discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeIPv4,
			ep{pod: "a", node: "unknown", addr: "10.0.0.1"}, ep{pod: "b", node: "gone", addr: "10.0.0.2"}, ep{pod: "c", node: "excluded", addr: "10.0.0.3"})},
			map[string]int{}},
	} {
		if diff := cmp.Diff(tc.want, ServingNodes(tc.slices, nodes)); diff != "" {
			t.Errorf("%s: ServingNodes (-want +got):\n%s", tc.desc, diff)
		}
	}
}

func workloadService() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "shop", Name: "web", UID: "uid-1",
			Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{
				lbservice.AnnotationAddressPool:         "gold",
				lbservice.LegacyAnnotationAllowSharedIP: "key",
				"unrelated":                             "x",
			},
		},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			Selector:              map[string]string{"app": "web"},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
			IPFamilyPolicy:        ptr.To(corev1.IPFamilyPolicyPreferDualStack),
			LoadBalancerIP:        "198.51.100.7",
			Ports: []corev1.ServicePort{
				{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 30080},
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
			},
		},
	}
}

func TestProjectedService(t *testing.T) {
	name := Name("east", "shop", "web")
	want := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "maglb-wc-east", Name: name,
			Labels: map[string]string{"app": "web", "maglb.io/workload-cluster": "east", "maglb.io/workload-namespace": "shop", "maglb.io/workload-name": "web"},
			Annotations: map[string]string{
				"metallb.io/address-pool":                   "gold",
				"metallb.universe.tf/allow-shared-ip":       "east/key",
				"maglb.io/workload-uid":                     "uid-1",
				"maglb.io/workload-external-traffic-policy": "Local",
			},
		},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			AllocateLoadBalancerNodePorts: ptr.To(false),
			ExternalTrafficPolicy:         corev1.ServiceExternalTrafficPolicyCluster,
			IPFamilies:                    []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
			IPFamilyPolicy:                ptr.To(corev1.IPFamilyPolicyPreferDualStack),
			LoadBalancerIP:                "198.51.100.7",
			LoadBalancerClass:             ptr.To("lb"),
			Ports: []corev1.ServicePort{
				{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(30080)},
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
			},
		},
	}
	got := ProjectedService(Input{Cluster: "east", Namespace: "maglb-wc-east", LBClass: "lb", Service: workloadService()})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ProjectedService (-want +got):\n%s", diff)
	}
	if got := ProjectedService(Input{Cluster: "east", Namespace: "n", Service: workloadService()}); got.Spec.LoadBalancerClass != nil {
		t.Errorf("without --lb-class the projected class = %q, want none", *got.Spec.LoadBalancerClass)
	}
}

func TestProjectedSlices(t *testing.T) {
	yes := ptr.To(true)
	in := Input{
		Cluster: "east", Namespace: "maglb-wc-east", Service: workloadService(),
		Slices: []discoveryv1.EndpointSlice{
			slice(discoveryv1.AddressTypeIPv4, ep{pod: "a", node: "n1", addr: "10.0.0.1", ready: yes}, ep{pod: "b", node: "n1", addr: "10.0.0.2"}, ep{pod: "c", node: "n2", addr: "10.0.0.3"}),
		},
		Nodes: map[string]*corev1.Node{"n1": node("n1", "192.0.2.11", "2001:db8::11"), "n2": node("n2", "192.0.2.2")},
	}
	name := Name("east", "shop", "web")
	lbls := map[string]string{
		"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "projection.maglb.io",
		"maglb.io/workload-cluster": "east", "maglb.io/workload-namespace": "shop", "maglb.io/workload-name": "web",
	}
	ports := []discoveryv1.EndpointPort{
		{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](30080)},
		{Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To[int32](53)},
	}
	endpoint := func(addr string) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: yes}}
	}
	want := []discoveryv1.EndpointSlice{
		{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "maglb-wc-east", Name: name + "-ipv4", Labels: lbls, Annotations: map[string]string{"maglb.io/endpoint-weights": "192.0.2.2=1,192.0.2.11=2"}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: ports,
			Endpoints: []discoveryv1.Endpoint{endpoint("192.0.2.2"), endpoint("192.0.2.11")},
		},
		{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "maglb-wc-east", Name: name + "-ipv6", Labels: lbls, Annotations: map[string]string{"maglb.io/endpoint-weights": "2001:db8::11=2"}},
			AddressType: discoveryv1.AddressTypeIPv6, Ports: ports,
			Endpoints: []discoveryv1.Endpoint{endpoint("2001:db8::11")},
		},
	}
	if diff := cmp.Diff(want, ProjectedSlices(in)); diff != "" {
		t.Errorf("ProjectedSlices (-want +got):\n%s", diff)
	}
	in.Slices = nil
	if got := ProjectedSlices(in); len(got) != 0 {
		t.Errorf("without serving nodes ProjectedSlices = %d slices, want none", len(got))
	}
}

func TestUpdateService(t *testing.T) {
	in := Input{Cluster: "east", Namespace: "ns", Service: workloadService()}
	want := ProjectedService(in)
	stored := want.DeepCopy()
	// What the API server and the allocator add: left alone.
	stored.Annotations[lbservice.AnnotationIPAllocatedFromPool] = "gold"
	stored.Spec.ClusterIP = "10.96.0.10"
	stored.Spec.SessionAffinity = corev1.ServiceAffinityNone
	stored.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyCluster)

	for _, tc := range []struct {
		desc    string
		edit    func(s *corev1.Service)
		changed bool
	}{
		{"unchanged", func(*corev1.Service) {}, false},
		{"port changed", func(s *corev1.Service) { s.Spec.Ports[0].TargetPort = intstr.FromInt32(1) }, true},
		{"annotation we carry removed", func(s *corev1.Service) { s.Annotations["metallb.io/loadBalancerIPs"] = "192.0.2.1" }, true},
		{"label changed", func(s *corev1.Service) { s.Labels["app"] = "other" }, true},
		{"selector set", func(s *corev1.Service) { s.Spec.Selector = map[string]string{"a": "b"} }, true},
		{"families defaulted by the server", func(s *corev1.Service) { s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol} }, true},
	} {
		current := stored.DeepCopy()
		tc.edit(current)
		got, changed := UpdateService(current, want)
		if changed != tc.changed {
			t.Errorf("%s: changed = %v, want %v", tc.desc, changed, tc.changed)
		}
		if _, again := UpdateService(got, want); again {
			t.Errorf("%s: the updated Service still differs", tc.desc)
		}
		if got.Annotations[lbservice.AnnotationIPAllocatedFromPool] != "gold" || got.Spec.ClusterIP != "10.96.0.10" {
			t.Errorf("%s: fields of others changed: %v %q", tc.desc, got.Annotations, got.Spec.ClusterIP)
		}
	}
}

func TestUpdateSlice(t *testing.T) {
	in := Input{Cluster: "east", Namespace: "ns", Service: workloadService(),
		Slices: []discoveryv1.EndpointSlice{slice(discoveryv1.AddressTypeIPv4, ep{pod: "a", node: "n1", addr: "10.0.0.1"})},
		Nodes:  map[string]*corev1.Node{"n1": node("n1", "192.0.2.1"), "n2": node("n2", "192.0.2.2")}}
	want := ProjectedSlices(in)[0]
	if _, changed := UpdateSlice(want.DeepCopy(), &want); changed {
		t.Error("an equal slice needs an update")
	}
	in.Slices[0].Endpoints = append(in.Slices[0].Endpoints, slice(discoveryv1.AddressTypeIPv4, ep{pod: "b", node: "n2", addr: "10.0.0.2"}).Endpoints...)
	moved := ProjectedSlices(in)[0]
	got, changed := UpdateSlice(want.DeepCopy(), &moved)
	if !changed || got.Annotations[v1alpha1.AnnotationEndpointWeights] != "192.0.2.1=1,192.0.2.2=1" || len(got.Endpoints) != 2 {
		t.Errorf("UpdateSlice after a new node = %v %v, want changed with two weighted endpoints", changed, got.Annotations)
	}
}

func TestIngressAndMessage(t *testing.T) {
	projected := &corev1.Service{Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
		{IP: "198.51.100.1", IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)}, {Hostname: "x"}, {IP: "2001:db8::1"},
	}}}}
	want := []corev1.LoadBalancerIngress{{IP: "198.51.100.1"}, {IP: "2001:db8::1"}}
	got := Ingress(projected)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Ingress (-want +got):\n%s", diff)
	}
	if !IngressEqual(got, want) || IngressEqual(got, want[:1]) {
		t.Error("IngressEqual is wrong")
	}
	if msg := AllocatedMessage(want, "gold", "g1"); msg != `Assigned IP ["198.51.100.1" "2001:db8::1"] from the LB cluster's pool "gold", shard "g1"` {
		t.Errorf("AllocatedMessage = %s", msg)
	}
}

func TestCount(t *testing.T) {
	taken := func(name string, ingress ...string) corev1.Service {
		s := workloadService()
		s.Name = name
		for _, ip := range ingress {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
		return *s
	}
	withVIP := func(ip string) *corev1.Service {
		return &corev1.Service{Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: ip}}}}}
	}
	deleting := taken("deleting")
	deleting.DeletionTimestamp = &metav1.Time{}
	clusterIP := taken("clusterip")
	clusterIP.Spec.Type = corev1.ServiceTypeClusterIP
	services := []corev1.Service{taken("shown", "198.51.100.1"), taken("pending"), taken("stale", "198.51.100.9"), taken("missing"), deleting, clusterIP}
	projected := map[types.NamespacedName]*corev1.Service{
		{Namespace: "shop", Name: "shown"}:   withVIP("198.51.100.1"),
		{Namespace: "shop", Name: "pending"}: withVIP("198.51.100.2"),
		{Namespace: "shop", Name: "stale"}:   withVIP("198.51.100.3"),
	}
	if got, want := Count(services, projected, "c", labels.Everything()), (Tally{Taken: 4, Projected: 3, WithVIP: 1}); got != want {
		t.Errorf("Count = %+v, want %+v", got, want)
	}
}

func TestSynced(t *testing.T) {
	all := Tally{Taken: 2, Projected: 2, WithVIP: 2}
	for _, tc := range []struct {
		state  SyncState
		status metav1.ConditionStatus
		reason string
		msg    string
	}{
		{SyncState{CacheSynced: true, Connected: true, Tally: all}, metav1.ConditionTrue, "Synced", "every taken Service (2) is projected"},
		{SyncState{CacheSynced: true, Connected: true, Tally: Tally{Taken: 2, Projected: 2}}, metav1.ConditionTrue, "Synced", "every taken Service (2) is projected; 2 without a VIP yet"},
		{SyncState{Connected: true, Tally: all}, metav1.ConditionFalse, "CacheNotSynced", "waiting for the workload cluster's Services, EndpointSlices and Nodes"},
		{SyncState{CacheSynced: true, Connected: true, Tally: all, Failures: map[string]string{"b/x": "boom", "a/y": "bang"}},
			metav1.ConditionFalse, "ProjectionFailed", "2 Services not projected; a/y: bang"},
		{SyncState{CacheSynced: true, Connected: true, Tally: Tally{Taken: 3, Projected: 1}}, metav1.ConditionFalse, "Projecting", "1 of 3 taken Services projected"},
		{SyncState{CacheSynced: true, Tally: all}, metav1.ConditionFalse, "NotConnected", "projections are kept as last seen until the workload cluster answers"},
	} {
		status, reason, msg := Synced(tc.state)
		if status != tc.status || reason != tc.reason || msg != tc.msg {
			t.Errorf("Synced(%+v) = %s %s %q, want %s %s %q", tc.state, status, reason, msg, tc.status, tc.reason, tc.msg)
		}
	}
}
