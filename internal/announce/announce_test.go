// SPDX-License-Identifier: Apache-2.0

package announce

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/internal/config"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

const ns = "metallb-system"

var meta = func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: ns} }

// lab is three nodes: lb1 and lb2 in shard gold, lb3 in none; lb3 excluded when asked.
var labNodes = []Node{
	{Name: "lb1", Labels: map[string]string{"maglb.io/shard-gold": "", "rack": "a"}, Addrs: addrs("10.0.0.1"), Live: true},
	{Name: "lb2", Labels: map[string]string{"maglb.io/shard-gold": "", "rack": "b"}, Addrs: addrs("10.0.0.2"), Live: true},
	{Name: "lb3", Labels: map[string]string{"rack": "b"}, Addrs: addrs("10.0.0.3"), Live: true},
}

func k8sNodes(nodes []Node) []corev1.Node {
	var out []corev1.Node
	for _, n := range nodes {
		out = append(out, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.Labels}})
	}
	return out
}

// lab's configuration: pool "default" (every node) and "gold" (shard gold, aggregated /24),
// two peers (one from rack a only), BGP advertisements with communities, and L2 for "l2".
func labConfig(t testing.TB, mutate func(*config.ClusterResources)) *config.Config {
	t.Helper()
	gold := maglbv1beta1.IPAddressPool{ObjectMeta: meta("gold")}
	gold.Spec.Addresses = []string{"198.51.100.0/24"}
	gold.Spec.Shard = "gold"
	def := maglbv1beta1.IPAddressPool{ObjectMeta: meta("default")}
	def.Spec.Addresses = []string{"192.0.2.0/24", "2001:db8::/64"}
	l2 := maglbv1beta1.IPAddressPool{ObjectMeta: meta("l2")}
	l2.Spec.Addresses = []string{"203.0.113.0/24"}
	res := config.ClusterResources{
		Pools: []maglbv1beta1.IPAddressPool{gold, def, l2},
		Peers: []metallbv1beta2.BGPPeer{
			{ObjectMeta: meta("tor"), Spec: metallbv1beta2.BGPPeerSpec{MyASN: 64512, ASN: 64500, Address: "172.30.0.1"}},
			{ObjectMeta: meta("tor-a"), Spec: metallbv1beta2.BGPPeerSpec{MyASN: 64512, ASN: 64512, Address: "172.30.1.1",
				NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"rack": "a"}}}}},
		},
		BGPAdvs: []metallbv1beta1.BGPAdvertisement{
			{ObjectMeta: meta("default"), Spec: metallbv1beta1.BGPAdvertisementSpec{IPAddressPools: []string{"default"}, Communities: []string{"64512:1"}, LocalPref: 100, AggregationLengthV6: ptr[int32](120)}},
			{ObjectMeta: meta("default-local"), Spec: metallbv1beta1.BGPAdvertisementSpec{IPAddressPools: []string{"default"}, Communities: []string{"large:64512:2:3"}, LocalPref: 100, Peers: []string{"tor-a"}}},
			{ObjectMeta: meta("gold"), Spec: metallbv1beta1.BGPAdvertisementSpec{IPAddressPools: []string{"gold"}, AggregationLength: ptr[int32](24)}},
		},
		L2Advs: []metallbv1beta1.L2Advertisement{
			{ObjectMeta: meta("l2"), Spec: metallbv1beta1.L2AdvertisementSpec{IPAddressPools: []string{"l2"}, Interfaces: []string{"eth1"}}},
		},
		Nodes: k8sNodes(labNodes),
	}
	if mutate != nil {
		mutate(&res)
	}
	cfg, err := config.For(res, config.DontValidate)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

var equateAddrs = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func ptr[T any](v T) *T { return &v }

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func ready(node string) Endpoint {
	return Endpoint{Addr: netip.MustParseAddr("10.244.0.1"), Node: node, Ready: true}
}

func svc(key, pool string, ips ...string) Service {
	return Service{Key: key, Pool: pool, IPs: addrs(ips...), Ports: []Port{{datapath.TCP, 80}}, Endpoints: []Endpoint{ready("lb3")}}
}

