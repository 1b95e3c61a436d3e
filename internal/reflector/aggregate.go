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
					v = &vip{servers: servers, attrs: map[string]*attributes{}}
					g.vips[ip] = v
				}
				v.local = v.local || svc.LocalTraffic
				for _, peer := range to {
					v.attrs[peer] = v.attrs[peer].merge(adv)
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
			if key(v.servers) == set {
				for peer, a := range v.attrs {
					aggAttrs[peer] = aggAttrs[peer].mergeAttrs(a)
				}
				continue
			}
			paths.add(netip.PrefixFrom(ip, ip.BitLen()), v.servers, v.attrs)
		}
		paths.add(agg, g.vips[g.anyWith(set)].servers, aggAttrs)
	}
	return paths.list()
}

// nodeIndex holds each LB node's received prefixes: host routes in a set, the rest listed.
type nodeIndex map[netip.Addr]*received

type received struct {
	hosts      map[netip.Addr]bool
	aggregates []netip.Prefix
}

func indexReceived(byNode map[netip.Addr][]netip.Prefix) nodeIndex {
	idx := nodeIndex{}
	for nh, prefixes := range byNode {
		r := &received{hosts: map[netip.Addr]bool{}}
		for _, p := range prefixes {
			if p.IsSingleIP() {
				r.hosts[p.Addr()] = true
			} else {
				r.aggregates = append(r.aggregates, p)
			}
		}
		idx[nh] = r
	}
	return idx
}

// serving returns, sorted, the next hops of the nodes announcing a prefix that holds ip,
// of ip's family (a node's next hop is of the family of its routes).
func (idx nodeIndex) serving(ip netip.Addr) []netip.Addr {
	var servers []netip.Addr
	for nh, r := range idx {
		if nh.Is4() != ip.Is4() {
			continue
		}
		if r.hosts[ip] || slices.ContainsFunc(r.aggregates, func(p netip.Prefix) bool { return p.Contains(ip) }) {
			servers = append(servers, nh)
		}
	}
	slices.SortFunc(servers, netip.Addr.Compare)
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
		k := key(v.servers)
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
		if key(v.servers) == k {
			return ip
		}
	}
	return netip.Addr{}
}

func key(servers []netip.Addr) string {
	parts := make([]string, len(servers))
	for i, s := range servers {
		parts[i] = s.String()
	}
	return strings.Join(parts, ",")
}

// attributes are what one upstream peer gets with a prefix.
type attributes struct {
	communities []config.Community
	localPref   uint32
}

func (a *attributes) merge(adv *config.BGPAdvertisement) *attributes {
	return a.mergeAttrs(&attributes{communities: adv.Communities, localPref: adv.LocalPref})
}

// mergeAttrs adds up communities; the highest local preference wins.
func (a *attributes) mergeAttrs(b *attributes) *attributes {
	if a == nil {
		a = &attributes{}
	}
	communities := slices.Concat(a.communities, b.communities)
	slices.SortFunc(communities, config.CompareCommunities)
	return &attributes{communities: slices.Compact(communities), localPref: max(a.localPref, b.localPref)}
}

// pathSet collects paths: one per prefix, next hop and set of attributes, with the peers
// that get it.
type pathSet struct {
	paths []bgp.Path
	index map[string]int // by prefix, next hop and attributes
}

func (ps *pathSet) add(prefix netip.Prefix, servers []netip.Addr, byPeer map[string]*attributes) {
	if ps.index == nil {
		ps.index = map[string]int{}
	}
	for _, nh := range servers {
		for _, peer := range slices.Sorted(maps.Keys(byPeer)) {
			a := byPeer[peer]
			k := fmt.Sprint(prefix, nh, a.localPref, a.communities)
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
