// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v4/api"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/config"
)

var (
	standard = config.Community{Global: 65000<<16 | 1}
	large    = config.Community{Large: true, Global: 1, LocalData1: 2, LocalData2: 3}
)

func TestTagRoutesMergesRoutesOfAPrefixPerPeer(t *testing.T) {
	e := newExportTags()
	vip := netip.MustParsePrefix("192.0.2.1/32")
	tags := e.tagPaths(routePaths(
		announce.Route{Prefix: vip, Communities: []config.Community{standard}, LocalPref: 100},
		announce.Route{Prefix: vip, Communities: []config.Community{large}, LocalPref: 300, Peers: []string{"a"}},
		announce.Route{Prefix: vip, Communities: []config.Community{standard}, LocalPref: 200, Peers: []string{"a"}},
	))[pathKey{prefix: vip}]
	if len(tags) != 2 || tags[0].owner != everyPeer || tags[1].owner != e.owner("a") {
		t.Fatalf("tags: %+v", tags)
	}
	if diff := cmp.Diff(attrs{communities: []config.Community{standard}, localPref: 100}, e.groupAttr[tags[0].group],
		cmp.AllowUnexported(attrs{})); diff != "" {
		t.Errorf("every peer's attributes (-want +got):\n%s", diff)
	}
	// Peer a gets every peer's route too: communities add up, the highest preference wins.
	want := attrs{communities: []config.Community{standard, large}, localPref: 300}
	if diff := cmp.Diff(want, e.groupAttr[tags[1].group], cmp.AllowUnexported(attrs{})); diff != "" {
		t.Errorf("peer a's attributes (-want +got):\n%s", diff)
	}
}

func TestPolicyGivesEachPeerItsAttributes(t *testing.T) {
	e := newExportTags()
	v6 := netip.MustParsePrefix("2001:db8::1/128")
	tags := e.tagPaths(routePaths(
		announce.Route{Prefix: v6, Communities: []config.Community{standard, large}, LocalPref: 200},
		announce.Route{Prefix: v6, Peers: []string{"ibgp"}},
	))[pathKey{prefix: v6}]
	inUse := map[tag]bool{}
	for _, tg := range tags {
		inUse[tg] = true
	}
	policy := e.policy([]exportPeer{
		{name: "ebgp", addr: netip.MustParseAddr("10.0.0.1")},
		{name: "ibgp", addr: netip.MustParseAddr("10.0.0.2"), ibgp: true, crossFamilyNextHop: netip.MustParseAddr("fd00::2")},
	}, inUse)

	statements := policy.Policies[0].Statements
	var got []string
	for _, s := range statements {
		got = append(got, s.Conditions.NeighborSet.Name+" "+s.Conditions.LargeCommunitySet.Name)
		if s.Actions.RouteAction != api.RouteAction_ROUTE_ACTION_ACCEPT || !slices.Equal(s.Actions.LargeCommunity.Communities, []string{"1:2:3"}) ||
			s.Actions.LargeCommunity.Type != api.CommunityAction_TYPE_REPLACE || !slices.Equal(s.Actions.Community.Communities, []string{"65000:1"}) {
			t.Errorf("statement %s: actions %v", s.Name, s.Actions)
		}
		ibgp := s.Conditions.NeighborSet.Name == "peer-1" // numbered when tagging the routes
		if ibgp != (s.Actions.LocalPref != nil) || (ibgp && s.Actions.LocalPref.Value != 200) {
			t.Errorf("statement %s: local preference %v", s.Name, s.Actions.LocalPref)
		}
		if crossFamily := s.Conditions.AfiSafiIn != nil; crossFamily != (s.Actions.Nexthop != nil) ||
			(crossFamily && (s.Actions.Nexthop.Address != "fd00::2" || s.Conditions.AfiSafiIn[0] != ipv6Unicast)) {
			t.Errorf("statement %s: families %v, next hop %v", s.Name, s.Conditions.AfiSafiIn, s.Actions.Nexthop)
		}
	}
	// ebgp gets the route for every peer; ibgp its own first, each for both families.
	want := []string{
		"peer-2 tag-0-1",
		"peer-1 tag-1-1", "peer-1 tag-1-1",
		"peer-1 tag-0-1", "peer-1 tag-0-1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("statements (-want +got):\n%s", diff)
	}
}

func routePaths(routes ...announce.Route) []Path {
	paths := make([]Path, len(routes))
	for i, r := range routes {
		paths[i] = Path{Route: r}
	}
	return paths
}
