// SPDX-License-Identifier: Apache-2.0

package allocator

import (
	"github.com/maglb/maglb/internal/lbservice"

	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// Family is the address family of a set of addresses: the strings are the ones that
// appear in MetalLB's messages.
type Family string

const (
	IPv4          Family = "ipv4"
	IPv6          Family = "ipv6"
	DualStack     Family = "dual"
	UnknownFamily Family = "unknown"
)

// familyOf is the family of a valid address.
func familyOf(addr netip.Addr) Family {
	if addr.Is4() {
		return IPv4
	}
	return IPv6
}

// addrStrings renders addresses for messages; an unparsable address shows as "<nil>".
func addrStrings(addrs []netip.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		if a.IsValid() {
			out[i] = a.String()
		} else {
			out[i] = "<nil>"
		}
	}
	return out
}

// quoted renders addresses as a Go-quoted list, ["192.0.2.1" "2001:db8::1"].
func quoted(addrs []netip.Addr) string {
	return fmt.Sprintf("%q", addrStrings(addrs))
}

// familyOfStrings returns the family of one address, or of two addresses of different
// families (DualStack); anything else is an error.
func familyOfStrings(ips []string) (Family, error) {
	switch len(ips) {
	case 1:
		a := lbservice.ParseIP(ips[0])
		if !a.IsValid() {
			return UnknownFamily, fmt.Errorf("IPFamilyForAddresses: Invalid address %q", ips)
		}
		return familyOf(a), nil
	case 2:
		a, b := lbservice.ParseIP(ips[0]), lbservice.ParseIP(ips[1])
		if !a.IsValid() || !b.IsValid() {
			return UnknownFamily, fmt.Errorf("IPFamilyForAddresses: Invalid address %q", ips)
		}
		if a.Is4() == b.Is4() {
			return UnknownFamily, fmt.Errorf("IPFamilyForAddresses: same address family %q", ips)
		}
		return DualStack, nil
	default:
		return UnknownFamily, fmt.Errorf("IPFamilyForAddresses: invalid ips length %d %q", len(ips), ips)
	}
}

// familyOfAddrs is familyOfStrings for parsed addresses.
func familyOfAddrs(addrs []netip.Addr) (Family, error) {
	return familyOfStrings(addrStrings(addrs))
}

// ServiceFamily is the family of a service's cluster IPs (spec.clusterIPs, or
// spec.clusterIP when the list is empty).
func ServiceFamily(svc *corev1.Service) (Family, error) {
	if len(svc.Spec.ClusterIPs) > 0 {
		return familyOfStrings(svc.Spec.ClusterIPs)
	}
	return familyOfStrings([]string{svc.Spec.ClusterIP})
}

// policyOf is the service's IP family policy, SingleStack when unset.
func policyOf(svc *corev1.Service) corev1.IPFamilyPolicy {
	if svc.Spec.IPFamilyPolicy != nil {
		return *svc.Spec.IPFamilyPolicy
	}
	return corev1.IPFamilyPolicySingleStack
}

// familyChanged tells whether the service's current addresses no longer match the family
// of its cluster IPs; PreferDualStack tolerates a single address on a dual-stack service.
func familyChanged(current, cluster Family, policy corev1.IPFamilyPolicy) bool {
	switch {
	case current == UnknownFamily:
		return true
	case current == cluster:
		return false
	case cluster == DualStack && policy == corev1.IPFamilyPolicyPreferDualStack:
		return false
	}
	return true
}

// confusesBuggyFirmware reports IPv4 addresses ending in .0 or .255, which some consumer
// devices drop as a smurf protection.
func confusesBuggyFirmware(addr netip.Addr) bool {
	if !addr.Is4() {
		return false
	}
	last := addr.As4()[3]
	return last == 0 || last == 255
}

// lastAddr returns the highest address of a masked prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	if p.Addr().Is4() {
		b := p.Addr().As4()
		for i := p.Bits(); i < 32; i++ {
			b[i/8] |= 0x80 >> (i % 8)
		}
		return netip.AddrFrom4(b)
	}
	b := p.Addr().As16()
	for i := p.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom16(b)
}
