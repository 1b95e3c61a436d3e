// SPDX-License-Identifier: Apache-2.0

// Package announce decides what one speaker announces and programs: BGP routes, the IPs it
// answers ARP/NDP for, and the services its datapath forwards. It is pure: the speaker feeds it
// the configuration, its view of nodes and services and the datapath's verdicts, and applies
// the plan it returns.
package announce

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/shard"
)

// Reasons a service is not announced from this node, as upstream's speaker logs them, plus
// MagLB's notInShard.
const (
	ReasonNotOwner                 = "notOwner"
	ReasonNoMatchingAdvertisement  = "noMatchingAdvertisement"
	ReasonNoEndpoints              = "noEndpoints"
	ReasonNoLocalEndpoints         = "noLocalEndpoints"
	ReasonNodeExcluded             = "nodeLabeledExcludeBalancers"
	ReasonNodeNetworkUnavailable   = "nodeNetworkUnavailable"
	ReasonNotInShard               = "notInShard"
	ReasonUnknownPool              = "unknownPool"
	ReasonSharedIPServiceSelectors = "sharedIPWithServiceSelector"
	// ReasonDatapathFailed: the datapath cannot forward one of the service's VIPs, so the
	// node announces none of them (announcing would blackhole the traffic).
	ReasonDatapathFailed = "datapathFailed"
)

// DatapathMode says how the node forwards VIP traffic.
type DatapathMode int

const (
	// KubeProxy: the node only announces; kube-proxy DNATs (upstream behaviour). With
	// ETP=Local only nodes with a ready local endpoint announce.
	KubeProxy DatapathMode = iota
	// EBPF: the node's XDP load balancer forwards to any backend, so every eligible node
	// announces whatever the traffic policy.
	EBPF
)

// Node is what the decisions need of a Node.
type Node struct {
	Name   string
	Labels map[string]string
	// Addrs are the node's InternalIPs, one per family on a dual-stack node: the datapath
	// reaches a backend node at its address of the VIP's family.
	Addrs []netip.Addr
	// Live: the node's speaker is running (it renews its lease).
	Live bool
	// NetworkUnavailable is the NodeNetworkUnavailable condition.
	NetworkUnavailable bool
}

// AddrOfFamily returns the node's first address of ip's family.
func (n Node) AddrOfFamily(ip netip.Addr) (netip.Addr, bool) {
	i := slices.IndexFunc(n.Addrs, func(a netip.Addr) bool { return a.Is4() == ip.Is4() })
	if i < 0 {
		return netip.Addr{}, false
	}
	return n.Addrs[i], true
}

// Endpoint is a ready-or-not endpoint of a service, from its EndpointSlices.
type Endpoint struct {
	Addr  netip.Addr
	Node  string
	Ready bool // upstream's "can serve": ready, or serving while terminating
	// Weight > 0 marks a node of a workload cluster (a projected Service's endpoint): the
	// datapath tunnels to Addr itself, with this weight, where that node's kube-proxy takes over.
	Weight uint32
}

// Port is a service port.
type Port struct {
	Protocol datapath.Protocol
	Port     uint16
}

// Service is a LoadBalancer Service with its allocated IPs.
type Service struct {
	Key          string // namespace/name
	Labels       map[string]string
	IPs          []netip.Addr
	Pool         string // from metallb.io/ip-allocated-from-pool; found from the IPs when empty
	LocalTraffic bool   // externalTrafficPolicy: Local
	SharedIP     bool   // has a metallb.io/allow-shared-ip key
	Ports        []Port
	Endpoints    []Endpoint
}

// Input is one speaker's view.
type Input struct {
	NodeName string
	Nodes    []Node
	Config   *config.Config
	Services []Service
	Datapath DatapathMode
	// Encap is how the datapath reaches backends.
	Encap datapath.Encap
	// ExcludeLabelIgnored is upstream's --ignore-exclude-lb.
	ExcludeLabelIgnored bool
	// DatapathFailed holds the VIPs the datapath could not program, with the reason: their
	// services are neither announced nor programmed from this node.
	DatapathFailed map[netip.Addr]error
}

