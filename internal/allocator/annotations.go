// SPDX-License-Identifier: Apache-2.0

package allocator

import "strings"

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

// annotationValue returns the value of the metallb.io annotation when the service has it,
// even empty, and the legacy one otherwise.
func annotationValue(annotations map[string]string, current, legacy string) string {
	if v, ok := annotations[current]; ok {
		return v
	}
	return annotations[legacy]
}

// currentFor returns the metallb.io annotation that replaces a legacy one, and false
// when key is not of the form metallb.universe.tf/<name>.
func currentFor(key string) (string, bool) {
	name, ok := strings.CutPrefix(key, LegacyAnnotationPrefix+"/")
	if !ok {
		return "", false
	}
	return "metallb.io/" + name, true
}