func TestRoutes(t *testing.T) {
	std := config.Community{Global: 64512<<16 | 1}
	large := config.Community{Large: true, Global: 64512, LocalData1: 2, LocalData2: 3}
	for _, tc := range []struct {
		name     string
		node     string
		services []Service
		datapath DatapathMode
		want     []Route
		reason   string // of the first service, when not announced
	}{
		{
			name:     "per-VIP route to every peer of the node, attributes merged per peer",
			node:     "lb1",
			services: []Service{svc("default/web", "default", "192.0.2.10")},
			want: []Route{
				{Prefix: netip.MustParsePrefix("192.0.2.10/32"), Communities: []config.Community{std}, LocalPref: 100, Peers: []string{"tor"}},
				{Prefix: netip.MustParsePrefix("192.0.2.10/32"), Communities: []config.Community{large, std}, LocalPref: 100, Peers: []string{"tor-a"}},
			},
		},
		{
			name:     "a node outside rack a has only the eBGP peer",
			node:     "lb3",
			services: []Service{svc("default/web", "default", "192.0.2.10")},
			want:     []Route{{Prefix: netip.MustParsePrefix("192.0.2.10/32"), Communities: []config.Community{std}, LocalPref: 100, Peers: []string{"tor"}}},
		},
		{
			name:     "IPv6 with its own aggregation length",
			node:     "lb3",
			services: []Service{svc("default/v6", "default", "2001:db8::5")},
			want:     []Route{{Prefix: netip.MustParsePrefix("2001:db8::/120"), Communities: []config.Community{std}, LocalPref: 100, Peers: []string{"tor"}}},
		},
		{
			name:     "the pool pinned by annotation is found from the IP when the annotation is missing",
			node:     "lb3",
			services: []Service{svc("default/web", "", "192.0.2.10")},
			want:     []Route{{Prefix: netip.MustParsePrefix("192.0.2.10/32"), Communities: []config.Community{std}, LocalPref: 100, Peers: []string{"tor"}}},
		},
		{
			name:     "shard members announce the shard's aggregate once for all its VIPs",
			node:     "lb1",
			services: []Service{svc("default/a", "gold", "198.51.100.1"), svc("default/b", "gold", "198.51.100.200")},
			want:     []Route{{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Peers: []string{"tor", "tor-a"}}},
		},
		{
			name:     "a node outside the shard announces nothing of it",
			node:     "lb3",
			services: []Service{svc("default/a", "gold", "198.51.100.1")},
			reason:   ReasonNotInShard,
		},
		{
			name:     "no ready endpoint: withdrawn",
			node:     "lb3",
			services: []Service{{Key: "default/web", Pool: "default", IPs: addrs("192.0.2.10"), Endpoints: []Endpoint{{Node: "lb3"}}}},
			reason:   ReasonNoEndpoints,
		},
		{
			name:     "ETP=Local with kube-proxy: only nodes with a local endpoint",
			node:     "lb1",
			services: []Service{{Key: "default/web", Pool: "default", IPs: addrs("192.0.2.10"), LocalTraffic: true, Endpoints: []Endpoint{ready("lb3")}}},
			reason:   ReasonNoLocalEndpoints,
		},
		{
			name:     "ETP=Local with the eBPF datapath: every eligible node, it forwards to any backend",
			node:     "lb3",
			datapath: EBPF,
			services: []Service{{Key: "default/web", Pool: "default", IPs: addrs("192.0.2.10"), LocalTraffic: true, Endpoints: []Endpoint{ready("lb1")}}},
			want:     []Route{{Prefix: netip.MustParsePrefix("192.0.2.10/32"), Communities: []config.Community{std}, LocalPref: 100, Peers: []string{"tor"}}},
		},
		{
			name:     "unknown pool",
			node:     "lb3",
			services: []Service{svc("default/x", "gone", "10.9.9.9")},
			reason:   ReasonUnknownPool,
		},
		{
			name:     "L2-only pool has no BGP advertisement",
			node:     "lb3",
			services: []Service{svc("default/l2", "l2", "203.0.113.7")},
			reason:   ReasonNoMatchingAdvertisement,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := Decide(Input{NodeName: tc.node, Nodes: labNodes, Config: labConfig(t, nil), Services: tc.services, Datapath: tc.datapath})
			if diff := cmp.Diff(tc.want, plan.Routes, equateAddrs); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
			if got := plan.Services[tc.services[0].Key].BGPReason; got != tc.reason {
				t.Errorf("BGP reason %q, want %q", got, tc.reason)
			}
		})
	}
}

func TestExcludedNode(t *testing.T) {
	nodes := append([]Node(nil), labNodes...)
	nodes[2].Labels = map[string]string{"node.kubernetes.io/exclude-from-external-load-balancers": ""}
	services := []Service{svc("default/web", "default", "192.0.2.10")}
	plan := Decide(Input{NodeName: "lb3", Nodes: nodes, Config: labConfig(t, nil), Services: services})
	if len(plan.Routes) != 0 || plan.Services["default/web"].BGPReason != ReasonNodeExcluded {
		t.Errorf("excluded node: routes %v, state %+v", plan.Routes, plan.Services["default/web"])
	}
	plan = Decide(Input{NodeName: "lb3", Nodes: nodes, Config: labConfig(t, nil), Services: services, ExcludeLabelIgnored: true})
	if len(plan.Routes) != 1 {
		t.Errorf("with the label ignored: routes %v, want one", plan.Routes)
	}
}

