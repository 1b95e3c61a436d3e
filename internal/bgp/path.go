// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"net/netip"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
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

// newPath is the locally originated path of prefix carrying tags. Its next hop is
// unspecified, which GoBGP replaces with the session's local address.
func newPath(prefix netip.Prefix, tags []tag) *apiutil.Path {
	// prefix is valid and masked (SetRoutes checks), so neither constructor can fail.
	nlri, _ := bgp.NewIPAddrPrefix(prefix)
	large := make([]*bgp.LargeCommunity, 0, len(tags))
	for _, t := range tags {
		large = append(large, bgp.NewLargeCommunity(tagASN, t.owner, t.group))
	}
	attrs := []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		bgp.NewPathAttributeLargeCommunities(large),
	}
	family := bgp.RF_IPv4_UC
	if prefix.Addr().Is4() {
		nh, _ := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		attrs = append(attrs, nh)
	} else {
		family = bgp.RF_IPv6_UC
		mp, _ := bgp.NewPathAttributeMpReachNLRI(family, []bgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		attrs = append(attrs, mp)
	}
	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: attrs}
}
