// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"math"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nextHop is where the program sends a backend's packets without asking the FIB: the output
// interface, the MACs of the frame and the MTU packets must fit once encapsulated. The zero
// value means "ask the FIB"; local means the backend is this node.
type nextHop struct {
	ifindex   uint32
	sourceMAC [6]byte
	mac       [6]byte
	mtu       uint16
	local     bool
}

// nextHopResolver reads next hops from the routing and neighbour tables of the namespace it
// was created in.
type nextHopResolver struct {
	handle *netlink.Handle
}

func newNextHopResolver() (*nextHopResolver, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	return &nextHopResolver{handle: h}, nil
}

func (r *nextHopResolver) Close() error {
	r.handle.Close()
	return nil
}

type neighbourKey struct {
	ifindex int
	addr    netip.Addr
}

// neighbours is a snapshot of the resolved neighbour entries.
type neighbours map[neighbourKey]net.HardwareAddr

const usableNeighbourStates = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT

func (r *nextHopResolver) neighbours() (neighbours, error) {
	list, err := r.handle.NeighList(0, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	snapshot := neighbours{}
	for _, n := range list {
		addr, ok := netip.AddrFromSlice(n.IP)
		if ok && n.State&usableNeighbourStates != 0 && len(n.HardwareAddr) == 6 {
			snapshot[neighbourKey{n.LinkIndex, addr.Unmap()}] = n.HardwareAddr
		}
	}
	return snapshot, nil
}

// resolve returns the backend's next hop. When the neighbour is not resolved yet it asks the
// kernel to resolve it and keep it resolved (a managed entry) and returns the zero next hop:
// the program uses the FIB until a later Sync caches the result. A backend that is one of the
// namespace's own addresses (a local route) is this node.
func (r *nextHopResolver) resolve(backend netip.Addr, known neighbours) nextHop {
	routes, err := r.handle.RouteGet(backend.AsSlice())
	if err != nil || len(routes) == 0 {
		return nextHop{}
	}
	route := routes[0]
	if route.Type == unix.RTN_LOCAL {
		return nextHop{local: true}
	}
	if route.LinkIndex == 0 {
		return nextHop{}
	}
	gateway := backend
	if addr, ok := netip.AddrFromSlice(route.Gw); ok && !addr.IsUnspecified() {
		gateway = addr.Unmap()
	}
	mac, ok := known[neighbourKey{route.LinkIndex, gateway}]
	if !ok {
		r.requestResolution(route.LinkIndex, gateway)
		return nextHop{}
	}
	iface, err := r.handle.LinkByIndex(route.LinkIndex)
	if err != nil || len(iface.Attrs().HardwareAddr) != 6 {
		return nextHop{}
	}
	return nextHop{
		ifindex:   uint32(route.LinkIndex),
		sourceMAC: [6]byte(iface.Attrs().HardwareAddr),
		mac:       [6]byte(mac),
		mtu:       pathMTU(route.MTU, iface.Attrs().MTU),
	}
}

// pathMTU is the route's MTU where it sets one below the interface's.
func pathMTU(route, link int) uint16 {
	mtu := link
	if route > 0 && route < link {
		mtu = route
	}
	return uint16(min(mtu, math.MaxUint16))
}

func (r *nextHopResolver) requestResolution(ifindex int, addr netip.Addr) {
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	// Best effort: without it the FIB path still works once the kernel resolved the
	// neighbour for other traffic.
	_ = r.handle.NeighSet(&netlink.Neigh{
		LinkIndex: ifindex,
		Family:    family,
		IP:        addr.AsSlice(),
		State:     netlink.NUD_NONE,
		FlagsExt:  netlink.NTF_EXT_MANAGED,
	})
}
