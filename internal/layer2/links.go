// SPDX-License-Identifier: Apache-2.0

package layer2

import (
	"errors"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/sets"
)

// iface identifies an interface a responder is bound to. Name, MAC and MTU are part of
// the identity so that a renamed, re-created or reconfigured interface gets a fresh
// responder instead of one answering with stale data.
type iface struct {
	index int
	name  string
	mac   [6]byte
	mtu   int
}

func (i iface) netInterface() *net.Interface {
	return &net.Interface{Index: i.index, Name: i.name, HardwareAddr: i.hardwareAddr(), MTU: i.mtu}
}

func (i iface) hardwareAddr() net.HardwareAddr { return net.HardwareAddr(i.mac[:]) }

// link is an interface that may answer address resolution, and for which protocols.
type link struct {
	iface
	arp bool // broadcast-capable, so ARP requests reach it
	ndp bool // has a usable IPv6 link-local address to answer neighbor solicitations from
}

type protocol int

const (
	arpProtocol protocol = iota
	ndpProtocol
)

func (p protocol) String() string {
	if p == arpProtocol {
		return "ARP"
	}
	return "NDP"
}

// responderKey names one responder: a protocol on an interface.
type responderKey struct {
	iface
	protocol protocol
}

// scanLinks lists the interfaces of the current network namespace: the ones that may
// answer, and the names of all of them (down or not) to tell a missing interface from one
// that cannot answer right now.
func scanLinks() ([]link, sets.Set[string], error) {
	all, err := retryInterrupted(netlink.LinkList)
	if err != nil {
		return nil, nil, err
	}
	addrs, err := retryInterrupted(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V6) })
	if err != nil {
		return nil, nil, err
	}
	hasLinkLocal := map[int]bool{}
	for _, addr := range addrs {
		// A tentative address (duplicate address detection still running) cannot be bound.
		if addr.IP.IsLinkLocalUnicast() && addr.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
			hasLinkLocal[addr.LinkIndex] = true
		}
	}

	names := sets.New[string]()
	var links []link
	for _, l := range all {
		attrs := l.Attrs()
		names.Insert(attrs.Name)
		if attrs.Flags&net.FlagUp == 0 || attrs.Flags&net.FlagLoopback != 0 || len(attrs.HardwareAddr) != 6 ||
			attrs.RawFlags&unix.IFF_NOARP != 0 ||
			// A bridge port or bond member: its master answers for it.
			attrs.MasterIndex != 0 {
			continue
		}
		links = append(links, link{
			iface: iface{index: attrs.Index, name: attrs.Name, mac: [6]byte(attrs.HardwareAddr), mtu: attrs.MTU},
			arp:   attrs.Flags&net.FlagBroadcast != 0,
			ndp:   hasLinkLocal[attrs.Index],
		})
	}
	return links, names, nil
}

// retryInterrupted retries a netlink dump that the kernel interrupted because the table
// changed meanwhile; its partial result cannot be trusted.
func retryInterrupted[T any](dump func() ([]T, error)) ([]T, error) {
	const attempts = 4
	for attempt := 1; ; attempt++ {
		result, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || attempt == attempts {
			return result, err
		}
	}
}

// plan tells which announced IPs each responder answers for: an IP is answered on the
// interfaces it names (all eligible ones when it names none) by ARP for IPv4 and by NDP
// for IPv6. Interfaces that answer nothing get no responder.
func plan(links []link, announced map[netip.Addr][]string) map[responderKey]sets.Set[netip.Addr] {
	want := map[responderKey]sets.Set[netip.Addr]{}
	for ip, names := range announced {
		for _, l := range links {
			if len(names) > 0 && !slices.Contains(names, l.name) {
				continue
			}
			key := responderKey{iface: l.iface, protocol: ndpProtocol}
			capable := l.ndp
			if ip.Is4() {
				key.protocol, capable = arpProtocol, l.arp
			}
			if !capable {
				continue
			}
			if want[key] == nil {
				want[key] = sets.New[netip.Addr]()
			}
			want[key].Insert(ip)
		}
	}
	return want
}
