// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type invalidCase struct {
	name string
	res  ClusterResources
	// want is the whole message, or its start when it ends with "...".
	want      string
	transient bool
}

func TestForInvalid(t *testing.T) {
	var cases []invalidCase
	cases = append(cases, invalidPools()...)
	cases = append(cases, invalidPeers()...)
	cases = append(cases, invalidBFDProfiles()...)
	cases = append(cases, invalidCommunities()...)
	cases = append(cases, invalidBGPAdvertisements()...)
	cases = append(cases, invalidL2Advertisements()...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := For(tc.res, DontValidate)
			checkError(t, err, tc.want, tc.transient)
		})
	}
}

func checkError(t *testing.T, err error, want string, transient bool) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	if prefix, ok := strings.CutSuffix(want, "..."); ok {
		if !strings.HasPrefix(err.Error(), prefix) {
			t.Errorf("error %q, want it to start with %q", err, prefix)
		}
	} else if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if got := errors.As(err, &TransientError{}); got != transient {
		t.Errorf("transient: got %v, want %v", got, transient)
	}
}

func pools(p ...maglbv1beta1.IPAddressPool) ClusterResources {
	return ClusterResources{Pools: p}
}

func withShard(shard string) maglbv1beta1.IPAddressPool {
	return poolWith(pool("p", "10.0.0.0/24"), func(p *maglbv1beta1.IPAddressPool) { p.Spec.Shard = shard })
}

func withAllocation(allocation metallbv1beta1.ServiceAllocation) maglbv1beta1.IPAddressPool {
	return poolWith(pool("p", "10.0.0.0/24"), func(p *maglbv1beta1.IPAddressPool) { p.Spec.AllocateTo = &allocation })
}

