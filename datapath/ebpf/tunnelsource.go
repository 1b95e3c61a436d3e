// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// withInterfaceSources sets the tunnel sources left unset to the interface's own address of
// each family, then applies the other defaults. Backends allow tunnelled packets by source,
// and the node's address is what they can learn from the LB cluster's Nodes.
func withInterfaceSources(o Options) (Options, error) {
	if o.Interface != "" && (!o.TunnelSource4.IsValid() || !o.TunnelSource6.IsValid()) {
		l, err := netlink.LinkByName(o.Interface)
		if err != nil {
			return o, fmt.Errorf("looking up %s: %w", o.Interface, err)
		}
		list, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return o, fmt.Errorf("listing the addresses of %s: %w", o.Interface, err)
		}
		var addrs []netip.Addr
		for _, a := range list {
			if addr, ok := netip.AddrFromSlice(a.IP); ok {
				addrs = append(addrs, addr.Unmap())
			}
		}
		own4, own6 := ownSources(addrs)
		if !o.TunnelSource4.IsValid() {
			o.TunnelSource4 = own4
		}
		if !o.TunnelSource6.IsValid() {
			o.TunnelSource6 = own6
		}
	}
	return o.withDefaults()
}

// ownSources picks, per family, the first global unicast address as a single-address prefix
// (zero when there is none): no host bits, so every flow has this source.
func ownSources(addrs []netip.Addr) (v4, v6 netip.Prefix) {
	for _, a := range addrs {
		if !a.IsGlobalUnicast() {
			continue
		}
		if a.Is4() && !v4.IsValid() {
			v4 = netip.PrefixFrom(a, 32)
		}
		if a.Is6() && !v6.IsValid() {
			v6 = netip.PrefixFrom(a, 128)
		}
	}
	return v4, v6
}
