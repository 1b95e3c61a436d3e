// SPDX-License-Identifier: Apache-2.0

package lbservice

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestHandles(t *testing.T) {
	service := func() *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "a"}}
	}
	class := func(c string) *corev1.Service {
		s := service()
		s.Spec.LoadBalancerClass = &c
		return s
	}
	for _, tc := range []struct {
		desc    string
		svc     *corev1.Service
		lbClass string
		want    bool
	}{
		{"no class, no flag", service(), "", true},
		{"no class, flag", service(), "maglb", false},
		{"class, no flag", class("other"), "", false},
		{"same class", class("maglb"), "maglb", true},
		{"other class", class("other"), "maglb", false},
		{"deletion", nil, "maglb", true},
	} {
		if got := Handles(tc.svc, tc.lbClass); got != tc.want {
			t.Errorf("%s: Handles = %v, want %v", tc.desc, got, tc.want)
		}
	}
}

func TestIngressIPs(t *testing.T) {
	status := corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
		{IP: "192.0.2.1"}, {Hostname: "lb.example"}, {IP: "::ffff:192.0.2.2"}, {IP: "fe80::1%eth0"}, {IP: "2001:db8::1"},
	}}
	want := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1")}
	if got := IngressIPs(status); !slices.Equal(got, want) {
		t.Errorf("IngressIPs = %v, want %v", got, want)
	}
}

func TestSharingKey(t *testing.T) {
	for _, tc := range []struct {
		annotations map[string]string
		want        string
	}{
		{nil, ""},
		{map[string]string{LegacyAnnotationAllowSharedIP: "old"}, "old"},
		{map[string]string{LegacyAnnotationAllowSharedIP: "old", AnnotationAllowSharedIP: "new"}, "new"},
		{map[string]string{LegacyAnnotationAllowSharedIP: "old", AnnotationAllowSharedIP: ""}, ""},
	} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Annotations: tc.annotations}}
		if got := SharingKey(svc); got != tc.want {
			t.Errorf("%v: SharingKey = %q, want %q", tc.annotations, got, tc.want)
		}
	}
}