func invalidPools() []invalidCase {
	return []invalidCase{
		{
			name: "pool without name",
			res:  pools(pool("", "10.0.0.0/24")),
			want: `ipaddresspool "": metadata.name: missing pool name`,
		},
		{
			name: "pool without addresses",
			res:  pools(pool("p")),
			want: `ipaddresspool "p": spec.addresses: pool has no prefixes defined`,
		},
		{
			name: "CIDR with a bad address",
			res:  pools(pool("p", "100.200.300.400/24")),
			want: `ipaddresspool "p": spec.addresses[0]: invalid CIDR "100.200.300.400/24"`,
		},
		{
			name: "CIDR with a too long prefix",
			res:  pools(pool("p", "10.0.0.0/24", "1.2.3.0/33")),
			want: `ipaddresspool "p": spec.addresses[1]: invalid CIDR "1.2.3.0/33"`,
		},
		{
			name: "IPv6 CIDR with a too long prefix",
			res:  pools(pool("p", "2001:db8::/129")),
			want: `ipaddresspool "p": spec.addresses[0]: invalid CIDR "2001:db8::/129"`,
		},
		{
			name: "CIDR with surrounding space",
			res:  pools(pool("p", " 10.0.0.0/8")),
			want: `ipaddresspool "p": spec.addresses[0]: invalid CIDR " 10.0.0.0/8"`,
		},
		{
			name: "address without prefix length",
			res:  pools(pool("p", "10.0.0.1")),
			want: `ipaddresspool "p": spec.addresses[0]: invalid CIDR "10.0.0.1"`,
		},
		{
			name: "range ending before its start",
			res:  pools(pool("p", "1.2.3.10-1.2.3.1")),
			want: `ipaddresspool "p": spec.addresses[0]: invalid IP range "1.2.3.10-1.2.3.1": start IP "1.2.3.10" is after the end IP "1.2.3.1"`,
		},
		{
			name: "range with a bad start",
			res:  pools(pool("p", "1.2.3-1.2.3.4")),
			want: `ipaddresspool "p": spec.addresses[0]: invalid IP range "1.2.3-1.2.3.4": invalid start IP "1.2.3"`,
		},
		{
			name: "range with a bad end",
			res:  pools(pool("p", "1.2.3.4-1.2.3.4-1.2.3.5")),
			want: `ipaddresspool "p": spec.addresses[0]: invalid IP range "1.2.3.4-1.2.3.4-1.2.3.5": invalid end IP "1.2.3.4-1.2.3.5"`,
		},
		{
			name: "range mixing families",
			res:  pools(pool("p", "::-0.0.0.0")),
			want: `ipaddresspool "p": spec.addresses[0]: invalid IP range "::-0.0.0.0": start and end IPs must be the same family`,
		},
		{
			name: "range with a zoned address",
			res:  pools(pool("p", "fe80::1%eth0-fe80::2")),
			want: `ipaddresspool "p": spec.addresses[0]: invalid IP range "fe80::1%eth0-fe80::2": invalid start IP "fe80::1%eth0"`,
		},
		{
			name: "two pools with the same name",
			res:  pools(pool("p", "10.0.0.0/24"), pool("q", "10.0.1.0/24"), pool("p", "10.0.2.0/24")),
			want: `ipaddresspool "p": metadata.name: duplicate definition of pool "p"`,
		},
		{
			name: "same CIDR in two pools",
			res:  pools(pool("p", "10.0.0.0/8"), pool("q", "10.0.0.0/8")),
			want: `ipaddresspool "q": spec.addresses[0]: CIDR "10.0.0.0/8" in pool "q" overlaps with already defined CIDR "10.0.0.0/8" of pool "p"`,
		},
		{
			name: "CIDR inside another pool's CIDR",
			res:  pools(pool("p", "10.0.0.0/8"), pool("q", "192.168.0.0/24", "10.0.0.0/16")),
			want: `ipaddresspool "q": spec.addresses[1]: CIDR "10.0.0.0/16" in pool "q" overlaps with already defined CIDR "10.0.0.0/8" of pool "p"`,
		},
		{
			name: "range overlapping a CIDR of the same pool",
			res:  pools(pool("p", "10.0.0.0/30", "10.0.0.3-10.0.0.4")),
			want: `ipaddresspool "p": spec.addresses[1]: CIDR "10.0.0.3/32" in pool "p" overlaps with already defined CIDR "10.0.0.0/30" of pool "p"`,
		},
		{
			name: "overlapping IPv6 pools",
			res:  pools(pool("p", "2001:db8::/64"), pool("q", "2001:db8::1-2001:db8::2")),
			want: `ipaddresspool "q": spec.addresses[0]: CIDR "2001:db8::1/128" in pool "q" overlaps with already defined CIDR "2001:db8::/64" of pool "p"`,
		},
		{
			name: "shard with capitals",
			res:  pools(withShard("Gold")),
			want: `ipaddresspool "p": spec.shard: invalid shard "Gold": a lowercase RFC 1123 label must consist of...`,
		},
		{
			name: "shard starting with a dash",
			res:  pools(withShard("-gold")),
			want: `ipaddresspool "p": spec.shard: invalid shard "-gold": a lowercase RFC 1123 label must consist of...`,
		},
		{
			name: "shard too long for its node label",
			res:  pools(withShard("a234567890123456789012345678901234567890123456789012345678")),
			want: `ipaddresspool "p": spec.shard: invalid shard "a234567890123456789012345678901234567890123456789012345678": node label key "maglb.io/shard-a234567890123456789012345678901234567890123456789012345678": name part must be no more than 63 bytes`,
		},
		{
			name: "namespace listed twice in the allocation",
			res:  pools(withAllocation(metallbv1beta1.ServiceAllocation{Namespaces: []string{"ns1", "ns2", "ns1"}})),
			want: `ipaddresspool "p": spec.serviceAllocation.namespaces[2]: duplicate definition of namespaces "ns1"`,
		},
		{
			name: "namespace selector listed twice",
			res: pools(withAllocation(metallbv1beta1.ServiceAllocation{
				NamespaceSelectors: []metav1.LabelSelector{matchLabels("team", "a"), matchLabels("team", "a")},
			})),
			want: `ipaddresspool "p": spec.serviceAllocation.namespaceSelectors[1]: duplicate definition of namespace label selector "team=a"`,
		},
		{
			name: "service selector listed twice",
			res: pools(withAllocation(metallbv1beta1.ServiceAllocation{
				ServiceSelectors: []metav1.LabelSelector{matchLabels("app", "a"), matchLabels("app", "b"), matchLabels("app", "a")},
			})),
			want: `ipaddresspool "p": spec.serviceAllocation.serviceSelectors[2]: duplicate definition of service label selector "app=a"`,
		},
		{
			name: "namespace selector with an unknown operator",
			res: pools(withAllocation(metallbv1beta1.ServiceAllocation{
				NamespaceSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("team", "Like", "a")}}},
			})),
			want: `ipaddresspool "p": spec.serviceAllocation.namespaceSelectors[0]: failed to parse namespace label selector: "Like" is not a valid label selector operator`,
		},
		{
			name: "service selector with In and no values",
			res: pools(withAllocation(metallbv1beta1.ServiceAllocation{
				ServiceSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("app", metav1.LabelSelectorOpIn)}}},
			})),
			want: `ipaddresspool "p": spec.serviceAllocation.serviceSelectors[0]: failed to parse service label selector: values: Invalid value: ...`,
		},
	}
}

