// SPDX-License-Identifier: Apache-2.0

package speakercontroller

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	maglbv1alpha1 "github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/announce"
)

// An in-cluster slice names each endpoint's node; a projected one names workload nodes by
// address only, weighted by its annotation (1 for an address it leaves out).
func TestEndpointsByService(t *testing.T) {
	slice := func(name, managedBy string, annotations map[string]string, endpoints ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name + "-abc", Annotations: annotations, Labels: map[string]string{
				discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: managedBy,
			}},
			Endpoints: endpoints,
		}
	}
	endpoint := func(addr, node string, ready bool) discoveryv1.Endpoint {
		e := discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}
		if node != "" {
			e.NodeName = ptr.To(node)
		}
		return e
	}
	got := endpointsByService([]*discoveryv1.EndpointSlice{
		slice("web", "endpointslice-controller.k8s.io", nil, endpoint("10.244.1.5", "be1", true), endpoint("10.244.2.5", "be2", false)),
		slice("projected", maglbv1alpha1.EndpointSliceManagedBy,
			map[string]string{maglbv1alpha1.AnnotationEndpointWeights: "172.31.0.31=3"},
			endpoint("172.31.0.31", "", true), endpoint("172.31.0.32", "", true)),
		slice("unlabelled-weights", "someone-else", map[string]string{maglbv1alpha1.AnnotationEndpointWeights: "10.0.0.9=4"},
			endpoint("10.0.0.9", "", true)),
	}, &memo[sliceEndpoints]{})
	want := map[types.NamespacedName][]announce.Endpoint{
		{Namespace: "ns", Name: "web"}: {
			{Addr: netip.MustParseAddr("10.244.1.5"), Node: "be1", Ready: true},
			{Addr: netip.MustParseAddr("10.244.2.5"), Node: "be2"},
		},
		{Namespace: "ns", Name: "projected"}: {
			{Addr: netip.MustParseAddr("172.31.0.31"), Ready: true, Weight: 3},
			{Addr: netip.MustParseAddr("172.31.0.32"), Ready: true, Weight: 1},
		},
		{Namespace: "ns", Name: "unlabelled-weights"}: {
			{Addr: netip.MustParseAddr("10.0.0.9"), Ready: true},
		},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
}

// Across passes a slice's endpoints are derived again only when its resourceVersion or UID
// changes; two slices of one service add up without either's remembered endpoints changing;
// a deleted slice's are forgotten.
func TestEndpointsByServiceRemembersUnchangedSlices(t *testing.T) {
	slice := func(name, version, addr string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name), ResourceVersion: version,
				Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{addr}}},
		}
	}
	addrs := func(eps []announce.Endpoint) []string {
		var out []string
		for _, e := range eps {
			out = append(out, e.Addr.String())
		}
		return out
	}
	web := types.NamespacedName{Namespace: "ns", Name: "web"}
	var m memo[sliceEndpoints]
	passes := []struct {
		name   string
		slices []*discoveryv1.EndpointSlice
		want   []string
	}{
		{"first", []*discoveryv1.EndpointSlice{slice("a", "1", "10.0.0.1"), slice("b", "1", "10.0.0.2")}, []string{"10.0.0.1", "10.0.0.2"}},
		// Same versions, other content: remembered (a cached object changes only with its version).
		{"unchanged versions", []*discoveryv1.EndpointSlice{slice("a", "1", "10.9.9.9"), slice("b", "1", "10.0.0.2")}, []string{"10.0.0.1", "10.0.0.2"}},
		{"a changed", []*discoveryv1.EndpointSlice{slice("a", "2", "10.0.0.3"), slice("b", "1", "10.0.0.2")}, []string{"10.0.0.3", "10.0.0.2"}},
		{"b deleted", []*discoveryv1.EndpointSlice{slice("a", "2", "10.0.0.3")}, []string{"10.0.0.3"}},
		{"b back with its old version", []*discoveryv1.EndpointSlice{slice("a", "2", "10.0.0.3"), slice("b", "1", "10.0.0.4")}, []string{"10.0.0.3", "10.0.0.4"}},
	}
	for _, p := range passes {
		got := addrs(endpointsByService(p.slices, &m)[web])
		if diff := cmp.Diff(p.want, got); diff != "" {
			t.Errorf("%s pass: endpoints of %s (-want +got):\n%s", p.name, web, diff)
		}
	}
}
