// SPDX-License-Identifier: Apache-2.0

package config

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
)

// everyFeature sets every field of every resource kind.
func everyFeature() ClusterResources {
	return ClusterResources{
		Nodes: []corev1.Node{
			node("node1", map[string]string{"zone": "a", maglbv1beta1.ShardLabelPrefix + "gold": ""}),
			node("node2", map[string]string{"zone": "b"}),
			node("node3", map[string]string{"zone": "a", "rack": "r1"}),
		},
		Namespaces: []corev1.Namespace{
			namespace("ns-a", map[string]string{"team": "a"}),
			namespace("ns-b", map[string]string{"team": "b"}),
		},
		Pools: []maglbv1beta1.IPAddressPool{
			poolWith(pool("gold", "10.0.0.0/24", "10.0.1.7/24"), func(p *maglbv1beta1.IPAddressPool) {
				p.Labels = map[string]string{"tier": "premium"}
				p.Spec.AutoAssign = ptrTo(false)
				p.Spec.AvoidBuggyIPs = true
				p.Spec.Shard = "gold"
				p.Spec.AllocateTo = &metallbv1beta1.ServiceAllocation{
					Priority:           10,
					Namespaces:         []string{"ns-x"},
					NamespaceSelectors: []metav1.LabelSelector{matchLabels("team", "a")},
					ServiceSelectors:   []metav1.LabelSelector{matchLabels("app", "web")},
				}
			}),
			poolWith(pool("v6", "2001:db8::/120", "2001:db8:1::1-2001:db8:1::2"), func(p *maglbv1beta1.IPAddressPool) {
				p.Labels = map[string]string{"family": "v6"}
				p.Spec.AllocateTo = &metallbv1beta1.ServiceAllocation{Priority: 5}
			}),
			pool("plain", "192.168.10.0/28", "192.168.10.17 - 192.168.10.22"),
		},
		Peers: []metallbv1beta2.BGPPeer{
			peer("tor1", metallbv1beta2.BGPPeerSpec{
				MyASN:         64512,
				ASN:           64513,
				LocalASN:      65000,
				Address:       "192.0.2.1",
				SrcAddress:    "192.0.2.10",
				Port:          1179,
				HoldTime:      duration(30 * time.Second),
				KeepaliveTime: duration(5 * time.Second),
				ConnectTime:   duration(10 * time.Second),
				RouterID:      "10.1.1.1",
				NodeSelectors: []metav1.LabelSelector{
					matchLabels("zone", "a"),
					{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("rack", metav1.LabelSelectorOpIn, "r2", "r1")}},
				},
				PasswordSecret:         corev1.SecretReference{Name: "bgp-secret", Namespace: "metallb-system"},
				BFDProfile:             "fast",
				EnableGracefulRestart:  true,
				EBGPMultiHop:           true,
				VRFName:                "red",
				DisableMP:              true,
				DualStackAddressFamily: true,
			}),
			peer("rr", metallbv1beta2.BGPPeerSpec{
				MyASN:      64512,
				DynamicASN: metallbv1beta2.InternalASNMode,
				Address:    "2001:db8::ff",
				Password:   "literal",
			}),
			peer("unnumbered", metallbv1beta2.BGPPeerSpec{
				MyASN:         64512,
				DynamicASN:    metallbv1beta2.ExternalASNMode,
				Interface:     "eth1",
				KeepaliveTime: duration(20 * time.Second),
			}),
		},
		PasswordSecrets: map[string]corev1.Secret{"bgp-secret": basicAuthSecret("bgp-secret", "s3cret")},
		BFDProfiles: []metallbv1beta1.BFDProfile{
			bfdProfile("fast", metallbv1beta1.BFDProfileSpec{
				ReceiveInterval:  ptrTo[uint32](50),
				TransmitInterval: ptrTo[uint32](60),
				DetectMultiplier: ptrTo[uint32](5),
				EchoInterval:     ptrTo[uint32](20),
				EchoMode:         ptrTo(true),
				PassiveMode:      ptrTo(true),
				MinimumTTL:       ptrTo[uint32](200),
			}),
			bfdProfile("defaults", metallbv1beta1.BFDProfileSpec{}),
		},
		Communities: []metallbv1beta1.Community{
			communities("well-known", "no-advertise", "65535:65282", "big", "large:64512:1:2"),
		},
		BGPAdvs: []metallbv1beta1.BGPAdvertisement{
			bgpAdv("gold-agg", metallbv1beta1.BGPAdvertisementSpec{
				IPAddressPools:    []string{"gold"},
				AggregationLength: ptrTo[int32](24),
				LocalPref:         150,
				AsPathPrepend:     2,
				Communities:       []string{"no-advertise", "64512:100", "big"},
				Peers:             []string{"tor1"},
				NodeSelectors:     []metav1.LabelSelector{matchLabels("zone", "a")},
			}),
			bgpAdv("v6-only", metallbv1beta1.BGPAdvertisementSpec{
				IPAddressPoolSelectors: []metav1.LabelSelector{matchLabels("family", "v6")},
				AggregationLengthV6:    ptrTo[int32](128),
				Peers:                  []string{"rr"},
			}),
			bgpAdv("selected-services", metallbv1beta1.BGPAdvertisementSpec{
				ServiceSelectors: []metav1.LabelSelector{matchLabels("app", "db"), matchLabels("app", "cache")},
				Communities:      []string{"large:1:2:3"},
				Peers:            []string{"rr", "unnumbered"},
			}),
		},
		L2Advs: []metallbv1beta1.L2Advertisement{
			l2Adv("l2-all", metallbv1beta1.L2AdvertisementSpec{}),
			l2Adv("l2-gold", metallbv1beta1.L2AdvertisementSpec{
				IPAddressPools:         []string{"gold"},
				IPAddressPoolSelectors: []metav1.LabelSelector{matchLabels("tier", "premium")},
				Interfaces:             []string{"eth0", "eth1"},
				NodeSelectors:          []metav1.LabelSelector{matchLabels("zone", "a")},
				ServiceSelectors:       []metav1.LabelSelector{matchLabels("app", "web")},
				PreferredNodeSelectors: []metallbv1beta1.PreferredNodeSelector{
					{Weight: 50, Preference: matchLabels("rack", "r1")},
					{Weight: 10, Preference: matchLabels("zone", "a")},
				},
			}),
			// Announces exactly like l2-all: pools keep l2-all only.
			l2Adv("l2-same-as-all", metallbv1beta1.L2AdvertisementSpec{}),
		},
	}
}