func peers(specs ...metallbv1beta2.BGPPeerSpec) ClusterResources {
	var res ClusterResources
	for _, spec := range specs {
		res.Peers = append(res.Peers, peer("p", spec))
	}
	return res
}

// ebgpPeer is a valid peer spec, changed by change.
func ebgpPeer(change func(*metallbv1beta2.BGPPeerSpec)) metallbv1beta2.BGPPeerSpec {
	spec := metallbv1beta2.BGPPeerSpec{MyASN: 64512, ASN: 64513, Address: "192.0.2.1"}
	change(&spec)
	return spec
}

func withSecret(res ClusterResources, secret corev1.Secret) ClusterResources {
	res.PasswordSecrets = map[string]corev1.Secret{secret.Name: secret}
	return res
}

func invalidPeers() []invalidCase {
	withPasswordSecret := ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.PasswordSecret = corev1.SecretReference{Name: "secret"} })
	return []invalidCase{
		{
			name: "peer without local ASN",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.MyASN = 0 })),
			want: `bgppeer "p": spec.myASN: missing local ASN`,
		},
		{
			name: "peer without peer ASN or dynamic ASN",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.ASN = 0 })),
			want: `bgppeer "p": spec.peerASN: missing peer ASN and dynamicASN`,
		},
		{
			name: "peer with both peer ASN and dynamic ASN",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.DynamicASN = metallbv1beta2.ExternalASNMode })),
			want: `bgppeer "p": spec.dynamicASN: both peer ASN and dynamicASN specified`,
		},
		{
			name: "peer with an unknown dynamic ASN mode",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.ASN, s.DynamicASN = 0, "sometimes" })),
			want: `bgppeer "p": spec.dynamicASN: invalid dynamicASN sometimes`,
		},
		{
			name: "eBGP multi-hop on an iBGP peer",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.ASN, s.EBGPMultiHop = s.MyASN, true })),
			want: `bgppeer "p": spec.ebgpMultiHop: invalid ebgp-multihop parameter set for an ibgp peer`,
		},
		{
			name: "peer without address or interface",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.Address = "" })),
			want: `bgppeer "p": spec.peerAddress: peer has no Address or Interface specified`,
		},
		{
			name: "peer with address and interface",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.Interface = "eth0" })),
			want: `bgppeer "p": spec.interface: peer has both Address and Interface specified`,
		},
		{
			name: "peer with a bad address",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.Address = "1.2.3.256" })),
			want: `bgppeer "p": spec.peerAddress: invalid BGPPeer address "1.2.3.256"`,
		},
		{
			name: "peer address with a zone",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.Address = "fe80::1%eth0" })),
			want: `bgppeer "p": spec.peerAddress: invalid BGPPeer address "fe80::1%eth0"`,
		},
		{
			name: "peer with a bad router ID",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.RouterID = "router-1" })),
			want: `bgppeer "p": spec.routerID: invalid router ID "router-1"`,
		},
		{
			name: "peer with a bad source address",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.SrcAddress = "10.0.0.0/24" })),
			want: `bgppeer "p": spec.sourceAddress: invalid source IP "10.0.0.0/24"`,
		},
		{
			name: "hold time below 3s",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.HoldTime = duration(2500 * time.Millisecond) })),
			want: `bgppeer "p": spec.holdTime: invalid BGPPeer timers: invalid hold time "2.5s": must be 0 or >=3s`,
		},
		{
			name: "keepalive giving a hold time below 3s",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.KeepaliveTime = duration(900 * time.Millisecond) })),
			want: `bgppeer "p": spec.keepaliveTime: invalid BGPPeer timers: invalid hold time "2.7s": must be 0 or >=3s`,
		},
		{
			name: "keepalive longer than the hold time",
			res: peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) {
				s.HoldTime, s.KeepaliveTime = duration(30*time.Second), duration(40*time.Second)
			})),
			want: `bgppeer "p": spec.keepaliveTime: invalid BGPPeer timers: invalid keepaliveTime "40s", must be lower than holdTime "30s"`,
		},
		{
			name: "node selector listed twice",
			res: peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) {
				s.NodeSelectors = []metav1.LabelSelector{matchLabels("a", "b", "c", "d"), matchLabels("c", "d", "a", "b")}
			})),
			want: `bgppeer "p": spec.nodeSelectors[1]: duplicate definition of node selector "a=b,c=d"`,
		},
		{
			name: "node selector listed twice, values in another order",
			res: peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) {
				s.NodeSelectors = []metav1.LabelSelector{
					{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("k", metav1.LabelSelectorOpIn, "x", "y")}},
					{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("k", metav1.LabelSelectorOpIn, "y", "x")}},
				}
			})),
			want: `bgppeer "p": spec.nodeSelectors[1]: duplicate definition of node selector "k in (x,y)"`,
		},
		{
			name: "match expression value listed twice",
			res: peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) {
				s.NodeSelectors = []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("k", metav1.LabelSelectorOpIn, "x", "y", "x")}}}
			})),
			want: `bgppeer "p": spec.nodeSelectors[0].matchExpressions[0].values[2]: duplicate definition of match expression value in label selector "x"`,
		},
		{
			name: "match expression listed twice",
			res: peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) {
				s.NodeSelectors = []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{
					matchExpression("k", metav1.LabelSelectorOpIn, "x"),
					matchExpression("k", metav1.LabelSelectorOpIn, "x"),
				}}}
			})),
			want: `bgppeer "p": spec.nodeSelectors[0].matchExpressions[1]: duplicate definition of match expressions "k In [x]"`,
		},
		{
			name: "node selector without key",
			res: peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) {
				s.NodeSelectors = []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("", metav1.LabelSelectorOpIn, "x")}}}
			})),
			want: `bgppeer "p": spec.nodeSelectors[0]: failed to parse node selector: key: Invalid value: ...`,
		},
		{
			name: "node selector without operator",
			res: peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) {
				s.NodeSelectors = []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("k", "", "x")}}}
			})),
			want: `bgppeer "p": spec.nodeSelectors[0]: failed to parse node selector: "" is not a valid label selector operator`,
		},
		{
			name: "password and password secret",
			res: withSecret(peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) {
				s.Password, s.PasswordSecret = "pw", corev1.SecretReference{Name: "secret"}
			})), basicAuthSecret("secret", "pw")),
			want: `bgppeer "p": spec.passwordSecret: can not have both password and secret ref set in peer config "metallb-system"/"p"`,
		},
		{
			name:      "password secret not found",
			res:       peers(withPasswordSecret),
			want:      `bgppeer "p": spec.passwordSecret: secret ref not found for peer config "metallb-system"/"p"`,
			transient: true,
		},
		{
			name: "password secret of another type",
			res: withSecret(peers(withPasswordSecret), corev1.Secret{
				ObjectMeta: meta("secret", nil),
				Type:       corev1.SecretTypeOpaque,
				Data:       map[string][]byte{"password": []byte("pw")},
			}),
			want: `bgppeer "p": spec.passwordSecret: secret type mismatch on "metallb-system"/"secret", type "kubernetes.io/basic-auth" is expected`,
		},
		{
			name: "password secret without password",
			res: withSecret(peers(withPasswordSecret), corev1.Secret{
				ObjectMeta: meta("secret", nil),
				Type:       corev1.SecretTypeBasicAuth,
				Data:       map[string][]byte{"username": []byte("me")},
			}),
			want: `bgppeer "p": spec.passwordSecret: password not specified in the secret "metallb-system"/"secret"`,
		},
		{
			name:      "BFD profile not found",
			res:       peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.BFDProfile = "fast" })),
			want:      `bgppeer "p": spec.bfdProfile: peer p referencing non existing bfd profile fast`,
			transient: true,
		},
		{
			name: "two peers with the same name",
			res: peers(
				ebgpPeer(func(*metallbv1beta2.BGPPeerSpec) {}),
				ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.Address = "192.0.2.2" }),
			),
			want: `bgppeer "p": metadata.name: peer p already exists`,
		},
	}
}

