// SPDX-License-Identifier: Apache-2.0

// Package lbservice is what MetalLB reads of a LoadBalancer Service, shared by the controller
// and the speaker: its key, whether this instance's load balancer class is in charge of it,
// its annotations (metallb.io and legacy metallb.universe.tf) and its ingress IPs.
package lbservice

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// Service annotations read and written by the allocation, with the names MetalLB uses.
const (
	// AnnotationAddressPool names the pool the service wants its addresses from.
	AnnotationAddressPool = "metallb.io/address-pool"
	// AnnotationLoadBalancerIPs lists the addresses the service wants, comma-separated:
	// one address, or one of each family.
	AnnotationLoadBalancerIPs = "metallb.io/loadBalancerIPs"
	// AnnotationIPAllocatedFromPool is set by the controller to the pool the service's
	// addresses come from.
	AnnotationIPAllocatedFromPool = "metallb.io/ip-allocated-from-pool"
	// AnnotationAllowSharedIP is the sharing key: services with the same key may share an
	// address when their ports do not overlap.
	AnnotationAllowSharedIP = "metallb.io/allow-shared-ip"

	// LegacyAnnotationPrefix prefixes the deprecated annotations, still honoured when the
	// metallb.io one is absent.
	LegacyAnnotationPrefix = "metallb.universe.tf"

	LegacyAnnotationAddressPool         = LegacyAnnotationPrefix + "/address-pool"
	LegacyAnnotationLoadBalancerIPs     = LegacyAnnotationPrefix + "/loadBalancerIPs"
	LegacyAnnotationIPAllocatedFromPool = LegacyAnnotationPrefix + "/ip-allocated-from-pool"
	LegacyAnnotationAllowSharedIP       = LegacyAnnotationPrefix + "/allow-shared-ip"
)

// AnnotationValue returns the value of the metallb.io annotation when the service has it,
// even empty, and the legacy one otherwise.
func AnnotationValue(annotations map[string]string, current, legacy string) string {
	if v, ok := annotations[current]; ok {
		return v
	}
	return annotations[legacy]
}

// Key names a service: "namespace/name".
func Key(svc *corev1.Service) string {
	return svc.Namespace + "/" + svc.Name
}

// SharingKey is the service's allow-shared-ip annotation; the metallb.io one wins when
// both are set.
func SharingKey(svc *corev1.Service) string {
	return AnnotationValue(svc.Annotations, AnnotationAllowSharedIP, LegacyAnnotationAllowSharedIP)
}

// Handles tells whether an instance started with lbClass (the --lb-class flag, "" when
// unset) is in charge of svc: without a class, only services that name none; with one,
// only services that name it. A nil service (a deletion) is always handled.
func Handles(svc *corev1.Service, lbClass string) bool {
	if svc == nil {
		return true
	}
	if svc.Spec.LoadBalancerClass == nil {
		return lbClass == ""
	}
	return *svc.Spec.LoadBalancerClass == lbClass
}

// IngressIPs returns the addresses of a load balancer status, skipping entries without one.
func IngressIPs(status corev1.LoadBalancerStatus) []netip.Addr {
	var ips []netip.Addr
	for _, ing := range status.Ingress {
		if ip := ParseIP(ing.IP); ip.IsValid() {
			ips = append(ips, ip)
		}
	}
	return ips
}

// ParseIP parses an address as Kubernetes writes them: no zone, IPv4-mapped addresses as
// IPv4. It returns the zero Addr for anything else.
func ParseIP(s string) netip.Addr {
	addr, err := netip.ParseAddr(s)
	if err != nil || addr.Zone() != "" {
		return netip.Addr{}
	}
	return addr.Unmap()
}
