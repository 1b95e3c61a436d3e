// SPDX-License-Identifier: Apache-2.0

// Package reflector is MagLB's route reflector: the LB nodes' speakers announce their VIPs
// to it over iBGP, and it announces to the ToRs, per shard, the aggregates of those VIPs
// with one path per LB node that serves them (ADD-PATH, next hop = the node). Aggregate
// (this file) is its pure core; Run is the edge that feeds it from Kubernetes and GoBGP.
package reflector

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/bgp"
	"github.com/maglb/maglb/internal/config"
)

// Input is what the reflector knows.
type Input struct {
	Config   *config.Config
	Services []announce.Service
	// Received holds, by next hop (an LB node's address), the prefixes that node announces
	// to the reflector: VIP host routes, or aggregates an advertisement made on the node.
	Received map[netip.Addr][]netip.Prefix
	// Upstream names the reflector's own peers (the ToRs): the BGPPeers selecting its node.
	Upstream []string
}

// Aggregate returns the paths to announce to the upstream peers. Each VIP of a Service
// announced by at least one LB node falls in an aggregate: the advertisement's
// aggregation length when it is shorter than a host route, else the pool's prefix that
// holds it. An aggregate belongs to its pool's shard and gets one path per LB node of its
// node set, the set that serves the most ETP=Cluster VIPs inside (the most VIPs when all
// are ETP=Local): a node of that set serves every VIP the aggregate carries. A VIP
// announced by another set of nodes (ETP=Local served from other nodes, a node still
// syncing) keeps its host route, with one path per node of its own set, so that longest
// prefix match never sends its traffic to a node without it. An aggregate lies inside
// one pool (upstream refuses aggregation lengths shorter than a pool's prefixes), so
// inside one shard. Communities and local preference are those of the pool's
// advertisements that go to the upstream peer.
func Aggregate(in Input) []bgp.Path {
	nodes := indexReceived(in.Received)
	advAttrs := map[*config.BGPAdvertisement]*attributes{}
	groups := map[netip.Prefix]*group{}
	var order []netip.Prefix
	for _, svc := range in.Services {
		if len(svc.IPs) == 0 {
			continue
		}
		pool := announce.PoolOf(in.Config, svc)
		if pool == nil {
			continue
		}
		for _, adv := range pool.BGPAdvertisements {
			to := upstreamOf(adv, in.Upstream)
			if len(to) == 0 || !announce.SelectsService(adv.ServiceSelectors, svc) {
				continue
			}
			attrs := advAttrs[adv]
			if attrs == nil {
				attrs = attributesOf(adv)
				advAttrs[adv] = attrs
			}
			for _, ip := range svc.IPs {
				servers := nodes.serving(ip)
				agg, ok := aggregateOf(ip, pool, adv)
				if len(servers) == 0 || !ok {
					continue
				}
				g := groups[agg]
				if g == nil {
					g = &group{vips: map[netip.Addr]*vip{}}
					groups[agg] = g
					order = append(order, agg)
				}
				v := g.vips[ip]
				if v == nil {
					v = &vip{servers: servers, set: key(servers), attrs: map[string]*attributes{}}
					g.vips[ip] = v
				}
				v.local = v.local || svc.LocalTraffic
				for _, peer := range to {
					v.attrs[peer] = v.attrs[peer].merge(attrs)
				}
			}
		}
	}
	var paths pathSet
	for _, agg := range order {
		g := groups[agg]
		set := g.nodeSet()
		aggAttrs := map[string]*attributes{}
		for _, ip := range slices.SortedFunc(maps.Keys(g.vips), netip.Addr.Compare) {
			v := g.vips[ip]
			if v.set == set {
				for peer, a := range v.attrs {
					aggAttrs[peer] = aggAttrs[peer].merge(a)
				}
				continue
			}
			paths.add(netip.PrefixFrom(ip, ip.BitLen()), v.servers, v.attrs)
		}
		paths.add(agg, g.vips[g.anyWith(set)].servers, aggAttrs)
	}
	return paths.list()
}

// nodeIndex holds the LB nodes' received prefixes: by host route, its nodes' next hops
// (sorted), and by node, the other prefixes (aggregates made on the nodes).
type nodeIndex struct {
	hosts      map[netip.Addr][]netip.Addr
	aggregates map[netip.Addr][]netip.Prefix
}

func indexReceived(byNode map[netip.Addr][]netip.Prefix) nodeIndex {
	idx := nodeIndex{hosts: map[netip.Addr][]netip.Addr{}, aggregates: map[netip.Addr][]netip.Prefix{}}
	for _, nh := range slices.SortedFunc(maps.Keys(byNode), netip.Addr.Compare) {
		for _, p := range byNode[nh] {
			switch {
			case nh.Is4() != p.Addr().Is4():
				// Ignored: a node's next hop is of the family of its routes.
			case p.IsSingleIP():
				idx.hosts[p.Addr()] = append(idx.hosts[p.Addr()], nh)
			default:
				idx.aggregates[nh] = append(idx.aggregates[nh], p)
			}
		}
	}
	return idx
}

// serving returns, sorted, the next hops of the nodes announcing a prefix that holds ip.
// The caller must not modify it.
func (idx nodeIndex) serving(ip netip.Addr) []netip.Addr {
	servers := idx.hosts[ip]
	grown := false
	for nh, prefixes := range idx.aggregates {
		if slices.Contains(servers, nh) ||
			!slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			continue
		}
		if !grown {
			servers, grown = slices.Clone(servers), true
		}
		servers = append(servers, nh)
	}
	if grown {
		slices.SortFunc(servers, netip.Addr.Compare)
	}
	return servers
}

