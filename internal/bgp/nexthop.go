// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// crossFamilyNextHop returns the next hop for routes of the other family than the session
// to peer: a global address of that family on the interface the session leaves from (the
// one holding src, or the one the route to peer uses). The peer must reach it directly, as
// it reaches the session's own address.
func crossFamilyNextHop(peer, src netip.Addr) (netip.Addr, error) {
	linkIndex, err := sessionLinkIndex(peer, src)
	if err != nil {
		return netip.Addr{}, err
	}
	link, err := netlink.LinkByIndex(linkIndex)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %d: %w", linkIndex, err)
	}
	family := netlink.FAMILY_V6
	if peer.Is6() {
		family = netlink.FAMILY_V4
	}
	addrs, err := netlink.AddrList(link, family)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		usable := a.Scope == unix.RT_SCOPE_UNIVERSE && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED|unix.IFA_F_DEPRECATED) == 0
		if addr, ok := netip.AddrFromSlice(a.IP); ok && usable {
			return addr.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no global address of the other family on %s", link.Attrs().Name)
}

func sessionLinkIndex(peer, src netip.Addr) (int, error) {
	if src.IsValid() {
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return 0, err
		}
		for _, a := range addrs {
			if addr, ok := netip.AddrFromSlice(a.IP); ok && addr.Unmap() == src {
				return a.LinkIndex, nil
			}
		}
		return 0, fmt.Errorf("source address %s is on no interface", src)
	}
	routes, err := netlink.RouteGet(net.IP(peer.AsSlice()))
	if err != nil {
		return 0, fmt.Errorf("route to %s: %w", peer, err)
	}
	if len(routes) == 0 || routes[0].LinkIndex == 0 {
		return 0, errors.New("no route to " + peer.String())
	}
	return routes[0].LinkIndex, nil
}