// Route is one BGP announcement, as the plan lists it and package bgp announces it.
type Route struct {
	Prefix      netip.Prefix       // a VIP /32, /128 or an aggregate; masked
	Communities []config.Community // standard and large
	LocalPref   uint32             // sent to iBGP peers only (0: none)
	Peers       []string           // sorted names of the peers it goes to; empty: every peer
}

// Plan is what the node should announce and program.
type Plan struct {
	Routes []Route
	// L2 maps each IP this node answers ARP/NDP for to its interfaces (empty: all).
	L2 map[netip.Addr][]string
	// Datapath is what the XDP load balancer forwards (EBPF only).
	Datapath []datapath.Service
	// Services says, per service key, what this node does for it.
	Services map[string]ServiceState
}

// ServiceState is the node's decision for one service.
type ServiceState struct {
	Pool, Shard string
	// BGPPeers are the peers the service's IPs are announced to; empty when not announced.
	BGPPeers []string
	// L2Interfaces is non-nil when this node answers ARP/NDP for the service.
	L2Interfaces []string
	L2           bool
	// BGPReason and L2Reason say why not, when not.
	BGPReason, L2Reason string
	// DatapathError is why the datapath cannot forward the service (ReasonDatapathFailed).
	DatapathError error
}

// Decide computes the node's plan.
func Decide(in Input) Plan {
	plan := Plan{L2: map[netip.Addr][]string{}, Services: map[string]ServiceState{}}
	me := findNode(in.Nodes, in.NodeName)
	if me == nil || in.Config == nil {
		return plan
	}
	myPeers := peerNames(PeersOf(in.Config, me.Labels))
	routes := routeSet{}
	for _, svc := range in.Services {
		if len(svc.IPs) == 0 {
			continue
		}
		pool := PoolOf(in.Config, svc)
		if pool == nil {
			plan.Services[svc.Key] = ServiceState{BGPReason: ReasonUnknownPool, L2Reason: ReasonUnknownPool}
			continue
		}
		state := ServiceState{Pool: pool.Name, Shard: pool.Shard}
		blocked := nodeBlocks(in, me, pool)
		if blocked == "" {
			if state.DatapathError = datapathError(in, svc); state.DatapathError != nil {
				blocked = ReasonDatapathFailed
			}
		}
		state.BGPReason = cmp.Or(blocked, bgpBlocks(in, me, svc))
		if state.BGPReason == "" {
			state.BGPPeers, state.BGPReason = routes.add(svc, pool, me, myPeers)
		}
		state.L2Reason = cmp.Or(blocked, l2Owner(in, svc, pool))
		if state.L2Reason == "" {
			state.L2 = true
			state.L2Interfaces = l2Interfaces(pool, svc, me.Name)
			for _, ip := range svc.IPs {
				plan.L2[ip] = state.L2Interfaces
			}
		}
		if in.Datapath == EBPF && blocked == "" && (state.BGPReason == "" || state.L2) {
			plan.Datapath = append(plan.Datapath, datapathServices(in, svc)...)
		}
		plan.Services[svc.Key] = state
	}
	plan.Routes = routes.list()
	slices.SortFunc(plan.Datapath, func(a, b datapath.Service) int { return compareKeys(a.Key(), b.Key()) })
	return plan
}

// datapathError returns why the datapath cannot forward one of svc's VIPs, or nil.
func datapathError(in Input, svc Service) error {
	for _, ip := range svc.IPs {
		if err := in.DatapathFailed[ip]; err != nil {
			return err
		}
	}
	return nil
}

func findNode(nodes []Node, name string) *Node {
	for i := range nodes {
		if nodes[i].Name == name {
			return &nodes[i]
		}
	}
	return nil
}

