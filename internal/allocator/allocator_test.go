// SPDX-License-Identifier: Apache-2.0

package allocator

import (
	"github.com/maglb/maglb/internal/lbservice"

	"math"
	"math/rand"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

func req(key string, opts ...func(*Request)) *Request {
	r := &Request{Key: key, Namespace: "default", Family: IPv4, Ports: []Port{{"TCP", 80}}}
	for _, o := range opts {
		o(r)
	}
	return r
}

func withKey(sharing, backend string) func(*Request) {
	return func(r *Request) { r.SharingKey, r.BackendKey = sharing, backend }
}

func withPorts(ps ...Port) func(*Request) {
	return func(r *Request) { r.Ports = ps }
}

func withFamily(f Family, p corev1.IPFamilyPolicy) func(*Request) {
	return func(r *Request) { r.Family, r.Policy = f, p }
}

func TestAllocatorOperations(t *testing.T) {
	a := New()
	a.SetPools(buildPools(t, nil,
		pool("p1", []string{"192.168.10.0/30", "fd00::/126"}),
		pool("buggy", []string{"192.168.11.0/24"}, avoidBuggy, manual),
	))
	type op struct {
		desc    string
		do      func() ([]netip.Addr, error)
		want    []string
		wantErr string
	}
	assign := func(r *Request, ips ...string) func() ([]netip.Addr, error) {
		return func() ([]netip.Addr, error) { return addrs(ips...), a.Assign(r, addrs(ips...)) }
	}
	for _, o := range []op{
		{desc: "assign", do: assign(req("s1"), "192.168.10.1"), want: []string{"192.168.10.1"}},
		{desc: "assign again", do: assign(req("s1"), "192.168.10.1"), want: []string{"192.168.10.1"}},
		{desc: "taken", do: assign(req("s2"), "192.168.10.1"), wantErr: `can't change sharing key for "s2", address also in use by s1`},
		{desc: "outside the pools", do: assign(req("s2"), "10.0.0.1"), wantErr: `["10.0.0.1"] is not allowed in config`},
		{desc: "nothing", do: assign(req("s2")), wantErr: `[] is not allowed in config`},
		{desc: "two of a family", do: assign(req("s2"), "192.168.10.2", "192.168.10.3"), wantErr: `"192.168.10.2" "192.168.10.3" has the same family`},
		{desc: "three", do: assign(req("s2"), "192.168.10.2", "fd00::2", "192.168.10.3"), wantErr: `more than two addresses ["192.168.10.2" "fd00::2" "192.168.10.3"]`},
		{desc: "two pools", do: assign(req("s2"), "192.168.10.2", "192.168.11.2"), wantErr: `["192.168.10.2" "192.168.11.2"] is not allowed in config`},
		{desc: "buggy", do: assign(req("s2"), "192.168.11.255"), wantErr: `["192.168.11.255"] is not allowed in config`},
		{desc: "allocate: lowest free", do: func() ([]netip.Addr, error) { return a.Allocate(req("s2")) }, want: []string{"192.168.10.0"}},
		{desc: "allocate: skips the taken one", do: func() ([]netip.Addr, error) { return a.Allocate(req("s3")) }, want: []string{"192.168.10.2"}},
		{desc: "allocate: kept", do: func() ([]netip.Addr, error) { return a.Allocate(req("s3")) }, want: []string{"192.168.10.2"}},
		{desc: "allocate dual", do: func() ([]netip.Addr, error) {
			return a.Allocate(req("s4", withFamily(DualStack, corev1.IPFamilyPolicyRequireDualStack)))
		}, want: []string{"192.168.10.3", "fd00::"}},
		{desc: "pool exhausted for IPv4", do: func() ([]netip.Addr, error) { return a.Allocate(req("s5")) }, wantErr: "no available IPs"},
		{desc: "IPv6 still there", do: func() ([]netip.Addr, error) { return a.Allocate(req("s5", withFamily(IPv6, ""))) }, want: []string{"fd00::1"}},
		{desc: "manual pool by name", do: func() ([]netip.Addr, error) { return a.AllocateFromPool(req("s6"), "buggy") }, want: []string{"192.168.11.1"}},
		{desc: "by name: kept", do: func() ([]netip.Addr, error) { return a.AllocateFromPool(req("s6"), "buggy") }, want: []string{"192.168.11.1"}},
		{desc: "by name: held addresses of another family", do: func() ([]netip.Addr, error) {
			return a.AllocateFromPool(req("s6", withFamily(IPv6, "")), "buggy")
		}, wantErr: "IP for wrong family assigned alloc ipv4 service family ipv6"},
		{desc: "unknown pool", do: func() ([]netip.Addr, error) { return a.AllocateFromPool(req("s7"), "nope") }, wantErr: `unknown pool "nope"`},
		{desc: "pool with no IPv4 left", do: func() ([]netip.Addr, error) { return a.AllocateFromPool(req("s7"), "p1") }, wantErr: `["<nil>"] is not allowed in config`},
		{desc: "dual from a pool with only IPv6 left", do: func() ([]netip.Addr, error) {
			return a.AllocateFromPool(req("s7", withFamily(DualStack, corev1.IPFamilyPolicyRequireDualStack)), "p1")
		}, wantErr: "no available IPs in pool p1 for dual IPFamily"},
		{desc: "additional family", do: func() ([]netip.Addr, error) {
			ip, err := a.AllocateAdditionalFamily(req("s3"), netip.MustParseAddr("192.168.10.2"), "p1")
			return []netip.Addr{ip}, err
		}, want: []string{"fd00::2"}},
		{desc: "additional family from an unknown pool", do: func() ([]netip.Addr, error) {
			_, err := a.AllocateAdditionalFamily(req("s3"), netip.MustParseAddr("192.168.10.2"), "nope")
			return nil, err
		}, wantErr: `unknown pool "nope"`},
	} {
		got, err := o.do()
		if o.wantErr != "" {
			if err == nil || err.Error() != o.wantErr {
				t.Errorf("%s: error %v, want %q", o.desc, err, o.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", o.desc, err)
			continue
		}
		if diff := cmp.Diff(o.want, texts(got)); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", o.desc, diff)
		}
	}
	if got := texts(a.IPs("s3")); !cmp.Equal(got, []string{"192.168.10.2", "fd00::2"}) {
		t.Errorf("IPs(s3) = %v", got)
	}
	if a.Pool("s6") != "buggy" || a.Pool("nope") != "" {
		t.Errorf("Pool: %q %q", a.Pool("s6"), a.Pool("nope"))
	}
	if p := a.PoolForIPs(addrs("192.168.11.0")); p != nil {
		t.Errorf("PoolForIPs of a buggy address: %s", p.Name)
	}
	if !a.Release("s1") || a.Release("s1") {
		t.Error("Release must report the first release only")
	}
	if got, err := a.Allocate(req("s8")); err != nil || !cmp.Equal(texts(got), []string{"192.168.10.1"}) {
		t.Errorf("after release: %v %v", got, err)
	}
}

func TestSharingRules(t *testing.T) {
	a := New()
	a.SetPools(buildPools(t, nil, v4Pool))
	ip := addrs("192.168.10.0")
	steps := []struct {
		desc    string
		r       *Request
		wantErr string
	}{
		{"first", req("s1", withKey("k", "")), ""},
		{"same key, other port", req("s2", withKey("k", ""), withPorts(Port{"TCP", 443})), ""},
		{"same port", req("s3", withKey("k", "")), `port TCP/80 is already in use on "192.168.10.0"`},
		{"same port, other protocol", req("s3", withKey("k", ""), withPorts(Port{"UDP", 80})), ""},
		{"other key", req("s4", withKey("j", ""), withPorts(Port{"TCP", 1})), `can't change sharing key for "s4", address also in use by s1,s2,s3`},
		{"no key", req("s4", withPorts(Port{"TCP", 1})), `can't change sharing key for "s4", address also in use by s1,s2,s3`},
		{"other backend", req("s4", withKey("k", "app=x"), withPorts(Port{"TCP", 1})), `can't change sharing key for "s4", address also in use by s1,s2,s3`},
		{"a user changes its ports", req("s2", withKey("k", ""), withPorts(Port{"TCP", 444})), ""},
		{"a user cannot change its key", req("s2", withKey("j", ""), withPorts(Port{"TCP", 444})), `can't change sharing key for "s2", address also in use by s1,s3`},
	}
	for _, s := range steps {
		err := a.Assign(s.r, ip)
		if (err == nil) != (s.wantErr == "") || (err != nil && err.Error() != s.wantErr) {
			t.Errorf("%s: error %v, want %q", s.desc, err, s.wantErr)
		}
	}
	// The lowest address a service can use, shared or free.
	got, err := a.Allocate(req("s5", withKey("k", ""), withPorts(Port{"TCP", 8080})))
	if err != nil || !cmp.Equal(texts(got), []string{"192.168.10.0"}) {
		t.Errorf("shared allocation: %v %v", got, err)
	}
	got, err = a.Allocate(req("s6", withKey("k", ""), withPorts(Port{"TCP", 443})))
	if err != nil || !cmp.Equal(texts(got), []string{"192.168.10.0"}) {
		t.Errorf("shared allocation after the port change: %v %v", got, err)
	}
	got, err = a.Allocate(req("s7", withKey("k", "")))
	if err != nil || !cmp.Equal(texts(got), []string{"192.168.10.1"}) {
		t.Errorf("allocation with a port clash: %v %v", got, err)
	}
}

func TestCounters(t *testing.T) {
	a := New()
	a.SetPools(buildPools(t, nil,
		pool("p", []string{"192.168.10.0/24", "fd00::/120"}),
		pool("buggy", []string{"192.168.20.0/23", "192.168.30.255-192.168.31.2"}, avoidBuggy),
		pool("huge", []string{"fd01::/64", "192.168.40.0/30"}, manual),
	))
	if got := a.TakeChangedPools(); !cmp.Equal(got, []string{"buggy", "huge", "p"}) {
		t.Errorf("changed after SetPools: %v", got)
	}
	want := map[string]PoolCounters{
		"p": {AvailableIPv4: 256, AvailableIPv6: 256},
		// The /23 loses its two .0 and two .255. The range becomes 192.168.30.255/32,
		// 192.168.31.0/31 and 192.168.31.2/32; like MetalLB, a /32 on a buggy address
		// is subtracted twice (-1), the /31 counts 1 and the last /32 counts 1.
		"buggy": {AvailableIPv4: 512 - 4 + 1},
		"huge":  {AvailableIPv4: 4, AvailableIPv6: math.MaxInt64},
		"nope":  {},
	}
	for name, w := range want {
		if diff := cmp.Diff(w, a.Counters(name)); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", name, diff)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Assign(req("s1", withKey("k", "")), addrs("192.168.10.1", "fd00::1")))
	must(a.Assign(req("s2", withKey("k", ""), withPorts(Port{"TCP", 443})), addrs("192.168.10.1")))
	must(a.Assign(req("s3"), addrs("192.168.10.2")))
	if got := a.TakeChangedPools(); !cmp.Equal(got, []string{"p"}) {
		t.Errorf("changed after assignments: %v", got)
	}
	if diff := cmp.Diff(PoolCounters{AssignedIPv4: 2, AssignedIPv6: 1, AvailableIPv4: 254, AvailableIPv6: 255, ServicesAllocated: 3}, a.Counters("p")); diff != "" {
		t.Errorf("after assignments: (-want +got)\n%s", diff)
	}
	a.Release("s1")
	if diff := cmp.Diff(PoolCounters{AssignedIPv4: 2, AssignedIPv6: 0, AvailableIPv4: 254, AvailableIPv6: 256, ServicesAllocated: 2}, a.Counters("p")); diff != "" {
		t.Errorf("after a release: (-want +got)\n%s", diff)
	}
	// Pool p goes away: its services are released and it is reported once more.
	a.TakeChangedPools()
	a.SetPools(buildPools(t, nil, pool("huge", []string{"fd01::/64"}, manual)))
	if got := a.TakeChangedPools(); !cmp.Equal(got, []string{"buggy", "huge", "p"}) {
		t.Errorf("changed after removing pools: %v", got)
	}
	if a.Pool("s2") != "" || a.Pool("s3") != "" {
		t.Error("services of a removed pool must be released")
	}
	if a.TakeChangedPools() != nil {
		t.Error("changes must be forgotten once taken")
	}
}

func TestMetrics(t *testing.T) {
	a := New()
	a.SetPools(buildPools(t, nil, pool("metrics-p", []string{"192.168.50.0/30", "fd00:50::/126"}, avoidBuggy)))
	if err := a.Assign(req("m1"), addrs("192.168.50.1")); err != nil {
		t.Fatal(err)
	}
	if err := a.Assign(req("m2", withKey("k", "")), addrs("192.168.50.2", "fd00:50::1")); err != nil {
		t.Fatal(err)
	}
	if err := a.Assign(req("m3", withKey("k", ""), withPorts(Port{"UDP", 53})), addrs("fd00:50::1")); err != nil {
		t.Fatal(err)
	}
	gauges := map[string]*prometheus.GaugeVec{
		"addresses_total": addressesTotal, "ipv4_addresses_total": ipv4AddressesTotal, "ipv6_addresses_total": ipv6AddressesTotal,
		"addresses_in_use_total": addressesInUse, "ipv4_addresses_in_use_total": ipv4AddressesInUse, "ipv6_addresses_in_use_total": ipv6AddressesInUse,
		"services_allocated_total": servicesAllocated,
	}
	want := map[string]float64{
		// 192.168.50.0/30 without .0: 3 addresses; fd00:50::/126: 4.
		"addresses_total": 7, "ipv4_addresses_total": 3, "ipv6_addresses_total": 4,
		"addresses_in_use_total": 3, "ipv4_addresses_in_use_total": 2, "ipv6_addresses_in_use_total": 1,
		"services_allocated_total": 3,
	}
	for name, v := range want {
		if got := gaugeValue(t, gauges[name].WithLabelValues("metrics-p")); got != v {
			t.Errorf("metallb_allocator_%s{pool=\"metrics-p\"} = %v, want %v", name, got, v)
		}
	}
	// The registry serves them under MetalLB's names.
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, f := range families {
		served[f.GetName()] = true
	}
	for name := range want {
		if !served["metallb_allocator_"+name] {
			t.Errorf("metallb_allocator_%s is not in the controller-runtime registry", name)
		}
	}
	a.SetPools(buildPools(t, nil))
	for name, g := range gauges {
		if hasSeries(g, "metrics-p") {
			t.Errorf("%s: series left after the pool went away", name)
		}
	}
}

func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

func hasSeries(c prometheus.Collector, pool string) bool {
	ch := make(chan prometheus.Metric, 1024)
	c.Collect(ch)
	close(ch)
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err == nil {
			for _, l := range d.GetLabel() {
				if l.GetName() == "pool" && l.GetValue() == pool {
					return true
				}
			}
		}
	}
	return false
}

// naiveFirstUsable walks the prefix address by address, as the definition says.
func naiveFirstUsable(a *Allocator, c netip.Prefix, avoid bool, svc string, ports []Port, key shareKey) netip.Addr {
	for ip := c.Addr(); ip.IsValid() && c.Contains(ip); ip = ip.Next() {
		if avoid && confusesBuggyFirmware(ip) {
			continue
		}
		if a.checkSharing(svc, ip, ports, key) == nil {
			return ip
		}
	}
	return netip.Addr{}
}

func TestFirstUsableMatchesAddressWalk(t *testing.T) {
	prefixes := []netip.Prefix{netip.MustParsePrefix("192.168.10.0/25"), netip.MustParsePrefix("192.168.10.128/26"), netip.MustParsePrefix("fd00::/121")}
	crs := []maglbv1beta1.IPAddressPool{pool("p", []string{"192.168.10.0/25", "192.168.10.128/26", "fd00::/121"})}
	for seed := int64(0); seed < 20; seed++ {
		r := rand.New(rand.NewSource(seed))
		a := New()
		a.SetPools(buildPools(t, nil, crs...))
		randomRequest := func() *Request {
			rq := req("s"+string(rune('a'+r.Intn(40))), withPorts(Port{"TCP", 80 + r.Intn(3)}))
			switch r.Intn(4) {
			case 0:
				rq.SharingKey = "k1"
			case 1:
				rq.SharingKey, rq.BackendKey = "k1", "app=x"
			case 2:
				rq.SharingKey = "k2"
			}
			return rq
		}
		for i := 0; i < 3000; i++ {
			rq := randomRequest()
			switch r.Intn(5) {
			case 0:
				a.Release(rq.Key)
			case 1:
				c := prefixes[r.Intn(len(prefixes))]
				ip := c.Addr()
				for n := r.Intn(1 << (c.Addr().BitLen() - c.Bits())); n > 0; n-- {
					ip = ip.Next()
				}
				_ = a.Assign(rq, []netip.Addr{ip})
			default:
				if r.Intn(2) == 0 {
					_, _ = a.Allocate(rq)
				}
			}
			probe := randomRequest()
			key := shareKey{probe.SharingKey, probe.BackendKey}
			for _, c := range prefixes {
				for _, avoid := range []bool{false, true} {
					want := naiveFirstUsable(a, c, avoid, probe.Key, probe.Ports, key)
					if got := a.firstUsable(c, avoid, probe.Key, probe.Ports, key); got != want {
						t.Fatalf("seed %d step %d %s avoid=%v %+v: got %v, want %v", seed, i, c, avoid, probe, got, want)
					}
				}
			}
		}
	}
}

func TestSpanSet(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	base := netip.MustParseAddr("10.0.0.250")
	var s spanSet
	model := map[netip.Addr]bool{}
	at := func(n int) netip.Addr {
		ip := base
		for ; n > 0; n-- {
			ip = ip.Next()
		}
		return ip
	}
	for i := 0; i < 20000; i++ {
		ip := at(r.Intn(64))
		if r.Intn(2) == 0 {
			s.add(ip)
			model[ip] = true
		} else {
			s.remove(ip)
			delete(model, ip)
		}
		for j := 1; j < len(s.spans); j++ {
			if s.spans[j-1].hi.Next().Compare(s.spans[j].lo) >= 0 {
				t.Fatalf("spans not disjoint and separated: %v", s.spans)
			}
		}
		from := at(r.Intn(64))
		want := from
		for model[want] {
			want = want.Next()
		}
		if got := s.firstAbsent(from); got != want {
			t.Fatalf("firstAbsent(%v) = %v, want %v (spans %v)", from, got, want, s.spans)
		}
	}
	var top spanSet
	top.add(netip.MustParseAddr("255.255.255.255"))
	if got := top.firstAbsent(netip.MustParseAddr("255.255.255.255")); got.IsValid() {
		t.Errorf("past the last address: %v", got)
	}
}

func TestServiceKeys(t *testing.T) {
	svc := service("a", inNamespace("ns"), ports("TCP/80", "UDP/53"), local(map[string]string{"b": "2", "a": "1"}),
		annotated(lbservice.AnnotationAllowSharedIP, "new", lbservice.LegacyAnnotationAllowSharedIP, "old"),
		dualStack, familyPolicy(corev1.IPFamilyPolicyPreferDualStack), ipFamilies(corev1.IPv6Protocol, corev1.IPv4Protocol))
	got := RequestFor(svc, map[string]string{"env": "prod"})
	want := Request{
		Key: "ns/a", Namespace: "ns", NamespaceLabels: map[string]string{"env": "prod"},
		Family: DualStack, Policy: corev1.IPFamilyPolicyPreferDualStack, IPv6First: true,
		Ports:      []Port{{"TCP", 80}, {"UDP", 53}},
		SharingKey: "new", BackendKey: "a=1,b=2",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("RequestFor: (-want +got)\n%s", diff)
	}
	legacy := service("a", annotated(lbservice.LegacyAnnotationAllowSharedIP, "old"))
	if k := lbservice.SharingKey(legacy); k != "old" {
		t.Errorf("legacy sharing key: %q", k)
	}
	if k := BackendKey(service("a")); k != "" {
		t.Errorf("Cluster policy backend key: %q", k)
	}
	if f, err := ServiceFamily(service("a", clusterIPs("10.0.0.1", "10.0.0.2"))); err == nil || f != UnknownFamily {
		t.Errorf("two IPv4 cluster IPs: %v %v", f, err)
	}
	if p := (Port{"SCTP", 9}).String(); p != "SCTP/9" {
		t.Errorf("Port.String: %q", p)
	}
}