func bfdProfiles(specs ...metallbv1beta1.BFDProfileSpec) ClusterResources {
	var res ClusterResources
	for _, spec := range specs {
		res.BFDProfiles = append(res.BFDProfiles, bfdProfile("b", spec))
	}
	return res
}

func invalidBFDProfiles() []invalidCase {
	return []invalidCase{
		{
			name: "BFD profile without name",
			res:  ClusterResources{BFDProfiles: []metallbv1beta1.BFDProfile{bfdProfile("", metallbv1beta1.BFDProfileSpec{})}},
			want: `bfdprofile "": metadata.name: missing bfd profile name`,
		},
		{
			name: "two BFD profiles with the same name",
			res:  bfdProfiles(metallbv1beta1.BFDProfileSpec{}, metallbv1beta1.BFDProfileSpec{}),
			want: `bfdprofile "b": metadata.name: found duplicate bfd profile name b`,
		},
		{
			name: "receive interval too low",
			res:  bfdProfiles(metallbv1beta1.BFDProfileSpec{ReceiveInterval: ptrTo[uint32](9)}),
			want: `bfdprofile "b": spec.receiveInterval: invalid receive interval value: invalid value 9, must be in 10-60000 range`,
		},
		{
			name: "receive interval too high",
			res:  bfdProfiles(metallbv1beta1.BFDProfileSpec{ReceiveInterval: ptrTo[uint32](60001)}),
			want: `bfdprofile "b": spec.receiveInterval: invalid receive interval value: invalid value 60001, must be in 10-60000 range`,
		},
		{
			name: "transmit interval too low",
			res:  bfdProfiles(metallbv1beta1.BFDProfileSpec{TransmitInterval: ptrTo[uint32](1)}),
			want: `bfdprofile "b": spec.transmitInterval: invalid transmit interval value: invalid value 1, must be in 10-60000 range`,
		},
		{
			name: "detect multiplier too low",
			res:  bfdProfiles(metallbv1beta1.BFDProfileSpec{DetectMultiplier: ptrTo[uint32](1)}),
			want: `bfdprofile "b": spec.detectMultiplier: invalid detect multiplier value: invalid value 1, must be in 2-255 range`,
		},
		{
			name: "echo interval too high",
			res:  bfdProfiles(metallbv1beta1.BFDProfileSpec{EchoInterval: ptrTo[uint32](70000)}),
			want: `bfdprofile "b": spec.echoInterval: invalid echo interval value: invalid value 70000, must be in 10-60000 range`,
		},
		{
			name: "minimum TTL too high",
			res:  bfdProfiles(metallbv1beta1.BFDProfileSpec{MinimumTTL: ptrTo[uint32](255)}),
			want: `bfdprofile "b": spec.minimumTtl: invalid minimum ttl value: invalid value 255, must be in 1-254 range`,
		},
		{
			name: "BFD echo towards a peer of an IPv6 pool",
			res: ClusterResources{
				BFDProfiles: []metallbv1beta1.BFDProfile{bfdProfile("echo", metallbv1beta1.BFDProfileSpec{EchoMode: ptrTo(true)})},
				Peers:       []metallbv1beta2.BGPPeer{peer("p", ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.BFDProfile = "echo" }))},
				Pools:       []maglbv1beta1.IPAddressPool{pool("v6", "2001:db8::/64")},
				BGPAdvs:     []metallbv1beta1.BGPAdvertisement{bgpAdv("adv", metallbv1beta1.BGPAdvertisementSpec{})},
			},
			want: `bgpadvertisement "adv": spec.peers: pool v6 has bgpadvertisement adv which references peer p which has bfd echo enabled, which is not possible`,
		},
	}
}