// upstreamOf returns the upstream peers adv goes to: those it names, every one when it
// names none.
func upstreamOf(adv *config.BGPAdvertisement, upstream []string) []string {
	if len(adv.Peers) == 0 {
		return upstream
	}
	return slices.DeleteFunc(slices.Clone(upstream), func(p string) bool { return !slices.Contains(adv.Peers, p) })
}

// aggregateOf returns the aggregate ip falls in under adv: the aggregation length when
// shorter than a host route, else the pool's prefix holding ip.
func aggregateOf(ip netip.Addr, pool *config.Pool, adv *config.BGPAdvertisement) (netip.Prefix, bool) {
	length := adv.AggregationLength
	if ip.Is6() {
		length = adv.AggregationLengthV6
	}
	if length > 0 && length < ip.BitLen() {
		p, err := ip.Prefix(length)
		return p, err == nil
	}
	i := slices.IndexFunc(pool.CIDRs, func(c netip.Prefix) bool { return c.Contains(ip) })
	if i < 0 {
		return netip.Prefix{}, false
	}
	return pool.CIDRs[i], true
}

// group is an aggregate's VIPs.
type group struct {
	vips map[netip.Addr]*vip
}

type vip struct {
	servers []netip.Addr // sorted
	set     string       // key(servers)
	local   bool         // of an ETP=Local service
	attrs   map[string]*attributes
}

// nodeSet returns the key of the node set serving the most ETP=Cluster VIPs (all VIPs
// when none is), ties to the larger set, then the lower key.
func (g *group) nodeSet() string {
	count := map[string]int{}
	size := map[string]int{}
	anyCluster := false
	for _, v := range g.vips {
		anyCluster = anyCluster || !v.local
	}
	for _, v := range g.vips {
		if anyCluster && v.local {
			continue
		}
		k := v.set
		count[k]++
		size[k] = len(v.servers)
	}
	best := ""
	for _, k := range slices.Sorted(maps.Keys(count)) {
		if best == "" || cmp.Or(cmp.Compare(count[k], count[best]), cmp.Compare(size[k], size[best])) > 0 {
			best = k
		}
	}
	return best
}

// anyWith returns a VIP served by the node set of key k.
func (g *group) anyWith(k string) netip.Addr {
	for ip, v := range g.vips {
		if v.set == k {
			return ip
		}
	}
	return netip.Addr{}
}

// key identifies a set of next hops of one family.
func key(servers []netip.Addr) string {
	b := make([]byte, 0, 16*len(servers))
	for _, s := range servers {
		a := s.As16()
		b = append(b, a[:]...)
	}
	return string(b)
}

// attributes are what one upstream peer gets with a prefix.
type attributes struct {
	communities    []config.Community
	localPref      uint32
	communitiesKey string // the communities, comparable
}

func attributesOf(adv *config.BGPAdvertisement) *attributes {
	return newAttributes(slices.Clone(adv.Communities), adv.LocalPref)
}

func newAttributes(communities []config.Community, localPref uint32) *attributes {
	slices.SortFunc(communities, config.CompareCommunities)
	communities = slices.Compact(communities)
	return &attributes{communities: communities, localPref: localPref, communitiesKey: fmt.Sprint(communities)}
}

// merge adds up communities; the highest local preference wins. Attributes are never
// modified: VIPs and aggregates share them.
func (a *attributes) merge(b *attributes) *attributes {
	switch {
	case a == nil:
		return b
	case a.communitiesKey != b.communitiesKey:
		return newAttributes(slices.Concat(a.communities, b.communities), max(a.localPref, b.localPref))
	case a.localPref >= b.localPref:
		return a
	default:
		return b
	}
}

// pathSet collects paths: one per prefix, next hop and set of attributes, with the peers
// that get it.
type pathSet struct {
	paths []bgp.Path
	index map[pathKey]int
}

type pathKey struct {
	prefix      netip.Prefix
	nextHop     netip.Addr
	localPref   uint32
	communities string
}

func (ps *pathSet) add(prefix netip.Prefix, servers []netip.Addr, byPeer map[string]*attributes) {
	if ps.index == nil {
		ps.index = map[pathKey]int{}
	}
	peers := slices.Sorted(maps.Keys(byPeer))
	for _, nh := range servers {
		for _, peer := range peers {
			a := byPeer[peer]
			k := pathKey{prefix, nh, a.localPref, a.communitiesKey}
			i, ok := ps.index[k]
			if !ok {
				i = len(ps.paths)
				ps.index[k] = i
				ps.paths = append(ps.paths, bgp.Path{NextHop: nh, Route: announce.Route{Prefix: prefix, Communities: a.communities, LocalPref: a.localPref}})
			}
			// A VIP in two aggregates (two advertisements) may bring its host route twice.
			if !slices.Contains(ps.paths[i].Peers, peer) {
				ps.paths[i].Peers = append(ps.paths[i].Peers, peer)
			}
		}
	}
}

func (ps pathSet) list() []bgp.Path {
	slices.SortFunc(ps.paths, func(a, b bgp.Path) int {
		return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()),
			a.NextHop.Compare(b.NextHop), strings.Compare(strings.Join(a.Peers, ","), strings.Join(b.Peers, ",")))
	})
	return ps.paths
}