func TestForEveryFeature(t *testing.T) {
	allNodes := sets.New("node1", "node2", "node3")
	goldAgg := &BGPAdvertisement{
		Name:                "gold-agg",
		AggregationLength:   24,
		AggregationLengthV6: 128,
		LocalPref:           150,
		AsPathPrepend:       2,
		Communities:         []Community{{Large: true, Global: 64512, LocalData1: 1, LocalData2: 2}, mustCommunity("64512:100"), mustCommunity("65535:65282")},
		Peers:               []string{"tor1"},
		Nodes:               sets.New("node1", "node3"),
	}
	v6Only := &BGPAdvertisement{
		Name:                "v6-only",
		AggregationLength:   32,
		AggregationLengthV6: 128,
		Peers:               []string{"rr"},
		Nodes:               allNodes,
	}
	selectedServices := &BGPAdvertisement{
		Name:                "selected-services",
		AggregationLength:   32,
		AggregationLengthV6: 128,
		Communities:         []Community{{Large: true, Global: 1, LocalData1: 2, LocalData2: 3}},
		Peers:               []string{"rr", "unnumbered"},
		Nodes:               allNodes,
		ServiceSelectors:    []labels.Selector{selector("app=cache"), selector("app=db")},
	}
	l2All := &L2Advertisement{Name: "l2-all", Nodes: allNodes}
	l2Gold := &L2Advertisement{
		Name:             "l2-gold",
		Interfaces:       []string{"eth0", "eth1"},
		Nodes:            sets.New("node1", "node3"),
		ServiceSelectors: []labels.Selector{selector("app=web")},
		PreferredNodes:   map[string]int64{"node1": 10, "node3": 60},
	}
	fast := &BFDProfile{
		Name:             "fast",
		ReceiveInterval:  50,
		TransmitInterval: 60,
		DetectMultiplier: 5,
		EchoInterval:     20,
		MinimumTTL:       200,
		EchoMode:         true,
		PassiveMode:      true,
	}
	want := &Config{
		Pools: Pools{
			ByName: map[string]*Pool{
				"gold": {
					Name:          "gold",
					CIDRs:         prefixes("10.0.0.0/24", "10.0.1.0/24"),
					AutoAssign:    false,
					AvoidBuggyIPs: true,
					Shard:         "gold",
					ServiceAllocation: &ServiceAllocation{
						Priority:           10,
						Namespaces:         sets.New("ns-x", "ns-a"),
						NamespaceSelectors: []labels.Selector{selector("team=a")},
						ServiceSelectors:   []labels.Selector{selector("app=web")},
					},
					BGPAdvertisements: []*BGPAdvertisement{goldAgg, selectedServices},
					L2Advertisements:  []*L2Advertisement{l2All, l2Gold},
				},
				"v6": {
					Name:       "v6",
					CIDRs:      prefixes("2001:db8::/120", "2001:db8:1::1/128", "2001:db8:1::2/128"),
					AutoAssign: true,
					ServiceAllocation: &ServiceAllocation{
						Priority:         5,
						Namespaces:       sets.New[string](),
						ServiceSelectors: []labels.Selector{labels.Everything()},
					},
					BGPAdvertisements: []*BGPAdvertisement{v6Only, selectedServices},
					L2Advertisements:  []*L2Advertisement{l2All},
				},
				"plain": {
					Name:              "plain",
					CIDRs:             prefixes("192.168.10.0/28", "192.168.10.17/32", "192.168.10.18/31", "192.168.10.20/31", "192.168.10.22/32"),
					AutoAssign:        true,
					BGPAdvertisements: []*BGPAdvertisement{selectedServices},
					L2Advertisements:  []*L2Advertisement{l2All},
				},
			},
			ByNamespace:       map[string][]string{"ns-a": {"gold"}, "ns-x": {"gold"}},
			ByServiceSelector: []string{"gold", "v6"},
		},
		Peers: map[string]*Peer{
			"tor1": {
				Name:          "tor1",
				MyASN:         64512,
				ASN:           64513,
				LocalASN:      65000,
				Addr:          netip.MustParseAddr("192.0.2.1"),
				SrcAddr:       netip.MustParseAddr("192.0.2.10"),
				Port:          1179,
				HoldTime:      30 * time.Second,
				KeepaliveTime: 5 * time.Second,
				ConnectTime:   10 * time.Second,
				RouterID:      netip.MustParseAddr("10.1.1.1"),
				NodeSelectors: []labels.Selector{selector("rack in (r1,r2)"), selector("zone=a")},
				Password:      "s3cret",
				BFDProfile:    "fast",
				BFD:           fast,

				EnableGracefulRestart:  true,
				EBGPMultiHop:           true,
				VRF:                    "red",
				DualStackAddressFamily: true,
				DisableMP:              true,
			},
			"rr": {
				Name:          "rr",
				MyASN:         64512,
				DynamicASN:    metallbv1beta2.InternalASNMode,
				Addr:          netip.MustParseAddr("2001:db8::ff"),
				Port:          179,
				HoldTime:      90 * time.Second,
				KeepaliveTime: 30 * time.Second,
				NodeSelectors: []labels.Selector{labels.Everything()},
				Password:      "literal",
			},
			"unnumbered": {
				Name:          "unnumbered",
				MyASN:         64512,
				DynamicASN:    metallbv1beta2.ExternalASNMode,
				Interface:     "eth1",
				Port:          179,
				HoldTime:      60 * time.Second,
				KeepaliveTime: 20 * time.Second,
				NodeSelectors: []labels.Selector{labels.Everything()},
			},
		},
		BFDProfiles: map[string]*BFDProfile{
			"fast": fast,
			"defaults": {
				Name:             "defaults",
				ReceiveInterval:  300,
				TransmitInterval: 300,
				DetectMultiplier: 3,
				EchoInterval:     50,
				MinimumTTL:       254,
			},
		},
	}

	got, err := For(everyFeature(), DontValidate)
	if err != nil {
		t.Fatalf("For: %v", err)
	}
	if diff := cmp.Diff(want, got, modelComparison); diff != "" {
		t.Errorf("model mismatch (-want +got):\n%s", diff)
	}
}