// nodeBlocks says why this node may not serve the pool's VIPs at all.
func nodeBlocks(in Input, me *Node, pool *config.Pool) string {
	switch {
	case !shard.Serves(me.Labels, pool.Shard):
		return ReasonNotInShard
	case me.NetworkUnavailable:
		return ReasonNodeNetworkUnavailable
	case excluded(in, me):
		return ReasonNodeExcluded
	}
	return ""
}

func excluded(in Input, n *Node) bool {
	_, ok := n.Labels["node.kubernetes.io/exclude-from-external-load-balancers"]
	return ok && !in.ExcludeLabelIgnored
}

// bgpBlocks applies the endpoint rules: some endpoint must be ready; with ETP=Local and
// kube-proxy forwarding, one on this node.
func bgpBlocks(in Input, me *Node, svc Service) string {
	if in.Datapath == KubeProxy && svc.LocalTraffic {
		if !slices.ContainsFunc(svc.Endpoints, func(e Endpoint) bool { return e.Ready && e.Node == me.Name }) {
			return ReasonNoLocalEndpoints
		}
		return ""
	}
	if !slices.ContainsFunc(svc.Endpoints, func(e Endpoint) bool { return e.Ready }) {
		return ReasonNoEndpoints
	}
	return ""
}

// PoolOf returns the pool svc's IPs come from: the one it names, else the one holding its first IP.
func PoolOf(cfg *config.Config, svc Service) *config.Pool {
	if p, ok := cfg.Pools.ByName[svc.Pool]; ok {
		return p
	}
	for _, p := range cfg.Pools.ByName {
		if slices.ContainsFunc(p.CIDRs, func(c netip.Prefix) bool { return c.Contains(svc.IPs[0]) }) {
			return p
		}
	}
	return nil
}

// PeersOf returns, sorted by name, the peers whose node selectors select a node with
// nodeLabels: the sessions that node opens.
func PeersOf(cfg *config.Config, nodeLabels map[string]string) []config.Peer {
	var peers []config.Peer
	for _, p := range cfg.Peers {
		if anySelects(p.NodeSelectors, nodeLabels) {
			peers = append(peers, *p)
		}
	}
	slices.SortFunc(peers, func(a, b config.Peer) int { return strings.Compare(a.Name, b.Name) })
	return peers
}

func peerNames(peers []config.Peer) []string {
	names := make([]string, len(peers))
	for i, p := range peers {
		names[i] = p.Name
	}
	return names
}

func anySelects(selectors []labels.Selector, set map[string]string) bool {
	return slices.ContainsFunc(selectors, func(s labels.Selector) bool { return s.Matches(labels.Set(set)) })
}

// SelectsService: no selector selects every service.
func SelectsService(selectors []labels.Selector, svc Service) bool {
	return len(selectors) == 0 || anySelects(selectors, svc.Labels)
}

// routeSet collects, per prefix and peer, the merged attributes of every advertisement.
type routeSet map[netip.Prefix]map[string]*attributes

type attributes struct {
	communities []config.Community
	localPref   uint32
}

// add records the routes of svc's IPs under the pool's BGP advertisements made from me,
// returning the peers they go to, or why none.
func (rs routeSet) add(svc Service, pool *config.Pool, me *Node, myPeers []string) ([]string, string) {
	var peers []string
	matched := false
	for _, adv := range pool.BGPAdvertisements {
		if !adv.Nodes.Has(me.Name) || !SelectsService(adv.ServiceSelectors, svc) {
			continue
		}
		matched = true
		to := myPeers
		if len(adv.Peers) > 0 {
			to = slices.DeleteFunc(slices.Clone(myPeers), func(p string) bool { return !slices.Contains(adv.Peers, p) })
		}
		for _, ip := range svc.IPs {
			length := adv.AggregationLength
			if ip.Is6() {
				length = adv.AggregationLengthV6
			}
			prefix, err := ip.Prefix(length)
			if err != nil {
				continue // lengths are validated against the pool's prefixes
			}
			for _, peer := range to {
				rs.merge(prefix, peer, adv)
			}
		}
		peers = append(peers, to...)
	}
	if !matched {
		return nil, ReasonNoMatchingAdvertisement
	}
	slices.Sort(peers)
	return slices.Compact(peers), ""
}

