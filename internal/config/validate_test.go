// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
)

func TestValidationForNativeRejects(t *testing.T) {
	tests := []struct {
		name string
		res  ClusterResources
		want string
	}{
		{
			name: "VRF",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.VRFName = "red" })),
			want: `bgppeer "p": spec.vrf: peer 192.0.2.1 has vrf set on native bgp mode`,
		},
		{
			name: "multiprotocol disabled",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.DisableMP = true })),
			want: `bgppeer "p": spec.disableMP: peer 192.0.2.1 has disable MP flag set on native bgp mode`,
		},
		{
			name: "dynamic ASN",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.ASN, s.DynamicASN = 0, metallbv1beta2.ExternalASNMode })),
			want: `bgppeer "p": spec.dynamicASN: peer 192.0.2.1 has dynamicASN set on native bgp mode`,
		},
		{
			name: "unnumbered peer",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.Address, s.Interface = "", "eth0" })),
			want: `bgppeer "p": spec.interface: peer eth0 has interface set on native bgp mode`,
		},
		{
			name: "local ASN",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.LocalASN = 65000 })),
			want: `bgppeer "p": spec.localASN: peer 192.0.2.1 has localASN set on native bgp mode`,
		},
		{
			name: "AS path prepend",
			res:  advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.AsPathPrepend = 2 }))),
			want: `bgpadvertisement "a": spec.asPathPrepend: asPathPrepend is only supported by the frr-k8s backend`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := For(tc.res, ValidationFor("native"))
			checkError(t, err, tc.want, false)
			if _, err := For(tc.res, ValidationFor("frr")); err != nil && err.Error() == tc.want {
				t.Errorf("another BGP type gets the native restriction: %v", err)
			}
		})
	}
}

// GoBGP does what upstream's native speaker does not: these pass.
func TestValidationForNativeAllows(t *testing.T) {
	res := ClusterResources{
		Pools: []maglbv1beta1.IPAddressPool{pool("v4", "10.0.0.0/24"), pool("v6", "2001:db8::/64")},
		Peers: []metallbv1beta2.BGPPeer{peer("p", ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) {
			s.KeepaliveTime = duration(10 * time.Second)
			s.ConnectTime = duration(2 * time.Second)
			s.EnableGracefulRestart = true
			s.DualStackAddressFamily = true
			s.BFDProfile = "b"
		}))},
		Communities: []metallbv1beta1.Community{communities("c", "big", "large:1:2:3")},
		BFDProfiles: bfdProfiles(metallbv1beta1.BFDProfileSpec{}).BFDProfiles,
		BGPAdvs: []metallbv1beta1.BGPAdvertisement{bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) {
			s.IPAddressPools = []string{"v6", "v4"}
			s.Communities = []string{"big", "large:4:5:6", "1:1"}
		}))},
	}
	cfg, err := For(res, ValidationFor("native"))
	if err != nil {
		t.Fatalf("For: %v", err)
	}
	if got := len(cfg.Pools.ByName["v6"].BGPAdvertisements[0].Communities); got != 3 {
		t.Errorf("got %d communities, want 3", got)
	}
	if got := cfg.Peers["p"].BFD; got == nil || *got != *cfg.BFDProfiles["b"] {
		t.Errorf("the peer's BFD profile is %+v, want %+v", got, cfg.BFDProfiles["b"])
	}
}

func TestDontValidate(t *testing.T) {
	res := peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.VRFName, s.DisableMP = "red", true }))
	for _, validate := range []Validate{DontValidate, ValidationFor(""), ValidationFor("frr-k8s")} {
		if _, err := For(res, validate); err != nil {
			t.Errorf("For: %v", err)
		}
	}
}