func invalidCommunities() []invalidCase {
	return []invalidCase{
		{
			name: "community alias not shaped like a community",
			res:  ClusterResources{Communities: []metallbv1beta1.Community{communities("c", "ok", "1:1", "bad", "1234")}},
			want: `community "c": spec.communities[1].value: parsing community "bad": invalid community format: 1234`,
		},
		{
			name: "community alias with an ASN over 16 bits",
			res:  ClusterResources{Communities: []metallbv1beta1.Community{communities("c", "bad", "65536:1")}},
			want: `community "c": spec.communities[0].value: parsing community "bad": invalid community value: invalid section "65536" of community "65536:1": strconv.ParseUint: parsing "65536": value out of range`,
		},
		{
			name: "community alias with a value over 16 bits",
			res:  ClusterResources{Communities: []metallbv1beta1.Community{communities("c", "bad", "1:99999")}},
			want: `community "c": spec.communities[0].value: parsing community "bad": invalid community value: invalid section "99999" of community "1:99999": ...`,
		},
		{
			name: "large community alias with a bad marker",
			res:  ClusterResources{Communities: []metallbv1beta1.Community{communities("c", "bad", "big:1:2:3")}},
			want: `community "c": spec.communities[0].value: parsing community "bad": invalid community value: invalid marker for large community, expected community to be of format large:<uint32>:<uint32>:<uint32> but got "big:1:2:3" instead`,
		},
		{
			name: "large community alias with a part over 32 bits",
			res:  ClusterResources{Communities: []metallbv1beta1.Community{communities("c", "bad", "large:1:4294967296:3")}},
			want: `community "c": spec.communities[0].value: parsing community "bad": invalid community value: invalid section "4294967296" of community "large:1:4294967296:3": ...`,
		},
		{
			name: "community alias defined in two resources",
			res:  ClusterResources{Communities: []metallbv1beta1.Community{communities("c1", "a", "1:1"), communities("c2", "a", "1:2")}},
			want: `community "c2": spec.communities[0].name: duplicate definition of community "a"`,
		},
		{
			name: "community alias defined twice in one resource",
			res:  ClusterResources{Communities: []metallbv1beta1.Community{communities("c", "a", "1:1", "a", "1:1")}},
			want: `community "c": spec.communities[1].name: duplicate definition of community "a"`,
		},
	}
}