func (rs routeSet) merge(prefix netip.Prefix, peer string, adv *config.BGPAdvertisement) {
	byPeer := rs[prefix]
	if byPeer == nil {
		byPeer = map[string]*attributes{}
		rs[prefix] = byPeer
	}
	a := byPeer[peer]
	if a == nil {
		a = &attributes{}
		byPeer[peer] = a
	}
	for _, c := range adv.Communities {
		if !slices.Contains(a.communities, c) {
			a.communities = append(a.communities, c)
		}
	}
	a.localPref = max(a.localPref, adv.LocalPref)
}

// list returns one route per prefix and set of attributes, listing the peers that get it.
func (rs routeSet) list() []Route {
	if len(rs) == 0 {
		return nil
	}
	routes := make([]Route, 0, len(rs))
	var forPrefix []Route // reused: at 10,000 VIPs a slice per prefix was a good part of a pass
	for prefix, byPeer := range rs {
		forPrefix = forPrefix[:0]
		for peer, a := range byPeer {
			slices.SortFunc(a.communities, config.CompareCommunities)
			i := slices.IndexFunc(forPrefix, func(r Route) bool {
				return r.LocalPref == a.localPref && slices.Equal(r.Communities, a.communities)
			})
			if i < 0 {
				forPrefix = append(forPrefix, Route{Prefix: prefix, Communities: a.communities, LocalPref: a.localPref})
				i = len(forPrefix) - 1
			}
			forPrefix[i].Peers = append(forPrefix[i].Peers, peer)
		}
		for i := range forPrefix {
			slices.Sort(forPrefix[i].Peers)
		}
		routes = append(routes, forPrefix...)
	}
	slices.SortFunc(routes, func(a, b Route) int {
		return cmp.Or(comparePrefixes(a.Prefix, b.Prefix), slices.Compare(a.Peers, b.Peers))
	})
	return routes
}

// ElectsL2 reports whether a pool has L2 advertisements: only then do the decisions depend on
// which speakers live (the L2 election), which BGP announcements never do.
func ElectsL2(cfg *config.Config) bool {
	for _, pool := range cfg.Pools.ByName {
		if len(pool.L2Advertisements) > 0 {
			return true
		}
	}
	return false
}

// l2Owner returns "" when this node is the one that answers for svc, as upstream elects it:
// among the live, eligible nodes of the service's L2 advertisements (with ETP=Local, those
// with a ready endpoint), the best preference score, then the lowest sha256(node#firstIP).
func l2Owner(in Input, svc Service, pool *config.Pool) string {
	if !slices.ContainsFunc(svc.Endpoints, func(e Endpoint) bool { return e.Ready }) {
		return ReasonNotOwner
	}
	var ads []*config.L2Advertisement
	for _, adv := range pool.L2Advertisements {
		if SelectsService(adv.ServiceSelectors, svc) {
			ads = append(ads, adv)
		}
	}
	if len(ads) == 0 {
		return ReasonNoMatchingAdvertisement
	}
	if svc.SharedIP && slices.ContainsFunc(ads, func(a *config.L2Advertisement) bool { return len(a.ServiceSelectors) > 0 }) {
		return ReasonSharedIPServiceSelectors
	}
	if !slices.ContainsFunc(ads, func(a *config.L2Advertisement) bool { return a.Nodes.Has(in.NodeName) }) {
		return ReasonNoMatchingAdvertisement
	}
	scores := map[string]int64{}
	var candidates []string
	for _, n := range in.Nodes {
		if !n.Live || n.NetworkUnavailable || excluded(in, &n) || !shard.Serves(n.Labels, pool.Shard) {
			continue
		}
		if !slices.ContainsFunc(ads, func(a *config.L2Advertisement) bool { return a.Nodes.Has(n.Name) }) {
			continue
		}
		if svc.LocalTraffic && in.Datapath == KubeProxy &&
			!slices.ContainsFunc(svc.Endpoints, func(e Endpoint) bool { return e.Ready && e.Node == n.Name }) {
			continue
		}
		candidates = append(candidates, n.Name)
		for _, a := range ads {
			scores[n.Name] += a.PreferredNodes[n.Name]
		}
	}
	if ChooseNode(svc.IPs[0], candidates, scores) != in.NodeName {
		return ReasonNotOwner
	}
	return ""
}

