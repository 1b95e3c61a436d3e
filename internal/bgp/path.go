// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/maglb/maglb/internal/announce"
)

var (
	ipv4Unicast = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	ipv6Unicast = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

func familyOf(a netip.Addr) *api.Family {
	if a.Is4() {
		return ipv4Unicast
	}
	return ipv6Unicast
}

// Path is a route with the next hop it is announced with. Several paths of one prefix
// with different next hops go out together to peers that receive ADD-PATH (the
// reflector's aggregates, one path per LB node); to the others only the best one.
type Path struct {
	announce.Route
	// NextHop is kept as it is towards every peer; invalid: the session's local address.
	NextHop netip.Addr
}

// pathKey identifies a path in GoBGP's RIB: its prefix and next hop.
type pathKey struct {
	prefix  netip.Prefix
	nextHop netip.Addr
}

// pathID is the path identifier of the path with next hop nh: distinct next hops of one
// prefix need distinct identifiers (GoBGP replaces a path of the same identifier). 0 for
// the session's own address, the speaker's only path of a prefix.
func pathID(nh netip.Addr) uint32 {
	if !nh.IsValid() {
		return 0
	}
	if nh.Is4() {
		return max(1, binary.BigEndian.Uint32(nh.AsSlice()))
	}
	h := fnv.New32a()
	h.Write(nh.AsSlice())
	return max(1, h.Sum32())
}

// newPath is the locally originated path of key carrying tags.
func newPath(key pathKey, tags []tag) *apiutil.Path {
	prefix := key.prefix
	// prefix is valid and masked (SetPaths checks), so neither constructor can fail.
	nlri, _ := bgp.NewIPAddrPrefix(prefix)
	large := make([]*bgp.LargeCommunity, 0, len(tags))
	for _, t := range tags {
		large = append(large, bgp.NewLargeCommunity(tagASN, t.owner, t.group))
	}
	attrs := []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		bgp.NewPathAttributeLargeCommunities(large),
	}
	// GoBGP replaces an unspecified next hop with the session's local address.
	family, nextHop := bgp.RF_IPv4_UC, netip.IPv4Unspecified()
	if prefix.Addr().Is6() {
		family, nextHop = bgp.RF_IPv6_UC, netip.IPv6Unspecified()
	}
	if key.nextHop.IsValid() {
		nextHop = key.nextHop
	}
	if family == bgp.RF_IPv4_UC {
		nh, _ := bgp.NewPathAttributeNextHop(nextHop)
		attrs = append(attrs, nh)
	} else {
		mp, _ := bgp.NewPathAttributeMpReachNLRI(family, []bgp.PathNLRI{{NLRI: nlri}}, nextHop)
		attrs = append(attrs, mp)
	}
	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: attrs, RemoteID: pathID(key.nextHop)}
}