// Exactly one live node answers for an L2 VIP; when it dies, another does.
func TestL2Election(t *testing.T) {
	cfg := labConfig(t, nil)
	services := []Service{svc("default/l2", "l2", "203.0.113.7")}
	owners := func(nodes []Node) []string {
		var names []string
		for _, n := range nodes {
			plan := Decide(Input{NodeName: n.Name, Nodes: nodes, Config: cfg, Services: services})
			if ifaces, ok := plan.L2[netip.MustParseAddr("203.0.113.7")]; ok {
				names = append(names, n.Name)
				if !cmp.Equal(ifaces, []string{"eth1"}) {
					t.Errorf("%s announces on %v, want [eth1]", n.Name, ifaces)
				}
			}
		}
		return names
	}
	first := owners(labNodes)
	if len(first) != 1 {
		t.Fatalf("owners %v, want exactly one", first)
	}
	dead := append([]Node(nil), labNodes...)
	for i := range dead {
		if dead[i].Name == first[0] {
			dead[i].Live = false
		}
	}
	second := owners(dead)
	if len(second) != 1 || second[0] == first[0] {
		t.Errorf("after %s died: owners %v, want one other node", first[0], second)
	}
	if got := ChooseNode(netip.MustParseAddr("203.0.113.7"), []string{"lb1", "lb2", "lb3"}, nil); got != first[0] {
		t.Errorf("ChooseNode = %s, the election picked %s", got, first[0])
	}
}

// The expected winners come from `printf '<node>#<ip>' | sha256sum` (upstream's rule):
//
//	             192.0.2.10  192.0.2.11  2001:db8::10
//	node-a       d4b84135…   0b9c2b4e…   5525059d…
//	node-b       6e9fb809…   dd50598f…   21d5668f…
//	node-c       39f2d7a8…   cceb0431…   d30d3eb7…
func TestChooseNode(t *testing.T) {
	abc := []string{"node-a", "node-b", "node-c"}
	tests := []struct {
		name       string
		ip         string
		nodes      []string
		preference map[string]int64
		want       string
	}{
		{name: "no candidates", ip: "192.0.2.10", nodes: nil, want: ""},
		{name: "single candidate", ip: "192.0.2.10", nodes: []string{"node-a"}, want: "node-a"},
		{name: "smallest hash wins", ip: "192.0.2.10", nodes: abc, want: "node-c"},
		{name: "input order does not matter", ip: "192.0.2.10", nodes: []string{"node-c", "node-b", "node-a"}, want: "node-c"},
		{name: "another IP, another winner", ip: "192.0.2.11", nodes: abc, want: "node-a"},
		{name: "IPv6", ip: "2001:db8::10", nodes: abc, want: "node-b"},
		{name: "winner absent, next hash wins", ip: "192.0.2.10", nodes: []string{"node-a", "node-b"}, want: "node-b"},
		{name: "IPv4-mapped hashes as IPv4", ip: "::ffff:192.0.2.10", nodes: abc, want: "node-c"},
		{name: "preference beats hash", ip: "192.0.2.10", nodes: abc, preference: map[string]int64{"node-a": 10}, want: "node-a"},
		{name: "highest preference wins", ip: "192.0.2.10", nodes: abc, preference: map[string]int64{"node-a": 10, "node-c": 5}, want: "node-a"},
		{name: "equal preference falls back to hash", ip: "192.0.2.10", nodes: abc, preference: map[string]int64{"node-a": 10, "node-b": 10}, want: "node-b"},
		{name: "preferred node not a candidate", ip: "192.0.2.10", nodes: []string{"node-a", "node-b"}, preference: map[string]int64{"node-c": 10}, want: "node-b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ChooseNode(netip.MustParseAddr(tc.ip), tc.nodes, tc.preference); got != tc.want {
				t.Errorf("ChooseNode(%s, %v, %v) = %q, want %q", tc.ip, tc.nodes, tc.preference, got, tc.want)
			}
		})
	}
}