// ChooseNode elects the node that answers for ip, the service's first IP: the highest
// preference score first, then the lowest sha256 of "node#ip". Every speaker computes the same
// winner without talking to the others, and the same as upstream MetalLB, so that a mixed or
// upgraded cluster agrees on the owner.
func ChooseNode(ip netip.Addr, candidates []string, scores map[string]int64) string {
	if len(candidates) == 0 {
		return ""
	}
	// Upstream hashes net.IP's text: no zone, IPv4-mapped addresses printed as IPv4.
	text := ip.Unmap().WithZone("").String()
	hash := func(node string) [sha256.Size]byte { return sha256.Sum256([]byte(node + "#" + text)) }
	return slices.MinFunc(candidates, func(a, b string) int {
		if c := cmp.Compare(scores[b], scores[a]); c != 0 {
			return c
		}
		ha, hb := hash(a), hash(b)
		return bytes.Compare(ha[:], hb[:])
	})
}

// l2Interfaces is the union of the interfaces of the advertisements that let me announce
// svc; empty when one of them allows every interface.
func l2Interfaces(pool *config.Pool, svc Service, me string) []string {
	var ifaces []string
	for _, adv := range pool.L2Advertisements {
		if !adv.Nodes.Has(me) || !SelectsService(adv.ServiceSelectors, svc) {
			continue
		}
		if len(adv.Interfaces) == 0 {
			return nil
		}
		ifaces = append(ifaces, adv.Interfaces...)
	}
	slices.Sort(ifaces)
	return slices.Compact(ifaces)
}

// datapathServices returns one datapath service per VIP and port, whose backends are the
// nodes with ready endpoints, weighted by how many: each node's kube-proxy takes the packet
// from there to a local endpoint, so ETP=Local keeps the client IP. A projected Service's
// endpoints are such nodes already, in a workload cluster, with their weights.
func datapathServices(in Input, svc Service) []datapath.Service {
	weights := map[string]uint32{}
	for _, e := range svc.Endpoints {
		if e.Ready && e.Weight == 0 && e.Node != "" {
			weights[e.Node]++
		}
	}
	var out []datapath.Service
	for _, ip := range svc.IPs {
		var backends []datapath.Backend
		for _, n := range in.Nodes {
			if w := weights[n.Name]; w > 0 {
				if addr, ok := n.AddrOfFamily(ip); ok {
					backends = append(backends, datapath.Backend{Addr: addr, Weight: w})
				}
			}
		}
		for _, e := range svc.Endpoints {
			if e.Ready && e.Weight > 0 && e.Addr.Is4() == ip.Is4() {
				backends = append(backends, datapath.Backend{Addr: e.Addr, Weight: e.Weight})
			}
		}
		if len(backends) == 0 {
			continue
		}
		slices.SortFunc(backends, func(a, b datapath.Backend) int { return a.Addr.Compare(b.Addr) })
		for _, p := range svc.Ports {
			out = append(out, datapath.Service{VIP: ip, Protocol: p.Protocol, Port: p.Port, Backends: backends, Encap: in.Encap})
		}
	}
	return out
}

func compareKeys(a, b datapath.ServiceKey) int {
	return cmp.Or(a.VIP.Compare(b.VIP), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
}

func comparePrefixes(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}
