// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"net/netip"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
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
func newPath(prefix netip.Prefix, tags []tag) *api.Path {
	nlri := mustAny(&api.IPAddressPrefix{Prefix: prefix.Addr().String(), PrefixLen: uint32(prefix.Bits())})
	large := make([]*api.LargeCommunity, 0, len(tags))
	for _, t := range tags {
		large = append(large, &api.LargeCommunity{GlobalAdmin: tagASN, LocalData1: t.owner, LocalData2: t.group})
	}
	attrs := []*anypb.Any{
		mustAny(&api.OriginAttribute{Origin: 0}), // IGP
		mustAny(&api.LargeCommunitiesAttribute{Communities: large}),
	}
	family := familyOf(prefix.Addr())
	if prefix.Addr().Is4() {
		attrs = append(attrs, mustAny(&api.NextHopAttribute{NextHop: "0.0.0.0"}))
	} else {
		attrs = append(attrs, mustAny(&api.MpReachNLRIAttribute{Family: family, NextHops: []string{"::"}, Nlris: []*anypb.Any{nlri}}))
	}
	return &api.Path{Family: family, Nlri: nlri, Pattrs: attrs}
}

// mustAny wraps m; marshalling GoBGP's own messages cannot fail.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}