func TestValidateForWebhook(t *testing.T) {
	tests := []struct {
		name     string
		res      ClusterResources
		validate Validate
		// want is "" when the webhook admits res.
		want      string
		transient bool
	}{
		{
			name: "peer naming a BFD profile not created yet",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.BFDProfile = "later" })),
		},
		{
			name: "peer naming a password secret not created yet",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.PasswordSecret = corev1.SecretReference{Name: "later"} })),
		},
		{
			name: "advertisement naming a community alias not defined yet",
			res:  advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"later", "1:1"} }))),
		},
		{
			name: "aliases not defined yet, one used twice",
			res: advertised(
				bgpAdv("a1", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"later", "also-later"} })),
				bgpAdv("a2", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"later"} })),
			),
		},
		{
			name: "defined and not yet defined aliases",
			res: ClusterResources{
				Communities: []metallbv1beta1.Community{communities("c", "mine", "1:1")},
				Pools:       []maglbv1beta1.IPAddressPool{pool("p", "10.0.0.0/24")},
				BGPAdvs: []metallbv1beta1.BGPAdvertisement{
					bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"mine", "later"} })),
				},
			},
		},
		{
			name:      "a string with ':' must be a community value",
			res:       advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"1:2:3"} }))),
			want:      `bgpadvertisement "a": spec.communities[0]: invalid community "1:2:3" in BGP advertisement: invalid community format: 1:2:3`,
			transient: true,
		},
		{
			name: "existing BFD profile is still checked",
			res: ClusterResources{
				BFDProfiles: []metallbv1beta1.BFDProfile{bfdProfile("echo", metallbv1beta1.BFDProfileSpec{EchoMode: ptrTo(true)})},
				Peers:       []metallbv1beta2.BGPPeer{peer("p", ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.BFDProfile = "echo" }))},
				Pools:       []maglbv1beta1.IPAddressPool{pool("v6", "2001:db8::/64")},
				BGPAdvs:     []metallbv1beta1.BGPAdvertisement{bgpAdv("adv", metallbv1beta1.BGPAdvertisementSpec{})},
			},
			want: `bgpadvertisement "adv": spec.peers: pool v6 has bgpadvertisement adv which references peer p which has bfd echo enabled, which is not possible`,
		},
		{
			name: "existing password secret is still checked",
			res: withSecret(peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.PasswordSecret = corev1.SecretReference{Name: "secret"} })),
				corev1.Secret{ObjectMeta: meta("secret", nil), Type: corev1.SecretTypeOpaque}),
			want: `bgppeer "p": spec.passwordSecret: secret type mismatch on "metallb-system"/"secret", type "kubernetes.io/basic-auth" is expected`,
		},
		{
			name: "password and a missing password secret",
			res: peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) {
				s.Password, s.PasswordSecret = "pw", corev1.SecretReference{Name: "later"}
			})),
			want: `bgppeer "p": spec.passwordSecret: can not have both password and secret ref set in peer config "metallb-system"/"p"`,
		},
		{
			name: "bad literal community",
			res:  advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"later", "70000:1"} }))),
			want: `bgpadvertisement "a": spec.communities[1]: invalid community "70000:1" in BGP advertisement: invalid community value: ...`,
		},
		{
			name: "other errors are reported",
			res:  pools(pool("p", "10.0.0.0/33")),
			want: `ipaddresspool "p": spec.addresses[0]: invalid CIDR "10.0.0.0/33"`,
		},
		{
			name:     "a BFD profile created later, in native mode",
			res:      peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.BFDProfile = "later" })),
			validate: ValidationFor("native"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			validate := tc.validate
			if validate == nil {
				validate = DontValidate
			}
			before := clusterResourcesCopy(tc.res)
			err := ValidateForWebhook(tc.res, validate)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("webhook refused: %v", err)
				}
			} else {
				checkError(t, err, tc.want, tc.transient)
			}
			if diff := cmp.Diff(before, tc.res); diff != "" {
				t.Errorf("the webhook changed its input (-before +after):\n%s", diff)
			}
		})
	}
}

// The resources the webhook admits while a reference dangles give a TransientError in
// For, and build once the referenced object exists.
func TestTransientErrorsResolve(t *testing.T) {
	tests := []struct {
		name     string
		res      ClusterResources
		complete func(*ClusterResources)
	}{
		{
			name: "BFD profile",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.BFDProfile = "later" })),
			complete: func(res *ClusterResources) {
				res.BFDProfiles = []metallbv1beta1.BFDProfile{bfdProfile("later", metallbv1beta1.BFDProfileSpec{})}
			},
		},
		{
			name: "password secret",
			res:  peers(ebgpPeer(func(s *metallbv1beta2.BGPPeerSpec) { s.PasswordSecret = corev1.SecretReference{Name: "later"} })),
			complete: func(res *ClusterResources) {
				res.PasswordSecrets = map[string]corev1.Secret{"later": basicAuthSecret("later", "pw")}
			},
		},
		{
			name: "community alias",
			res:  advertised(bgpAdv("a", advSpec(func(s *metallbv1beta1.BGPAdvertisementSpec) { s.Communities = []string{"later"} }))),
			complete: func(res *ClusterResources) {
				res.Communities = []metallbv1beta1.Community{communities("c", "later", "1:1")}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateForWebhook(tc.res, DontValidate); err != nil {
				t.Fatalf("webhook refused: %v", err)
			}
			if _, err := For(tc.res, DontValidate); !errors.As(err, &TransientError{}) {
				t.Errorf("For: got %v, want a TransientError", err)
			}
			tc.complete(&tc.res)
			if _, err := For(tc.res, DontValidate); err != nil {
				t.Errorf("For once complete: %v", err)
			}
		})
	}
}

func clusterResourcesCopy(res ClusterResources) ClusterResources {
	out := ClusterResources{PasswordSecrets: maps.Clone(res.PasswordSecrets)}
	for _, p := range res.Pools {
		out.Pools = append(out.Pools, *p.DeepCopy())
	}
	for _, p := range res.Peers {
		out.Peers = append(out.Peers, *p.DeepCopy())
	}
	for _, p := range res.BFDProfiles {
		out.BFDProfiles = append(out.BFDProfiles, *p.DeepCopy())
	}
	for _, a := range res.BGPAdvs {
		out.BGPAdvs = append(out.BGPAdvs, *a.DeepCopy())
	}
	for _, a := range res.L2Advs {
		out.L2Advs = append(out.L2Advs, *a.DeepCopy())
	}
	for _, c := range res.Communities {
		out.Communities = append(out.Communities, *c.DeepCopy())
	}
	return out
}