func TestL2LocalTraffic(t *testing.T) {
	cfg := labConfig(t, nil)
	services := []Service{{Key: "default/l2", Pool: "l2", IPs: addrs("203.0.113.7"), LocalTraffic: true, Endpoints: []Endpoint{ready("lb2")}}}
	for _, n := range labNodes {
		plan := Decide(Input{NodeName: n.Name, Nodes: labNodes, Config: cfg, Services: services})
		if got, want := plan.Services["default/l2"].L2, n.Name == "lb2"; got != want {
			t.Errorf("%s announces: %v, want %v (only the node with the endpoint)", n.Name, got, want)
		}
	}
}

func TestDatapathServices(t *testing.T) {
	services := []Service{{
		Key: "default/web", Pool: "gold", IPs: addrs("198.51.100.1"),
		Ports: []Port{{datapath.TCP, 80}, {datapath.UDP, 53}},
		Endpoints: []Endpoint{
			ready("lb3"), ready("lb1"), ready("lb3"),
			{Node: "lb2", Ready: false},
		},
	}}
	backends := []datapath.Backend{{Addr: netip.MustParseAddr("10.0.0.1"), Weight: 1}, {Addr: netip.MustParseAddr("10.0.0.3"), Weight: 2}}
	want := []datapath.Service{
		{VIP: netip.MustParseAddr("198.51.100.1"), Protocol: datapath.TCP, Port: 80, Backends: backends, Encap: datapath.EncapGUE},
		{VIP: netip.MustParseAddr("198.51.100.1"), Protocol: datapath.UDP, Port: 53, Backends: backends, Encap: datapath.EncapGUE},
	}
	plan := Decide(Input{NodeName: "lb1", Nodes: labNodes, Config: labConfig(t, nil), Services: services, Datapath: EBPF, Encap: datapath.EncapGUE})
	if diff := cmp.Diff(want, plan.Datapath, equateAddrs); diff != "" {
		t.Errorf("datapath (-want +got):\n%s", diff)
	}
	plan = Decide(Input{NodeName: "lb3", Nodes: labNodes, Config: labConfig(t, nil), Services: services, Datapath: EBPF})
	if len(plan.Datapath) != 0 {
		t.Errorf("a node outside the shard programs %v", plan.Datapath)
	}

	// Dual stack: the backends of an IPv6 VIP are the nodes' IPv6 addresses, whatever the
	// order of their InternalIPs; a node without one is no backend of it.
	dual := slices.Clone(labNodes)
	dual[0].Addrs = addrs("fd00::1", "10.0.0.1")
	dual[2].Addrs = addrs("10.0.0.3")
	dual[1].Addrs = addrs("10.0.0.2", "fd00::2")
	dualServices := []Service{{
		Key: "default/web", Pool: "gold", IPs: addrs("198.51.100.1", "2001:db8::1"), Ports: []Port{{datapath.TCP, 80}},
		Endpoints: []Endpoint{ready("lb1"), ready("lb2"), ready("lb3")},
	}}
	want = []datapath.Service{
		{VIP: netip.MustParseAddr("198.51.100.1"), Protocol: datapath.TCP, Port: 80, Backends: []datapath.Backend{
			{Addr: netip.MustParseAddr("10.0.0.1"), Weight: 1}, {Addr: netip.MustParseAddr("10.0.0.2"), Weight: 1}, {Addr: netip.MustParseAddr("10.0.0.3"), Weight: 1}}},
		{VIP: netip.MustParseAddr("2001:db8::1"), Protocol: datapath.TCP, Port: 80, Backends: []datapath.Backend{
			{Addr: netip.MustParseAddr("fd00::1"), Weight: 1}, {Addr: netip.MustParseAddr("fd00::2"), Weight: 1}}},
	}
	plan = Decide(Input{NodeName: "lb1", Nodes: dual, Config: labConfig(t, nil), Services: dualServices, Datapath: EBPF})
	if diff := cmp.Diff(want, plan.Datapath, equateAddrs); diff != "" {
		t.Errorf("dual-stack datapath (-want +got):\n%s", diff)
	}
	plan = Decide(Input{NodeName: "lb1", Nodes: labNodes, Config: labConfig(t, nil), Services: services})
	if len(plan.Datapath) != 0 {
		t.Errorf("the kube-proxy datapath programs %v", plan.Datapath)
	}
}