// advertised gives a pool of 10.0.0.0/24 and the BGP advertisements.
func advertised(advs ...metallbv1beta1.BGPAdvertisement) ClusterResources {
	return ClusterResources{Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")}, BGPAdvs: advs}
}

func advSpec(change func(*metallbv1beta1.BGPAdvertisementSpec)) metallbv1beta1.BGPAdvertisementSpec {
	var spec metallbv1beta1.BGPAdvertisementSpec
	change(&spec)
	return spec
}

func invalidBGPAdvertisements() []invalidCase {
	nodes := []corev1.Node{node("n1", nil)}
	return []invalidCase{
		{
			name: "IPv4 aggregation length over 32",
			res:  advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.AggregationLength = ptrTo[int32](34) }))),
			want: `bgpadvertisement "a": spec.aggregationLength: invalid aggregation length 34 for IPv4`,
		},
		{
			name: "IPv6 aggregation length over 128",
			res:  advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.AggregationLengthV6 = ptrTo[int32](129) }))),
			want: `bgpadvertisement "a": spec.aggregationLengthV6: invalid aggregation length 129 for IPv6`,
		},
		{
			name: "aggregation length shorter than a pool prefix",
			res: ClusterResources{
				Pools:   []maglbv1beta1.IPAddressPool{pool("p", "10.20.30.40/24", "1.2.3.0/28")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.AggregationLength = ptrTo[int32](26) }))},
			},
			want: `bgpadvertisement "a": spec.aggregationLength: invalid aggregation length 26: prefix 28 in this pool is more specific than the aggregation length for addresses 1.2.3.0/28 of pool "p"`,
		},
		{
			name: "aggregation length shorter than the widest prefix of a range",
			res: ClusterResources{
				Pools:   []maglbv1beta1.IPAddressPool{pool("p", "3.3.3.2-3.3.3.254")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.AggregationLength = ptrTo[int32](24) }))},
			},
			want: `bgpadvertisement "a": spec.aggregationLength: invalid aggregation length 24: prefix 26 in this pool is more specific than the aggregation length for addresses 3.3.3.2-3.3.3.254 of pool "p"`,
		},
		{
			name: "IPv6 aggregation length shorter than a pool prefix",
			res: ClusterResources{
				Pools:   []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24", "2001:db8::/64")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.AggregationLengthV6 = ptrTo[int32](48) }))},
			},
			want: `bgpadvertisement "a": spec.aggregationLengthV6: invalid aggregation length 48: prefix 64 in this pool is more specific than the aggregation length for addresses 2001:db8::/64 of pool "p"`,
		},
		{
			name: "service selectors with an aggregation length",
			res: advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) {
				s.AggregationLength, s.ServiceSelectors = ptrTo[int32](24), []metav1.LabelSelector{matchLabels("a", "b")}
			}))),
			want: `bgpadvertisement "a": spec.aggregationLength: serviceSelectors and aggregationLength are mutually exclusive, both cannot be set`,
		},
		{
			name: "service selectors with an IPv6 aggregation length",
			res: advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) {
				s.AggregationLengthV6, s.ServiceSelectors = ptrTo[int32](64), []metav1.LabelSelector{matchLabels("a", "b")}
			}))),
			want: `bgpadvertisement "a": spec.aggregationLengthV6: serviceSelectors and aggregationLengthV6 are mutually exclusive, both cannot be set`,
		},
		{
			name: "pool named twice",
			res:  advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.IPAddressPools = []string{"p", "p"} }))),
			want: `bgpadvertisement "a": spec.ipAddressPools[1]: duplicate definition of ipAddressPools "p"`,
		},
		{
			name: "peer named twice",
			res:  advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Peers = []string{"x", "y", "x"} }))),
			want: `bgpadvertisement "a": spec.peers[2]: duplicate definition of peers "x"`,
		},
		{
			name: "community listed twice",
			res:  advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"1:1", "1:1"} }))),
			want: `bgpadvertisement "a": spec.communities[1]: duplicate definition of community "1:1"`,
		},
		{
			name:      "community not shaped like one and not an alias",
			res:       advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"1234"} }))),
			want:      `bgpadvertisement "a": spec.communities[0]: invalid community "1234" in BGP advertisement: invalid community format: 1234`,
			transient: true,
		},
		{
			name:      "unknown community alias",
			res:       advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"1:1", "no-such-alias"} }))),
			want:      `bgpadvertisement "a": spec.communities[1]: invalid community "no-such-alias" in BGP advertisement: invalid community format: no-such-alias`,
			transient: true,
		},
		{
			name: "community ASN over 16 bits",
			res:  advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"70000:1"} }))),
			want: `bgpadvertisement "a": spec.communities[0]: invalid community "70000:1" in BGP advertisement: invalid community value: invalid section "70000" of community "70000:1": ...`,
		},
		{
			name: "community value not a number",
			res:  advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"1:x"} }))),
			want: `bgpadvertisement "a": spec.communities[0]: invalid community "1:x" in BGP advertisement: invalid community value: invalid section "x" of community "1:x": ...`,
		},
		{
			name: "large community part not a number",
			res:  advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"large:1:2:x"} }))),
			want: `bgpadvertisement "a": spec.communities[0]: invalid community "large:1:2:x" in BGP advertisement: invalid community value: invalid section "x" of community "large:1:2:x": ...`,
		},
		{
			name: "different local preferences for the same updates",
			res: ClusterResources{
				Nodes: nodes,
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{
					bgpAdv("a1", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.LocalPref, s.Peers = 100, []string{"x"} })),
					bgpAdv("a2", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.LocalPref, s.Peers = 200, []string{"y", "x"} })),
				},
			},
			want: `bgpadvertisement "a2": spec.localPref: invalid local preference 200: local preference 100 was already set for the same type of BGP update by bgpadvertisement "a1". Check existing BGP advertisements with common pools and aggregation lengths`,
		},
		{
			name: "different local preferences in a dual-stack pool sharing the IPv6 length",
			res: ClusterResources{
				Nodes: nodes,
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24", "2001:db8::/64")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{
					bgpAdv("a1", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.LocalPref = 100 })),
					bgpAdv("a2", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.LocalPref, s.AggregationLength = 200, ptrTo[int32](24) })),
				},
			},
			want: `bgpadvertisement "a2": spec.localPref: invalid local preference 200: local preference 100 was already set for the same type of BGP update by bgpadvertisement "a1"...`,
		},
		{
			name: "different AS path prepends for the same updates",
			res: ClusterResources{
				Nodes: nodes,
				Pools: []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{
					bgpAdv("a1", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.AsPathPrepend = 1 })),
					bgpAdv("a2", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.AsPathPrepend = 2 })),
				},
			},
			want: `bgpadvertisement "a2": spec.asPathPrepend: invalid as path prepend 2: as path prepend 1 was already set for the same type of BGP update by bgpadvertisement "a1". Check existing BGP advertisements with common pools and aggregation lengths`,
		},
		{
			name: "pool selector listed twice",
			res: advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) {
				s.IPAddressPoolSelectors = []metav1.LabelSelector{matchLabels("x", "y"), matchLabels("x", "y")}
			}))),
			want: `bgpadvertisement "a": spec.ipAddressPoolSelectors[1]: duplicate definition of ip address pool selector "x=y"`,
		},
		{
			name: "pool selector with a bad label value",
			res: advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) {
				s.IPAddressPoolSelectors = []metav1.LabelSelector{matchLabels("x", "not valid")}
			}))),
			want: `bgpadvertisement "a": spec.ipAddressPoolSelectors[0]: failed to parse ip address pool selector: ...`,
		},
		{
			name: "node selector listed twice",
			res: advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) {
				s.NodeSelectors = []metav1.LabelSelector{matchLabels("x", "y"), matchLabels("x", "y")}
			}))),
			want: `bgpadvertisement "a": spec.nodeSelectors[1]: duplicate definition of node selector "x=y"`,
		},
		{
			name: "service selector listed twice",
			res: advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) {
				s.ServiceSelectors = []metav1.LabelSelector{matchLabels("x", "y"), matchLabels("x", "y")}
			}))),
			want: `bgpadvertisement "a": spec.serviceSelectors[1]: duplicate definition of service selector "x=y"`,
		},
		{
			name: "service selector with an unknown operator",
			res: advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) {
				s.ServiceSelectors = []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("k", "Near", "x")}}}
			}))),
			want: `bgpadvertisement "a": spec.serviceSelectors[0]: failed to parse service selector: "Near" is not a valid label selector operator`,
		},
		{
			name: "two BGP advertisements with the same name",
			res: advertised(
				bgpAdv("a", metallbv1beta1.BGPAdvertisementSpec{}),
				bgpAdv("a", metallbv1beta1.BGPAdvertisementSpec{}),
			),
			want: `bgpadvertisement "a": metadata.name: duplicate definition of bgpadvertisements`,
		},
	}
}

