// SPDX-License-Identifier: Apache-2.0

package config

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
)

// Validate rejects the resources a BGP implementation cannot honour. For runs it before
// anything else.
type Validate func(ClusterResources) error

// DontValidate accepts everything.
func DontValidate(ClusterResources) error { return nil }

// ValidationFor returns the restrictions of the BGP implementation bgpType names, as in
// METALLB_BGP_TYPE: "native" is the embedded GoBGP speaker; anything else has none.
func ValidationFor(bgpType string) Validate {
	if bgpType == "native" {
		return rejectUnsupportedByNative
	}
	return DontValidate
}

// rejectUnsupportedByNative returns the first setting the native speaker cannot honour,
// in upstream's wording. The native speaker embeds GoBGP, which does more than upstream's
// own BGP code: keepalive timers, connect times, graceful restart, sessions carrying both
// address families, IPv6 prefixes, large communities and BFD profiles are all accepted
// here although upstream's native mode refuses them; what GoBGP ignores of a BFD profile
// is reported by the speaker, which applies the rest.
func rejectUnsupportedByNative(res ClusterResources) error {
	for _, p := range res.Peers {
		obj, spec := objectRef{"bgppeer", p.Name}, p.Spec
		// An unnumbered peer has no address: name its interface instead.
		id := cmp.Or(spec.Address, spec.Interface)
		switch {
		case spec.VRFName != "":
			return obj.errorf("spec.vrf", "peer %s has vrf set on native bgp mode", id)
		case spec.DisableMP:
			return obj.errorf("spec.disableMP", "peer %s has disable MP flag set on native bgp mode", id)
		case spec.DynamicASN != "":
			return obj.errorf("spec.dynamicASN", "peer %s has dynamicASN set on native bgp mode", id)
		case spec.Interface != "":
			return obj.errorf("spec.interface", "peer %s has interface set on native bgp mode", id)
		case spec.LocalASN != 0:
			return obj.errorf("spec.localASN", "peer %s has localASN set on native bgp mode", id)
		}
	}
	for _, adv := range res.BGPAdvs {
		if adv.Spec.AsPathPrepend > 0 {
			return objectRef{"bgpadvertisement", adv.Name}.errorf("spec.asPathPrepend", "asPathPrepend is only supported by the frr-k8s backend")
		}
	}
	return nil
}

// ValidateForWebhook is what the admission webhooks run: validate, then For with a
// stand-in for every referenced object that does not exist yet, so that a resource is
// not refused because the one it names is created after it. Only such references are
// excused; everything else, including what a referenced object that exists implies,
// is checked.
func ValidateForWebhook(res ClusterResources, validate Validate) error {
	if err := validate(res); err != nil {
		return err
	}
	_, err := For(withStandIns(res), DontValidate)
	return err
}

// withStandIns returns res, without touching it, plus a neutral stand-in for each
// missing BFD profile, password secret and community alias that is referenced. As
// upstream does, only a string without ':' may be an alias yet to be defined; other
// strings must be community values.
func withStandIns(res ClusterResources) ClusterResources {
	profiles := sets.New[string]()
	for _, profile := range res.BFDProfiles {
		profiles.Insert(profile.Name)
	}
	res.BFDProfiles = slices.Clone(res.BFDProfiles)
	secrets := maps.Clone(res.PasswordSecrets)
	if secrets == nil {
		secrets = map[string]corev1.Secret{}
	}
	for _, peer := range res.Peers {
		if name := peer.Spec.BFDProfile; name != "" && !profiles.Has(name) {
			res.BFDProfiles = append(res.BFDProfiles, metallbv1beta1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: name}})
			profiles.Insert(name)
		}
		if name := peer.Spec.PasswordSecret.Name; name != "" {
			if _, ok := secrets[name]; !ok {
				secrets[name] = corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Name: name},
					Type:       corev1.SecretTypeBasicAuth,
					Data:       map[string][]byte{corev1.BasicAuthPasswordKey: nil},
				}
			}
		}
	}
	res.PasswordSecrets = secrets

	aliases := sets.New[string]()
	for _, cr := range res.Communities {
		for _, alias := range cr.Spec.Communities {
			aliases.Insert(alias.Name)
		}
	}
	var standIn metallbv1beta1.Community
	for _, adv := range res.BGPAdvs {
		for _, s := range adv.Spec.Communities {
			if !aliases.Has(s) && !strings.Contains(s, ":") {
				standIn.Spec.Communities = append(standIn.Spec.Communities, metallbv1beta1.CommunityAlias{Name: s, Value: "0:0"})
				aliases.Insert(s)
			}
		}
	}
	if len(standIn.Spec.Communities) > 0 {
		res.Communities = append(slices.Clone(res.Communities), standIn)
	}
	return res
}