// A projected Service's endpoints are workload nodes outside the LB cluster: the datapath
// tunnels to each address of the VIP's family with its weight; not-ready ones are left out.
func TestDatapathServicesOfProjectedService(t *testing.T) {
	workloadNode := func(addr string, weight uint32, ready bool) Endpoint {
		return Endpoint{Addr: netip.MustParseAddr(addr), Ready: ready, Weight: weight}
	}
	services := []Service{{
		Key: "maglb-wc-wc1/demo-echo-0a1b2c3d", Pool: "gold", IPs: addrs("198.51.100.1", "2001:db8::1"),
		Ports: []Port{{datapath.TCP, 80}},
		Endpoints: []Endpoint{
			workloadNode("172.31.0.32", 1, true), workloadNode("172.31.0.31", 3, true), workloadNode("172.31.0.33", 2, false),
			workloadNode("fd00:31::31", 3, true),
		},
	}}
	want := []datapath.Service{
		{VIP: netip.MustParseAddr("198.51.100.1"), Protocol: datapath.TCP, Port: 80, Backends: []datapath.Backend{
			{Addr: netip.MustParseAddr("172.31.0.31"), Weight: 3}, {Addr: netip.MustParseAddr("172.31.0.32"), Weight: 1}}},
		{VIP: netip.MustParseAddr("2001:db8::1"), Protocol: datapath.TCP, Port: 80, Backends: []datapath.Backend{
			{Addr: netip.MustParseAddr("fd00:31::31"), Weight: 3}}},
	}
	plan := Decide(Input{NodeName: "lb1", Nodes: labNodes, Config: labConfig(t, nil), Services: services, Datapath: EBPF})
	if diff := cmp.Diff(want, plan.Datapath, equateAddrs); diff != "" {
		t.Errorf("datapath (-want +got):\n%s", diff)
	}
	if st := plan.Services[services[0].Key]; len(st.BGPPeers) == 0 {
		t.Errorf("the projected Service is not announced: %+v", st)
	}
}

// TestDatapathFailed: the datapath's verdict is an input. A service with a VIP the datapath
// cannot program is neither announced nor programmed, with the reason; the others are.
func TestDatapathFailed(t *testing.T) {
	full := errors.New("no free id")
	services := []Service{
		svc("default/bad", "default", "192.0.2.1", "2001:db8::1"),
		svc("default/good", "default", "192.0.2.2"),
		svc("default/l2", "l2", "203.0.113.2"), // lb1 answers for it
	}
	all := []string{"192.0.2.1/32", "192.0.2.2/32", "2001:db8::/120", "2001:db8::1/128"}
	for _, tc := range []struct {
		name       string
		failed     map[netip.Addr]error
		wantRoutes []string
		wantL2     []string
		withdrawn  []string
	}{
		{"none", nil, all, []string{"203.0.113.2"}, nil},
		{"one of a dual-stack service's VIPs", map[netip.Addr]error{netip.MustParseAddr("2001:db8::1"): full},
			[]string{"192.0.2.2/32"}, []string{"203.0.113.2"}, []string{"default/bad"}},
		{"an L2 VIP", map[netip.Addr]error{netip.MustParseAddr("203.0.113.2"): full}, all, nil, []string{"default/l2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := Decide(Input{NodeName: "lb1", Nodes: labNodes, Config: labConfig(t, nil), Services: services, Datapath: EBPF, DatapathFailed: tc.failed})
			var routes []string
			for _, r := range plan.Routes {
				routes = append(routes, r.Prefix.String())
			}
			routes = slices.Compact(routes)
			if !slices.Equal(routes, tc.wantRoutes) {
				t.Errorf("routes %v, want %v", routes, tc.wantRoutes)
			}
			var l2 []string
			for ip := range plan.L2 {
				l2 = append(l2, ip.String())
			}
			if !slices.Equal(l2, tc.wantL2) {
				t.Errorf("ARP/NDP for %v, want %v", l2, tc.wantL2)
			}
			for _, s := range plan.Datapath {
				if tc.failed[s.VIP] != nil {
					t.Errorf("the failed VIP %s is programmed", s.VIP)
				}
			}
			for key, state := range plan.Services {
				withdrawn := slices.Contains(tc.withdrawn, key)
				if got := state.BGPReason == ReasonDatapathFailed && state.L2Reason == ReasonDatapathFailed && errors.Is(state.DatapathError, full); got != withdrawn {
					t.Errorf("%s: state %+v, withdrawn for the datapath %v, want %v", key, state, got, withdrawn)
				}
			}
		})
	}
}

// Only an L2 advertisement makes the decisions depend on which speakers live.
func TestElectsL2(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*config.ClusterResources)
		want   bool
	}{
		{"an L2 advertisement", nil, true},
		{"BGP only", func(res *config.ClusterResources) { res.L2Advs = nil }, false},
	} {
		if got := ElectsL2(labConfig(t, tc.mutate)); got != tc.want {
			t.Errorf("%s: ElectsL2 = %v, want %v", tc.name, got, tc.want)
		}
	}
}