func TestForValid(t *testing.T) {
	twoNodes := []corev1.Node{node("node1", map[string]string{"zone": "a"}), node("node2", map[string]string{"zone": "b"})}
	tests := []struct {
		name string
		res  ClusterResources
		// part picks what the case asserts from the model.
		part func(*Config) any
		want any
	}{
		{
			name: "empty resources give an empty model",
			res:  ClusterResources{},
			part: func(c *Config) any { return c },
			want: &Config{Pools: Pools{ByName: map[string]*Pool{}, ByNamespace: map[string][]string{}}, Peers: map[string]*Peer{}, BFDProfiles: map[string]*BFDProfile{}},
		},
		{
			name: "pool defaults: auto-assign, no allocation, no shard",
			res:  ClusterResources{Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.5/24")}},
			part: func(c *Config) any { return c.Pools.ByName["p"] },
			want: &Pool{Name: "p", CIDRs: prefixes("10.0.0.0/24"), AutoAssign: true},
		},
		{
			name: "ranges become covering prefixes",
			res: ClusterResources{Pools: []maglbv1beta1.IPAddressPool{
				pool("p", "40.0.0.0/25", "40.0.0.150-40.0.0.200", "40.0.0.210 - 40.0.0.240", "40.0.0.250 - 40.0.0.250"),
			}},
			part: func(c *Config) any { return c.Pools.ByName["p"].CIDRs },
			want: prefixes(
				"40.0.0.0/25",
				"40.0.0.150/31", "40.0.0.152/29", "40.0.0.160/27", "40.0.0.192/29", "40.0.0.200/32",
				"40.0.0.210/31", "40.0.0.212/30", "40.0.0.216/29", "40.0.0.224/28", "40.0.0.240/32",
				"40.0.0.250/32",
			),
		},
		{
			name: "an IPv6 range and a whole-family range",
			res:  ClusterResources{Pools: []maglbv1beta1.IPAddressPool{pool("p", "2001:db8::fffe-2001:db8::1:1", "0.0.0.0-255.255.255.255")}},
			part: func(c *Config) any { return c.Pools.ByName["p"].CIDRs },
			want: prefixes("2001:db8::fffe/127", "2001:db8::1:0/127", "0.0.0.0/0"),
		},
		{
			name: "IPv4-mapped range ends count as IPv4",
			res:  ClusterResources{Pools: []maglbv1beta1.IPAddressPool{pool("p", "::ffff:10.0.0.0-10.0.0.3")}},
			part: func(c *Config) any { return c.Pools.ByName["p"].CIDRs },
			want: prefixes("10.0.0.0/30"),
		},
		{
			name: "adjacent pools do not overlap",
			res:  ClusterResources{Pools: []maglbv1beta1.IPAddressPool{pool("a", "10.0.0.0/25"), pool("b", "10.0.0.128-10.0.0.255")}},
			part: func(c *Config) any { return c.Pools.ByName["b"].CIDRs },
			want: prefixes("10.0.0.128/25"),
		},
		{
			name: "allocation with namespaces only",
			res: ClusterResources{
				Pools: []maglbv1beta1.IPAddressPool{
					poolWith(pool("a", "10.0.0.0/24"), func(p *maglbv1beta1.IPAddressPool) {
						p.Spec.AllocateTo = &metallbv1beta1.ServiceAllocation{Namespaces: []string{"ns2", "ns1"}}
					}),
					poolWith(pool("b", "10.0.1.0/24"), func(p *maglbv1beta1.IPAddressPool) {
						p.Spec.AllocateTo = &metallbv1beta1.ServiceAllocation{Namespaces: []string{"ns1"}}
					}),
				},
			},
			part: func(c *Config) any { return c.Pools.ByNamespace },
			want: map[string][]string{"ns1": {"a", "b"}, "ns2": {"a"}},
		},
		{
			name: "pools with service selectors are listed sorted",
			res: ClusterResources{
				Pools: []maglbv1beta1.IPAddressPool{
					poolWith(pool("z", "10.0.0.0/24"), func(p *maglbv1beta1.IPAddressPool) {
						p.Spec.AllocateTo = &metallbv1beta1.ServiceAllocation{ServiceSelectors: []metav1.LabelSelector{matchLabels("a", "b")}}
					}),
					poolWith(pool("a", "10.0.1.0/24"), func(p *maglbv1beta1.IPAddressPool) {
						p.Spec.AllocateTo = &metallbv1beta1.ServiceAllocation{Namespaces: []string{"ns"}}
					}),
					poolWith(pool("m", "10.0.2.0/24"), func(p *maglbv1beta1.IPAddressPool) {
						p.Spec.AllocateTo = &metallbv1beta1.ServiceAllocation{Priority: 1}
					}),
				},
			},
			part: func(c *Config) any { return c.Pools.ByServiceSelector },
			want: []string{"m", "z"},
		},
		{
			name: "a 57-character shard still makes a valid node label",
			res: ClusterResources{Pools: []maglbv1beta1.IPAddressPool{
				poolWith(pool("p", "10.0.0.0/24"), func(p *maglbv1beta1.IPAddressPool) {
					p.Spec.Shard = "a23456789012345678901234567890123456789012345678901234567"
				}),
			}},
			part: func(c *Config) any { return c.Pools.ByName["p"].Shard },
			want: "a23456789012345678901234567890123456789012345678901234567",
		},
		{
			name: "hold time alone: keepalive is a third",
			res:  ClusterResources{Peers: []metallbv1beta2.BGPPeer{peer("p", metallbv1beta2.BGPPeerSpec{MyASN: 1, ASN: 2, Address: "1.2.3.4", HoldTime: duration(180 * time.Second)})}},
			part: func(c *Config) any { return []time.Duration{c.Peers["p"].HoldTime, c.Peers["p"].KeepaliveTime} },
			want: []time.Duration{180 * time.Second, 60 * time.Second},
		},
		{
			name: "keepalive alone: hold time is three times it",
			res:  ClusterResources{Peers: []metallbv1beta2.BGPPeer{peer("p", metallbv1beta2.BGPPeerSpec{MyASN: 1, ASN: 2, Address: "1.2.3.4", KeepaliveTime: duration(10 * time.Second)})}},
			part: func(c *Config) any { return []time.Duration{c.Peers["p"].HoldTime, c.Peers["p"].KeepaliveTime} },
			want: []time.Duration{30 * time.Second, 10 * time.Second},
		},
		{
			name: "zero timers turn keepalives off",
			res: ClusterResources{Peers: []metallbv1beta2.BGPPeer{peer("p", metallbv1beta2.BGPPeerSpec{
				MyASN: 1, ASN: 2, Address: "1.2.3.4", HoldTime: duration(0), KeepaliveTime: duration(0),
			})}},
			part: func(c *Config) any { return []time.Duration{c.Peers["p"].HoldTime, c.Peers["p"].KeepaliveTime} },
			want: []time.Duration{0, 0},
		},
		{
			name: "hold time of 3s is the minimum",
			res:  ClusterResources{Peers: []metallbv1beta2.BGPPeer{peer("p", metallbv1beta2.BGPPeerSpec{MyASN: 1, ASN: 2, Address: "1.2.3.4", HoldTime: duration(3 * time.Second)})}},
			part: func(c *Config) any { return c.Peers["p"].HoldTime },
			want: 3 * time.Second,
		},
		{
			name: "eBGP multi-hop on an eBGP peer",
			res:  ClusterResources{Peers: []metallbv1beta2.BGPPeer{peer("p", metallbv1beta2.BGPPeerSpec{MyASN: 1, ASN: 2, Address: "1.2.3.4", EBGPMultiHop: true})}},
			part: func(c *Config) any { return c.Peers["p"].EBGPMultiHop },
			want: true,
		},
		{
			name: "IPv4-mapped peer address counts as IPv4",
			res:  ClusterResources{Peers: []metallbv1beta2.BGPPeer{peer("p", metallbv1beta2.BGPPeerSpec{MyASN: 1, ASN: 2, Address: "::ffff:1.2.3.4"})}},
			part: func(c *Config) any { return c.Peers["p"].Addr },
			want: netip.MustParseAddr("1.2.3.4"),
		},
		{
			name: "two peers with the same session settings are both kept",
			res: ClusterResources{Peers: []metallbv1beta2.BGPPeer{
				peer("p1", metallbv1beta2.BGPPeerSpec{MyASN: 1, ASN: 2, Address: "1.2.3.4"}),
				peer("p2", metallbv1beta2.BGPPeerSpec{MyASN: 1, ASN: 2, Address: "1.2.3.4"}),
			}},
			part: func(c *Config) any { return len(c.Peers) },
			want: 2,
		},
		{
			name: "node selectors: match expression values in any order",
			res: ClusterResources{Peers: []metallbv1beta2.BGPPeer{peer("p", metallbv1beta2.BGPPeerSpec{
				MyASN: 1, ASN: 2, Address: "1.2.3.4",
				NodeSelectors: []metav1.LabelSelector{
					{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("k", metav1.LabelSelectorOpNotIn, "b", "a"), matchExpression("e", metav1.LabelSelectorOpExists)}},
				},
			})}},
			part: func(c *Config) any { return c.Peers["p"].NodeSelectors },
			want: []labels.Selector{selector("e,k notin (a,b)")},
		},
		{
			name: "advertisement without pools or selectors applies to every pool",
			res: ClusterResources{
				Pools:   []maglbv1beta1.IPAddressPool{pool("a", "10.0.0.0/24"), pool("b", "10.0.1.0/24")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{bgpAdv("adv", metallbv1beta1.BGPAdvertisementSpec{})},
			},
			part: func(c *Config) any {
				return []int{len(c.Pools.ByName["a"].BGPAdvertisements), len(c.Pools.ByName["b"].BGPAdvertisements)}
			},
			want: []int{1, 1},
		},
		{
			name: "unknown pool names and unmatched selectors select nothing",
			res: ClusterResources{
				Pools: []maglbv1beta1.IPAddressPool{pool("a", "10.0.0.0/24")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{bgpAdv("adv", metallbv1beta1.BGPAdvertisementSpec{
					IPAddressPools:         []string{"missing"},
					IPAddressPoolSelectors: []metav1.LabelSelector{matchLabels("no", "match")},
				})},
				L2Advs: []metallbv1beta1.L2Advertisement{l2Adv("l2", metallbv1beta1.L2AdvertisementSpec{IPAddressPools: []string{"missing"}})},
			},
			part: func(c *Config) any { return c.Pools.ByName["a"] },
			want: &Pool{Name: "a", CIDRs: prefixes("10.0.0.0/24"), AutoAssign: true},
		},
		{
			name: "advertisement naming a pool and matching it by label applies once",
			res: ClusterResources{
				Pools: []maglbv1beta1.IPAddressPool{poolWith(pool("a", "10.0.0.0/24"), func(p *maglbv1beta1.IPAddressPool) { p.Labels = map[string]string{"x": "y"} })},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{bgpAdv("adv", metallbv1beta1.BGPAdvertisementSpec{
					IPAddressPools: []string{"a"}, IPAddressPoolSelectors: []metav1.LabelSelector{matchLabels("x", "y")},
				})},
			},
			part: func(c *Config) any { return len(c.Pools.ByName["a"].BGPAdvertisements) },
			want: 1,
		},
		{
			name: "aggregation length equal to the widest prefix of a range",
			res: ClusterResources{
				Pools:   []maglbv1beta1.IPAddressPool{pool("p", "3.3.3.2-3.3.3.254")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{bgpAdv("adv", metallbv1beta1.BGPAdvertisementSpec{AggregationLength: ptrTo[int32](26)})},
			},
			part: func(c *Config) any { return c.Pools.ByName["p"].BGPAdvertisements[0].AggregationLength },
			want: 26,
		},
		{
			name: "IPv6 aggregation length is checked against IPv6 entries only",
			res: ClusterResources{
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24", "2001:db8::/64")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{bgpAdv("adv", metallbv1beta1.BGPAdvertisementSpec{
					AggregationLength: ptrTo[int32](28), AggregationLengthV6: ptrTo[int32](64),
				})},
			},
			part: func(c *Config) any {
				adv := c.Pools.ByName["p"].BGPAdvertisements[0]
				return []int{adv.AggregationLength, adv.AggregationLengthV6}
			},
			want: []int{28, 64},
		},
		{
			name: "service selectors with the default aggregation lengths spelled out",
			res: ClusterResources{
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{bgpAdv("adv", metallbv1beta1.BGPAdvertisementSpec{
					AggregationLength: ptrTo[int32](32), AggregationLengthV6: ptrTo[int32](128),
					ServiceSelectors: []metav1.LabelSelector{matchLabels("app", "x")},
				})},
			},
			part: func(c *Config) any { return c.Pools.ByName["p"].BGPAdvertisements[0].ServiceSelectors },
			want: []labels.Selector{selector("app=x")},
		},
		{
			name: "an alias and a literal of the same value give one community",
			res: ClusterResources{
				Communities: []metallbv1beta1.Community{communities("c", "mine", "64512:1")},
				Pools:       []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{bgpAdv("adv", metallbv1beta1.BGPAdvertisementSpec{
					Communities: []string{"mine", "64512:1", "large:0:1:0", "0:1"},
				})},
			},
			part: func(c *Config) any { return c.Pools.ByName["p"].BGPAdvertisements[0].Communities },
			want: []Community{{Large: true, LocalData1: 1}, {Global: 1}, {Global: 64512<<16 | 1}},
		},
		{
			name: "aliases from several Community resources",
			res: ClusterResources{
				Communities: []metallbv1beta1.Community{communities("c1", "a", "1:1"), communities("c2", "b", "large:4294967295:0:7")},
				Pools:       []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				BGPAdvs:     []metallbv1beta1.BGPAdvertisement{bgpAdv("adv", metallbv1beta1.BGPAdvertisementSpec{Communities: []string{"b", "a"}})},
			},
			part: func(c *Config) any { return c.Pools.ByName["p"].BGPAdvertisements[0].Communities },
			want: []Community{{Global: 1<<16 | 1}, {Large: true, Global: 4294967295, LocalData2: 7}},
		},
		{
			name: "different local preferences from disjoint nodes",
			res: ClusterResources{
				Nodes: twoNodes,
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{
					bgpAdv("a1", metallbv1beta1.BGPAdvertisementSpec{LocalPref: 100, NodeSelectors: []metav1.LabelSelector{matchLabels("zone", "a")}}),
					bgpAdv("a2", metallbv1beta1.BGPAdvertisementSpec{LocalPref: 200, NodeSelectors: []metav1.LabelSelector{matchLabels("zone", "b")}}),
				},
			},
			part: func(c *Config) any { return len(c.Pools.ByName["p"].BGPAdvertisements) },
			want: 2,
		},
		{
			name: "different local preferences to disjoint peers",
			res: ClusterResources{
				Nodes: twoNodes,
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{
					bgpAdv("a1", metallbv1beta1.BGPAdvertisementSpec{LocalPref: 100, Peers: []string{"x"}}),
					bgpAdv("a2", metallbv1beta1.BGPAdvertisementSpec{LocalPref: 200, Peers: []string{"y"}}),
				},
			},
			part: func(c *Config) any { return len(c.Pools.ByName["p"].BGPAdvertisements) },
			want: 2,
		},
		{
			name: "different local preferences for different aggregation lengths",
			res: ClusterResources{
				Nodes: twoNodes,
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{
					bgpAdv("a1", metallbv1beta1.BGPAdvertisementSpec{LocalPref: 100}),
					bgpAdv("a2", metallbv1beta1.BGPAdvertisementSpec{LocalPref: 200, AggregationLength: ptrTo[int32](24)}),
				},
			},
			part: func(c *Config) any { return len(c.Pools.ByName["p"].BGPAdvertisements) },
			want: 2,
		},
		{
			name: "different AS path prepends when one advertisement selects services",
			res: ClusterResources{
				Nodes: twoNodes,
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{
					bgpAdv("a1", metallbv1beta1.BGPAdvertisementSpec{AsPathPrepend: 1}),
					bgpAdv("a2", metallbv1beta1.BGPAdvertisementSpec{AsPathPrepend: 3, ServiceSelectors: []metav1.LabelSelector{matchLabels("a", "b")}}),
				},
			},
			part: func(c *Config) any { return len(c.Pools.ByName["p"].BGPAdvertisements) },
			want: 2,
		},
		{
			name: "different local preferences in a dual-stack pool need both lengths to differ",
			res: ClusterResources{
				Nodes: twoNodes,
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24", "2001:db8::/64")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{
					bgpAdv("a1", metallbv1beta1.BGPAdvertisementSpec{LocalPref: 100}),
					bgpAdv("a2", metallbv1beta1.BGPAdvertisementSpec{LocalPref: 200, AggregationLength: ptrTo[int32](24), AggregationLengthV6: ptrTo[int32](64)}),
				},
			},
			part: func(c *Config) any { return len(c.Pools.ByName["p"].BGPAdvertisements) },
			want: 2,
		},
		{
			name: "BFD echo mode with an IPv4 pool",
			res: ClusterResources{
				BFDProfiles: []metallbv1beta1.BFDProfile{bfdProfile("echo", metallbv1beta1.BFDProfileSpec{EchoMode: ptrTo(true)})},
				Peers:       []metallbv1beta2.BGPPeer{peer("p", metallbv1beta2.BGPPeerSpec{MyASN: 1, ASN: 2, Address: "1.2.3.4", BFDProfile: "echo"})},
				Pools:       []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				BGPAdvs:     []metallbv1beta1.BGPAdvertisement{bgpAdv("adv", metallbv1beta1.BGPAdvertisementSpec{})},
			},
			part: func(c *Config) any { return c.BFDProfiles["echo"].EchoMode },
			want: true,
		},
		{
			name: "BFD echo peer not among an IPv6 advertisement's peers",
			res: ClusterResources{
				BFDProfiles: []metallbv1beta1.BFDProfile{bfdProfile("echo", metallbv1beta1.BFDProfileSpec{EchoMode: ptrTo(true)})},
				Peers: []metallbv1beta2.BGPPeer{
					peer("echo-peer", metallbv1beta2.BGPPeerSpec{MyASN: 1, ASN: 2, Address: "1.2.3.4", BFDProfile: "echo"}),
					peer("other", metallbv1beta2.BGPPeerSpec{MyASN: 1, ASN: 2, Address: "1.2.3.5"}),
				},
				Pools:   []maglbv1beta1.IPAddressPool{pool("p", "2001:db8::/64")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{bgpAdv("adv", metallbv1beta1.BGPAdvertisementSpec{Peers: []string{"other", "not-yet"}})},
			},
			part: func(c *Config) any { return c.Pools.ByName["p"].BGPAdvertisements[0].Peers },
			want: []string{"other", "not-yet"},
		},
		{
			name: "node selectors are resolved to node names",
			res: ClusterResources{
				Nodes: twoNodes,
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				L2Advs: []metallbv1beta1.L2Advertisement{l2Adv("l2", metallbv1beta1.L2AdvertisementSpec{
					NodeSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("zone", metav1.LabelSelectorOpNotIn, "a")}}},
				})},
			},
			part: func(c *Config) any { return c.Pools.ByName["p"].L2Advertisements[0].Nodes },
			want: sets.New("node2"),
		},
		{
			name: "L2 advertisements that announce alike are merged",
			res: ClusterResources{
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				L2Advs: []metallbv1beta1.L2Advertisement{
					l2Adv("l2a", metallbv1beta1.L2AdvertisementSpec{Interfaces: []string{"eth0", "eth1"}}),
					l2Adv("l2b", metallbv1beta1.L2AdvertisementSpec{Interfaces: []string{"eth1", "eth0"}}),
					l2Adv("l2c", metallbv1beta1.L2AdvertisementSpec{Interfaces: []string{"eth1"}}),
					l2Adv("l2d", metallbv1beta1.L2AdvertisementSpec{
						Interfaces:       []string{"eth1"},
						ServiceSelectors: []metav1.LabelSelector{matchLabels("app", "x")},
					}),
					l2Adv("l2e", metallbv1beta1.L2AdvertisementSpec{
						Interfaces:       []string{"eth1"},
						ServiceSelectors: []metav1.LabelSelector{matchLabels("app", "x")},
					}),
				},
			},
			part: func(c *Config) any {
				var names []string
				for _, adv := range c.Pools.ByName["p"].L2Advertisements {
					names = append(names, adv.Name)
				}
				return names
			},
			want: []string{"l2a", "l2c", "l2d"},
		},
		{
			name: "L2 advertisements with preferred nodes are never merged",
			res: ClusterResources{
				Nodes: twoNodes,
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				L2Advs: []metallbv1beta1.L2Advertisement{
					l2Adv("l2a", metallbv1beta1.L2AdvertisementSpec{PreferredNodeSelectors: []metallbv1beta1.PreferredNodeSelector{{Weight: 5, Preference: matchLabels("zone", "a")}}}),
					l2Adv("l2b", metallbv1beta1.L2AdvertisementSpec{PreferredNodeSelectors: []metallbv1beta1.PreferredNodeSelector{{Weight: 5, Preference: matchLabels("zone", "a")}}}),
				},
			},
			part: func(c *Config) any { return len(c.Pools.ByName["p"].L2Advertisements) },
			want: 2,
		},
		{
			name: "preferred node selectors outside the eligible nodes score nothing",
			res: ClusterResources{
				Nodes: twoNodes,
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				L2Advs: []metallbv1beta1.L2Advertisement{l2Adv("l2", metallbv1beta1.L2AdvertisementSpec{
					NodeSelectors:          []metav1.LabelSelector{matchLabels("zone", "a")},
					PreferredNodeSelectors: []metallbv1beta1.PreferredNodeSelector{{Weight: 5, Preference: matchLabels("zone", "b")}},
				})},
			},
			part: func(c *Config) any { return c.Pools.ByName["p"].L2Advertisements[0].PreferredNodes == nil },
			want: true,
		},
		{
			name: "preferred node selectors weighing nothing score nothing",
			res: ClusterResources{
				Nodes: twoNodes,
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				L2Advs: []metallbv1beta1.L2Advertisement{l2Adv("l2", metallbv1beta1.L2AdvertisementSpec{
					PreferredNodeSelectors: []metallbv1beta1.PreferredNodeSelector{{Weight: 0, Preference: matchLabels("zone", "a")}},
				})},
			},
			part: func(c *Config) any { return c.Pools.ByName["p"].L2Advertisements[0].PreferredNodes == nil },
			want: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := For(tc.res, DontValidate)
			if err != nil {
				t.Fatalf("For: %v", err)
			}
			if diff := cmp.Diff(tc.want, tc.part(cfg), modelComparison); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// The model shares nothing with its input: changing the input afterwards changes
// nothing in it, and building it leaves the input as it was.
func TestForSharesNothingWithInput(t *testing.T) {
	res := everyFeature()
	cfg, err := For(res, DontValidate)
	if err != nil {
		t.Fatalf("For: %v", err)
	}
	if diff := cmp.Diff(everyFeature(), res); diff != "" {
		t.Errorf("For changed its input (-before +after):\n%s", diff)
	}
	want, _ := For(everyFeature(), DontValidate)

	res.L2Advs[1].Spec.Interfaces[0] = "changed"
	res.BGPAdvs[0].Spec.Peers[0] = "changed"
	res.Peers[1].Spec.Password = "changed"
	res.PasswordSecrets["bgp-secret"].Data[corev1.BasicAuthPasswordKey][0] = 'X'
	res.Pools[0].Spec.AllocateTo.Namespaces[0] = "changed"
	res.Nodes[0].Name = "changed"
	if diff := cmp.Diff(want, cfg, modelComparison); diff != "" {
		t.Errorf("model follows changes to its input (-want +got):\n%s", diff)
	}
}

func TestRangePrefixes(t *testing.T) {
	tests := []struct {
		first, last string
		want        []netip.Prefix
	}{
		{"10.0.0.1", "10.0.0.1", prefixes("10.0.0.1/32")},
		{"10.0.0.0", "10.0.0.255", prefixes("10.0.0.0/24")},
		{"10.0.0.255", "10.0.1.0", prefixes("10.0.0.255/32", "10.0.1.0/32")},
		{"255.255.255.254", "255.255.255.255", prefixes("255.255.255.254/31")},
		{"::", "::ffff", prefixes("::/112")},
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", prefixes("::/0")},
		{"2001:db8::1", "2001:db8::6", prefixes("2001:db8::1/128", "2001:db8::2/127", "2001:db8::4/127", "2001:db8::6/128")},
	}
	for _, tc := range tests {
		got := rangePrefixes(netip.MustParseAddr(tc.first), netip.MustParseAddr(tc.last))
		if diff := cmp.Diff(tc.want, got, modelComparison); diff != "" {
			t.Errorf("%s-%s: mismatch (-want +got):\n%s", tc.first, tc.last, diff)
		}
	}
}

func TestCommunityString(t *testing.T) {
	for _, s := range []string{"0:0", "65535:65282", "64512:100", "large:0:0:0", "large:4294967295:1:2"} {
		if got := mustCommunity(s).String(); got != s {
			t.Errorf("parse %q and print: got %q", s, got)
		}
	}
}
