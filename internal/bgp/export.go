// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/maglb/maglb/internal/config"
)

// GoBGP keeps one path per prefix, but each peer may need its own attributes for that
// prefix, or none of it. So the path in the RIB carries no attributes of its own, only tags
// (large communities of tagASN) saying which peers get it with which attributes, and the
// export policy turns a tag into the attributes for the matching peer, replacing every
// large community so no tag ever leaves the speaker. Since the tags are part of the path,
// any change in what a peer should get changes the path, and GoBGP's own diff sends the
// update or the withdrawal: an old path is matched with the tags it had.
const tagASN = 4294967295 // reserved (RFC 6996 / RFC 7300), never a real AS

const (
	exportPolicyName = "maglb-export"
	// everyPeer is the tag owner of routes without a peer list.
	everyPeer = 0
)

// attrs are the attributes one peer gets with one prefix.
type attrs struct {
	communities []config.Community // sorted, without duplicates
	localPref   uint32             // 0: none
}

func (a attrs) key() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", a.localPref)
	for _, c := range a.communities {
		b.WriteString(" " + c.String())
	}
	return b.String()
}

// merge combines what several routes of one prefix give the same peer: communities add
// up and the highest local preference wins.
func (a attrs) merge(b attrs) attrs {
	communities := slices.Concat(a.communities, b.communities)
	slices.SortFunc(communities, func(x, y config.Community) int { return cmp.Compare(x.String(), y.String()) })
	return attrs{communities: slices.Compact(communities), localPref: max(a.localPref, b.localPref)}
}

// tag marks a path for the peers of owner (everyPeer, or one peer name) with the
// attributes of group.
type tag struct {
	owner, group uint32
}

func (t tag) community() string { return fmt.Sprintf("%d:%d:%d", uint32(tagASN), t.owner, t.group) }
func (t tag) setName() string   { return fmt.Sprintf("tag-%d-%d", t.owner, t.group) }

// exportPeer is what the export policy needs to know of a peer.
type exportPeer struct {
	name string
	addr netip.Addr
	ibgp bool
	// crossFamilyNextHop is the next hop of the routes of the family the session's address
	// is not of; valid only when the session carries both families.
	crossFamilyNextHop netip.Addr
}

// exportTags numbers peer names and attribute groups. Numbers are never reused while
// a path may still carry them, so an old path is always read with its own meaning.
type exportTags struct {
	owners    map[string]uint32
	groups    map[string]uint32
	groupAttr map[uint32]attrs
	lastGroup uint32
}

func newExportTags() *exportTags {
	return &exportTags{owners: map[string]uint32{}, groups: map[string]uint32{}, groupAttr: map[uint32]attrs{}}
}

func (e *exportTags) owner(peer string) uint32 {
	id, ok := e.owners[peer]
	if !ok {
		id = uint32(len(e.owners) + 1)
		e.owners[peer] = id
	}
	return id
}

func (e *exportTags) group(a attrs) uint32 {
	k := a.key()
	id, ok := e.groups[k]
	if !ok {
		e.lastGroup++
		id = e.lastGroup
		e.groups[k] = id
		e.groupAttr[id] = a
	}
	return id
}

// tagPaths returns the sorted tags of each path (prefix and next hop) of paths.
func (e *exportTags) tagPaths(paths []Path) map[pathKey][]tag {
	type want struct {
		toAll  bool
		all    attrs
		byPeer map[string]attrs
	}
	wants := map[pathKey]*want{}
	for _, r := range paths {
		key := pathKey{r.Prefix, r.NextHop}
		w := wants[key]
		if w == nil {
			w = &want{byPeer: map[string]attrs{}}
			wants[key] = w
		}
		a := attrs{communities: r.Communities, localPref: r.LocalPref}
		if len(r.Peers) == 0 {
			w.toAll = true
			w.all = w.all.merge(a)
			continue
		}
		for _, p := range r.Peers {
			w.byPeer[p] = w.byPeer[p].merge(a)
		}
	}
	tags := make(map[pathKey][]tag, len(wants))
	for key, w := range wants {
		var ts []tag
		if w.toAll {
			ts = append(ts, tag{everyPeer, e.group(w.all)})
		}
		for p, a := range w.byPeer {
			// A peer's own tag is matched first, so it carries what every peer gets too.
			ts = append(ts, tag{e.owner(p), e.group(a.merge(w.all))})
		}
		slices.SortFunc(ts, func(x, y tag) int { return cmp.Or(cmp.Compare(x.owner, y.owner), cmp.Compare(x.group, y.group)) })
		tags[key] = ts
	}
	return tags
}

