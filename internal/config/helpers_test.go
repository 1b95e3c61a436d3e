// SPDX-License-Identifier: Apache-2.0

package config

import (
	"net/netip"
	"time"

	"github.com/google/go-cmp/cmp"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// modelComparison compares models: selectors by their string form, addresses by value.
var modelComparison = cmp.Options{
	cmp.Comparer(func(a, b labels.Selector) bool { return a.String() == b.String() }),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func meta(name string, labels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: "metallb-system", Labels: labels}
}

func pool(name string, addresses ...string) maglbv1beta1.IPAddressPool {
	return maglbv1beta1.IPAddressPool{
		ObjectMeta: meta(name, nil),
		Spec: maglbv1beta1.IPAddressPoolSpec{
			IPAddressPoolSpec: metallbv1beta1.IPAddressPoolSpec{Addresses: addresses},
		},
	}
}

func poolWith(p maglbv1beta1.IPAddressPool, change func(*maglbv1beta1.IPAddressPool)) maglbv1beta1.IPAddressPool {
	change(&p)
	return p
}

func peer(name string, spec metallbv1beta2.BGPPeerSpec) metallbv1beta2.BGPPeer {
	return metallbv1beta2.BGPPeer{ObjectMeta: meta(name, nil), Spec: spec}
}

func bgpAdv(name string, spec metallbv1beta1.BGPAdvertisementSpec) metallbv1beta1.BGPAdvertisement {
	return metallbv1beta1.BGPAdvertisement{ObjectMeta: meta(name, nil), Spec: spec}
}

func l2Adv(name string, spec metallbv1beta1.L2AdvertisementSpec) metallbv1beta1.L2Advertisement {
	return metallbv1beta1.L2Advertisement{ObjectMeta: meta(name, nil), Spec: spec}
}

func bfdProfile(name string, spec metallbv1beta1.BFDProfileSpec) metallbv1beta1.BFDProfile {
	return metallbv1beta1.BFDProfile{ObjectMeta: meta(name, nil), Spec: spec}
}

// communities builds a Community resource from alias, value pairs.
func communities(name string, aliasValues ...string) metallbv1beta1.Community {
	cr := metallbv1beta1.Community{ObjectMeta: meta(name, nil)}
	for i := 0; i+1 < len(aliasValues); i += 2 {
		cr.Spec.Communities = append(cr.Spec.Communities, metallbv1beta1.CommunityAlias{Name: aliasValues[i], Value: aliasValues[i+1]})
	}
	return cr
}

func node(name string, labels map[string]string) corev1.Node {
	return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func namespace(name string, labels map[string]string) corev1.Namespace {
	return corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func basicAuthSecret(name, password string) corev1.Secret {
	return corev1.Secret{
		ObjectMeta: meta(name, nil),
		Type:       corev1.SecretTypeBasicAuth,
		Data:       map[string][]byte{corev1.BasicAuthPasswordKey: []byte(password)},
	}
}

func matchLabels(kv ...string) metav1.LabelSelector {
	selector := metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		selector.MatchLabels[kv[i]] = kv[i+1]
	}
	return selector
}

func matchExpression(key string, op metav1.LabelSelectorOperator, values ...string) metav1.LabelSelectorRequirement {
	return metav1.LabelSelectorRequirement{Key: key, Operator: op, Values: values}
}

func duration(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func ptrTo[T any](v T) *T { return &v }

func selector(s string) labels.Selector {
	parsed, err := labels.Parse(s)
	if err != nil {
		panic(err)
	}
	return parsed
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func mustCommunity(s string) Community {
	c, err := parseCommunity(s)
	if err != nil {
		panic(err)
	}
	return c
}
