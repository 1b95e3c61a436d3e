// SPDX-License-Identifier: Apache-2.0

package backendagent

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// allowedSources is the allowlist: the configured prefixes and each load balancer node's
// InternalIPs as single addresses, sorted, without duplicates.
func allowedSources(configured []netip.Prefix, lbNodes []*corev1.Node) []netip.Prefix {
	var sources []netip.Prefix
	for _, p := range configured {
		sources = append(sources, p.Masked())
	}
	for _, node := range lbNodes {
		for _, a := range node.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			if addr, err := netip.ParseAddr(a.Address); err == nil {
				addr = addr.Unmap()
				sources = append(sources, netip.PrefixFrom(addr, addr.BitLen()))
			}
		}
	}
	slices.SortFunc(sources, comparePrefixes)
	return slices.Compact(sources)
}

// nodeAddresses are the addresses tunnelled packets may be sent to: the node's global
// unicast addresses (not loopback, link-local or multicast), sorted, without duplicates.
func nodeAddresses(addrs []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if a = a.Unmap(); a.IsGlobalUnicast() {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