func l2Advertised(spec metallbv1beta1.L2AdvertisementSpec) ClusterResources {
	return ClusterResources{
		Pools:  []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
		L2Advs: []metallbv1beta1.L2Advertisement{l2Adv("l2", spec)},
	}
}

func invalidL2Advertisements() []invalidCase {
	return []invalidCase{
		{
			name: "L2: pool named twice",
			res:  l2Advertised(metallbv1beta1.L2AdvertisementSpec{IPAddressPools: []string{"p", "q", "p"}}),
			want: `l2advertisement "l2": spec.ipAddressPools[2]: duplicate definition of ipAddressPools "p"`,
		},
		{
			name: "L2: pool selector listed twice",
			res: l2Advertised(metallbv1beta1.L2AdvertisementSpec{
				IPAddressPoolSelectors: []metav1.LabelSelector{matchLabels("x", "y"), matchLabels("x", "y")},
			}),
			want: `l2advertisement "l2": spec.ipAddressPoolSelectors[1]: duplicate definition of ip address pool selector "x=y"`,
		},
		{
			name: "L2: node selector listed twice",
			res: l2Advertised(metallbv1beta1.L2AdvertisementSpec{
				NodeSelectors: []metav1.LabelSelector{matchLabels("x", "y"), matchLabels("x", "y")},
			}),
			want: `l2advertisement "l2": spec.nodeSelectors[1]: duplicate definition of node selector "x=y"`,
		},
		{
			name: "L2: node selector with an unknown operator",
			res: l2Advertised(metallbv1beta1.L2AdvertisementSpec{
				NodeSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("k", "Near", "x")}}},
			}),
			want: `l2advertisement "l2": spec.nodeSelectors[0]: failed to parse node selector: "Near" is not a valid label selector operator`,
		},
		{
			name: "L2: service selector listed twice",
			res: l2Advertised(metallbv1beta1.L2AdvertisementSpec{
				ServiceSelectors: []metav1.LabelSelector{matchLabels("x", "y"), matchLabels("x", "y")},
			}),
			want: `l2advertisement "l2": spec.serviceSelectors[1]: duplicate definition of service selector "x=y"`,
		},
		{
			name: "L2: preferred node selector with an unknown operator",
			res: l2Advertised(metallbv1beta1.L2AdvertisementSpec{
				PreferredNodeSelectors: []metallbv1beta1.PreferredNodeSelector{
					{Weight: 1, Preference: matchLabels("x", "y")},
					{Weight: 1, Preference: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{matchExpression("k", "Near", "x")}}},
				},
			}),
			want: `l2advertisement "l2": spec.preferredNodeSelectors[1].preference: invalid preferred node selector: "Near" is not a valid label selector operator`,
		},
	}
}