// forget drops the groups no tag in inUse refers to.
func (e *exportTags) forget(inUse map[tag]bool) {
	used := map[uint32]bool{}
	for t := range inUse {
		used[t.group] = true
	}
	for k, id := range e.groups {
		if !used[id] {
			delete(e.groups, k)
			delete(e.groupAttr, id)
		}
	}
}

// policy is the export policy that gives each peer the routes tagged for it.
func (e *exportTags) policy(peers []exportPeer, inUse map[tag]bool) *api.SetPoliciesRequest {
	tags := slices.SortedFunc(maps.Keys(inUse), func(x, y tag) int {
		return cmp.Or(cmp.Compare(x.owner, y.owner), cmp.Compare(x.group, y.group))
	})
	var sets []*api.DefinedSet
	for _, t := range tags {
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_LARGE_COMMUNITY, Name: t.setName(), List: []string{t.community()}})
	}
	var statements []*api.Statement
	for _, p := range peers {
		owner := e.owner(p.name)
		neighbors := fmt.Sprintf("peer-%d", owner)
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: neighbors,
			List: []string{netip.PrefixFrom(p.addr, p.addr.BitLen()).String()}})
		// A peer's own tags come first: they already include what every peer gets.
		for _, o := range []uint32{owner, everyPeer} {
			for _, t := range tags {
				if t.owner != o {
					continue
				}
				name := fmt.Sprintf("peer-%d-%s", owner, t.setName())
				if p.crossFamilyNextHop.IsValid() {
					s := e.statement(name+"-cross-family", neighbors, t, p)
					s.Conditions.AfiSafiIn = []*api.Family{familyOf(p.crossFamilyNextHop)}
					s.Actions.Nexthop = &api.NexthopAction{Address: p.crossFamilyNextHop.String()}
					statements = append(statements, s)
				}
				statements = append(statements, e.statement(name, neighbors, t, p))
			}
		}
	}
	return &api.SetPoliciesRequest{
		DefinedSets: sets,
		Policies:    []*api.Policy{{Name: exportPolicyName, Statements: statements}, importPolicy},
	}
}

// importPolicy keeps every received route out of the RIB (the speaker only announces), and
// lets the speaker's own paths in: GoBGP applies the import policy to those too.
var importPolicy = &api.Policy{Name: "maglb-import", Statements: []*api.Statement{{
	Name:       "local-paths",
	Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
	Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
}}}

var policyAssignments = []*api.PolicyAssignment{
	{Name: globalTable, Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
		Policies: []*api.Policy{{Name: exportPolicyName}}},
	{Name: globalTable, Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
		Policies: []*api.Policy{{Name: importPolicy.Name}}},
}

const globalTable = "global"

func (e *exportTags) statement(name, neighbors string, t tag, p exportPeer) *api.Statement {
	a := e.groupAttr[t.group]
	var standard []string
	large := []string{} // REPLACE with nothing still removes the tags
	for _, c := range a.communities {
		if c.Large {
			large = append(large, fmt.Sprintf("%d:%d:%d", c.Global, c.LocalData1, c.LocalData2))
		} else {
			standard = append(standard, c.String())
		}
	}
	actions := &api.Actions{
		RouteAction:    api.RouteAction_ROUTE_ACTION_ACCEPT,
		LargeCommunity: &api.CommunityAction{Type: api.CommunityAction_TYPE_REPLACE, Communities: large},
	}
	if len(standard) > 0 {
		actions.Community = &api.CommunityAction{Type: api.CommunityAction_TYPE_ADD, Communities: standard}
	}
	if p.ibgp && a.localPref != 0 {
		actions.LocalPref = &api.LocalPrefAction{Value: a.localPref}
	}
	return &api.Statement{
		Name: name,
		Conditions: &api.Conditions{
			NeighborSet:       &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: neighbors},
			LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: t.setName()},
		},
		Actions: actions,
	}
}
