// SPDX-License-Identifier: Apache-2.0

package reflector

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/bgp"
	"github.com/maglb/maglb/internal/config"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

const ns = "metallb-system"

func meta(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: ns} }

// The LB nodes' next hops: lb1..lb3 in shard gold, lb4 and lb5 in shard silver.
var (
	lb1, lb2, lb3 = addr("10.0.0.1"), addr("10.0.0.2"), addr("10.0.0.3")
	lb4, lb5      = addr("10.0.0.4"), addr("10.0.0.5")
	lb1v6, lb2v6  = addr("fd00::1"), addr("fd00::2")
	tor           = config.Community{Global: 64512<<16 | 100}
)

// testConfig: pools gold (shard gold, v4 and v6), silver (shard silver), plain (no
// shard), each with an advertisement to every peer; gold's carries a community and a
// local preference; silver aggregates to /26.
func testConfig(t testing.TB, mutate func(*config.ClusterResources)) *config.Config {
	t.Helper()
	pool := func(name, shard string, addrs ...string) maglbv1beta1.IPAddressPool {
		p := maglbv1beta1.IPAddressPool{ObjectMeta: meta(name)}
		p.Spec.Addresses, p.Spec.Shard = addrs, shard
		return p
	}
	res := config.ClusterResources{
		Pools: []maglbv1beta1.IPAddressPool{
			pool("gold", "gold", "192.0.2.0/24", "2001:db8::/64"),
			pool("silver", "silver", "198.51.100.0/24"),
			pool("plain", "", "203.0.113.0/25"),
		},
		Peers: []metallbv1beta2.BGPPeer{
			{ObjectMeta: meta("tor"), Spec: metallbv1beta2.BGPPeerSpec{MyASN: 64512, ASN: 64512, Address: "10.0.0.254"}},
		},
		BGPAdvs: []metallbv1beta1.BGPAdvertisement{
			{ObjectMeta: meta("gold"), Spec: metallbv1beta1.BGPAdvertisementSpec{IPAddressPools: []string{"gold"}, Communities: []string{"64512:100"}, LocalPref: 200}},
			{ObjectMeta: meta("silver"), Spec: metallbv1beta1.BGPAdvertisementSpec{IPAddressPools: []string{"silver"}, AggregationLength: ptr[int32](26)}},
			{ObjectMeta: meta("plain"), Spec: metallbv1beta1.BGPAdvertisementSpec{IPAddressPools: []string{"plain"}}},
		},
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

func TestAggregate(t *testing.T) {
	gold := func(prefix string, nh netip.Addr) bgp.Path {
		return bgp.Path{NextHop: nh, Route: announce.Route{Prefix: netip.MustParsePrefix(prefix), Communities: []config.Community{tor}, LocalPref: 200, Peers: []string{"tor"}}}
	}
	plain := func(prefix string, nh netip.Addr) bgp.Path {
		return bgp.Path{NextHop: nh, Route: announce.Route{Prefix: netip.MustParsePrefix(prefix), Peers: []string{"tor"}}}
	}
	for _, tc := range []struct {
		name     string
		mutate   func(*config.ClusterResources)
		services []announce.Service
		received map[netip.Addr][]string
		upstream []string // default: tor
		want     []bgp.Path
	}{{
		name:     "one path per node announcing a VIP of the shard, to the pool's prefix, with the advertisement's attributes",
		services: []announce.Service{svc("a", "gold", "192.0.2.10"), svc("b", "gold", "192.0.2.11")},
		received: map[netip.Addr][]string{lb1: {"192.0.2.10/32", "192.0.2.11/32"}, lb2: {"192.0.2.10/32", "192.0.2.11/32"}},
		want:     []bgp.Path{gold("192.0.2.0/24", lb1), gold("192.0.2.0/24", lb2)},
	}, {
		name:     "a node announcing nothing has no path",
		services: []announce.Service{svc("a", "gold", "192.0.2.10")},
		received: map[netip.Addr][]string{lb1: {"192.0.2.10/32"}, lb2: {}, lb3: {"198.51.100.1/32"}},
		want:     []bgp.Path{gold("192.0.2.0/24", lb1)},
	}, {
		name:     "no announcing node: nothing",
		services: []announce.Service{svc("a", "gold", "192.0.2.10")},
		received: map[netip.Addr][]string{lb1: {"192.0.2.99/32"}},
	}, {
		name:     "the advertisement's aggregation length, one aggregate per range in use",
		services: []announce.Service{svc("a", "silver", "198.51.100.1"), svc("b", "silver", "198.51.100.70")},
		received: map[netip.Addr][]string{lb4: {"198.51.100.1/32", "198.51.100.70/32"}, lb5: {"198.51.100.1/32", "198.51.100.70/32"}},
		want: []bgp.Path{
			plain("198.51.100.0/26", lb4), plain("198.51.100.0/26", lb5),
			plain("198.51.100.64/26", lb4), plain("198.51.100.64/26", lb5),
		},
	}, {
		name: "shards apart: each aggregate has its own nodes; unsharded pools too",
		services: []announce.Service{svc("a", "gold", "192.0.2.10"), svc("b", "silver", "198.51.100.1"),
			svc("c", "plain", "203.0.113.5")},
		received: map[netip.Addr][]string{
			lb1: {"192.0.2.10/32", "203.0.113.5/32"}, lb2: {"192.0.2.10/32", "203.0.113.5/32"},
			lb4: {"198.51.100.1/32", "203.0.113.5/32"},
		},
		want: []bgp.Path{
			gold("192.0.2.0/24", lb1), gold("192.0.2.0/24", lb2),
			plain("198.51.100.0/26", lb4),
			plain("203.0.113.0/25", lb1), plain("203.0.113.0/25", lb2), plain("203.0.113.0/25", lb4),
		},
	}, {
		name: "ETP=Local served by fewer nodes keeps its host routes, from its own nodes",
		services: []announce.Service{svc("a", "gold", "192.0.2.10"), svc("b", "gold", "192.0.2.11"),
			local(svc("l", "gold", "192.0.2.20"))},
		received: map[netip.Addr][]string{
			lb1: {"192.0.2.10/32", "192.0.2.11/32", "192.0.2.20/32"},
			lb2: {"192.0.2.10/32", "192.0.2.11/32"},
			lb3: {"192.0.2.10/32", "192.0.2.11/32"},
		},
		want: []bgp.Path{
			gold("192.0.2.0/24", lb1), gold("192.0.2.0/24", lb2), gold("192.0.2.0/24", lb3),
			gold("192.0.2.20/32", lb1),
		},
	}, {
		name:     "ETP=Local served by the aggregate's nodes is aggregated",
		services: []announce.Service{svc("a", "gold", "192.0.2.10"), local(svc("l", "gold", "192.0.2.20"))},
		received: map[netip.Addr][]string{lb1: {"192.0.2.10/32", "192.0.2.20/32"}, lb2: {"192.0.2.10/32", "192.0.2.20/32"}},
		want:     []bgp.Path{gold("192.0.2.0/24", lb1), gold("192.0.2.0/24", lb2)},
	}, {
		name:     "only ETP=Local VIPs on different nodes: the commonest set aggregates, the other keeps its host routes",
		services: []announce.Service{local(svc("a", "gold", "192.0.2.10")), local(svc("b", "gold", "192.0.2.11")), local(svc("c", "gold", "192.0.2.12"))},
		received: map[netip.Addr][]string{lb1: {"192.0.2.10/32", "192.0.2.11/32"}, lb2: {"192.0.2.10/32", "192.0.2.11/32", "192.0.2.12/32"}},
		want:     []bgp.Path{gold("192.0.2.0/24", lb1), gold("192.0.2.0/24", lb2), gold("192.0.2.12/32", lb2)},
	}, {
		name:     "a Cluster VIP a node announces before the others (syncing) keeps host routes",
		services: []announce.Service{svc("a", "gold", "192.0.2.10"), svc("b", "gold", "192.0.2.11"), svc("c", "gold", "192.0.2.12")},
		received: map[netip.Addr][]string{lb1: {"192.0.2.10/32", "192.0.2.11/32", "192.0.2.12/32"}, lb2: {"192.0.2.10/32", "192.0.2.11/32"}},
		want:     []bgp.Path{gold("192.0.2.0/24", lb1), gold("192.0.2.0/24", lb2), gold("192.0.2.12/32", lb1)},
	}, {
		name:     "IPv6: the v6 next hops, the v6 pool prefix",
		services: []announce.Service{{Key: "ns/d", Pool: "gold", IPs: []netip.Addr{addr("192.0.2.10"), addr("2001:db8::10")}}},
		received: map[netip.Addr][]string{
			lb1: {"192.0.2.10/32"}, lb2: {"192.0.2.10/32"},
			lb1v6: {"2001:db8::10/128"}, lb2v6: {"2001:db8::10/128"},
		},
		want: []bgp.Path{
			gold("192.0.2.0/24", lb1), gold("192.0.2.0/24", lb2),
			gold("2001:db8::/64", lb1v6), gold("2001:db8::/64", lb2v6),
		},
	}, {
		name:     "a node announcing an aggregate serves every VIP inside",
		services: []announce.Service{svc("a", "gold", "192.0.2.10")},
		received: map[netip.Addr][]string{lb1: {"192.0.2.0/24"}, lb2: {"192.0.2.10/32"}},
		want:     []bgp.Path{gold("192.0.2.0/24", lb1), gold("192.0.2.0/24", lb2)},
	}, {
		name: "an advertisement naming other peers (the speakers' sessions with the reflectors) does not reach the ToR",
		mutate: func(res *config.ClusterResources) {
			res.BGPAdvs[0].Spec.Peers = []string{"reflector-a"}
		},
		services: []announce.Service{svc("a", "gold", "192.0.2.10")},
		received: map[netip.Addr][]string{lb1: {"192.0.2.10/32"}},
	}, {
		name: "advertisements naming upstream peers: each peer gets its own attributes",
		mutate: func(res *config.ClusterResources) {
			res.BGPAdvs = append(res.BGPAdvs, metallbv1beta1.BGPAdvertisement{ObjectMeta: meta("gold-b"),
				Spec: metallbv1beta1.BGPAdvertisementSpec{IPAddressPools: []string{"gold"}, Peers: []string{"tor-b"}, Communities: []string{"64512:7"}}})
		},
		services: []announce.Service{svc("a", "gold", "192.0.2.10")},
		received: map[netip.Addr][]string{lb1: {"192.0.2.10/32"}},
		upstream: []string{"tor", "tor-b"},
		want: []bgp.Path{
			{NextHop: lb1, Route: announce.Route{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Communities: []config.Community{tor}, LocalPref: 200, Peers: []string{"tor"}}},
			{NextHop: lb1, Route: announce.Route{Prefix: netip.MustParsePrefix("192.0.2.0/24"),
				Communities: []config.Community{{Global: 64512<<16 | 7}, tor}, LocalPref: 200, Peers: []string{"tor-b"}}},
		},
	}, {
		name: "two advertisements of a pool: an aggregate each, a host route once",
		mutate: func(res *config.ClusterResources) {
			res.BGPAdvs = append(res.BGPAdvs, metallbv1beta1.BGPAdvertisement{ObjectMeta: meta("gold-28"),
				Spec: metallbv1beta1.BGPAdvertisementSpec{IPAddressPools: []string{"gold"}, AggregationLength: ptr[int32](28), Communities: []string{"64512:100"}, LocalPref: 200}})
		},
		services: []announce.Service{svc("a", "gold", "192.0.2.10"), local(svc("l", "gold", "192.0.2.11"))},
		received: map[netip.Addr][]string{lb1: {"192.0.2.10/32", "192.0.2.11/32"}, lb2: {"192.0.2.10/32"}},
		want: []bgp.Path{
			gold("192.0.2.0/24", lb1), gold("192.0.2.0/24", lb2),
			gold("192.0.2.0/28", lb1), gold("192.0.2.0/28", lb2),
			gold("192.0.2.11/32", lb1),
		},
	}, {
		name:     "a service of an unknown pool, a received route of no service: nothing",
		services: []announce.Service{svc("a", "gone", "100.64.0.1")},
		received: map[netip.Addr][]string{lb1: {"100.64.0.1/32", "192.0.2.50/32"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			received := map[netip.Addr][]netip.Prefix{}
			for nh, prefixes := range tc.received {
				received[nh] = []netip.Prefix{}
				for _, p := range prefixes {
					received[nh] = append(received[nh], netip.MustParsePrefix(p))
				}
			}
			upstream := tc.upstream
			if upstream == nil {
				upstream = []string{"tor"}
			}
			got := Aggregate(Input{Config: testConfig(t, tc.mutate), Services: tc.services, Received: received, Upstream: upstream})
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("paths (-want +got):\n%s", diff)
			}
		})
	}
}

func svc(name, pool string, ips ...string) announce.Service {
	s := announce.Service{Key: ns + "/" + name, Pool: pool}
	for _, ip := range ips {
		s.IPs = append(s.IPs, addr(ip))
	}
	return s
}

func local(s announce.Service) announce.Service {
	s.LocalTraffic = true
	return s
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func ptr[T any](v T) *T { return &v }
