// SPDX-License-Identifier: Apache-2.0

// Package config turns the MetalLB custom resources of a cluster into one validated,
// read-only model. It follows upstream MetalLB's semantics, defaults and error wording,
// so that a configuration MetalLB accepts is accepted here and means the same thing.
package config

import (
	"net/netip"
	"time"

	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
)

// ClusterResources are the objects the model is built from.
type ClusterResources struct {
	Pools           []maglbv1beta1.IPAddressPool
	Peers           []metallbv1beta2.BGPPeer
	BFDProfiles     []metallbv1beta1.BFDProfile
	BGPAdvs         []metallbv1beta1.BGPAdvertisement
	L2Advs          []metallbv1beta1.L2Advertisement
	Communities     []metallbv1beta1.Community
	PasswordSecrets map[string]corev1.Secret // by secret name, in the MetalLB namespace
	Nodes           []corev1.Node
	Namespaces      []corev1.Namespace
}

// Config is the validated model. Nothing in it is shared with the ClusterResources it
// was built from; callers must treat it as read-only, since it is shared between them.
type Config struct {
	Pools       Pools
	Peers       map[string]*Peer       // by name
	BFDProfiles map[string]*BFDProfile // by name
}

// Pools holds the address pools and the lookups the allocator needs.
type Pools struct {
	ByName map[string]*Pool
	// ByNamespace lists, for each namespace a pool is reserved to, the names of those
	// pools, sorted.
	ByNamespace map[string][]string
	// ByServiceSelector lists the names of the pools that select services by label,
	// sorted.
	ByServiceSelector []string
}

// Pool is an IPAddressPool.
type Pool struct {
	Name string
	// CIDRs are the pool's addresses in spec order, masked; a range "a-b" becomes the
	// prefixes that exactly cover it. They overlap neither each other nor other pools.
	CIDRs []netip.Prefix
	// AutoAssign allows allocating from the pool without the service asking for it.
	AutoAssign bool
	// AvoidBuggyIPs marks IPv4 addresses ending in .0 or .255 as unusable.
	AvoidBuggyIPs bool
	// ServiceAllocation restricts and ranks the services the pool serves; nil when the
	// pool has no serviceAllocation.
	ServiceAllocation *ServiceAllocation
	// Shard names the group of nodes (labelled ShardLabelPrefix+Shard) that announce and
	// serve the pool's addresses; empty means every node.
	Shard string
	// BGPAdvertisements and L2Advertisements are the advertisements that apply to the
	// pool, in the order of the resources.
	BGPAdvertisements []*BGPAdvertisement
	L2Advertisements  []*L2Advertisement
}

// ServiceAllocation is an IPAddressPool's spec.serviceAllocation.
type ServiceAllocation struct {
	Priority int
	// Namespaces are the namespaces listed in the spec plus those the namespace
	// selectors matched when the model was built.
	Namespaces         sets.Set[string]
	NamespaceSelectors []labels.Selector
	// ServiceSelectors is labels.Everything() alone when the allocation only sets a
	// priority, so that such a pool ranks for every service.
	ServiceSelectors []labels.Selector
}

// Peer is a BGPPeer.
type Peer struct {
	Name       string
	MyASN      uint32
	ASN        uint32 // the peer's ASN; 0 when DynamicASN is set
	DynamicASN metallbv1beta2.DynamicASNMode
	LocalASN   uint32
	// Addr is the peer's address; the zero Addr when the session is unnumbered over
	// Interface.
	Addr      netip.Addr
	Interface string
	SrcAddr   netip.Addr // zero: chosen by the kernel
	Port      uint16
	// HoldTime and KeepaliveTime are always resolved: 90s and a third of the hold time
	// unless set.
	HoldTime      time.Duration
	KeepaliveTime time.Duration
	ConnectTime   time.Duration // 0: the BGP implementation's default
	RouterID      netip.Addr    // zero: the node's default
	// NodeSelectors select the nodes that open the session; labels.Everything() alone
	// when the peer has none.
	NodeSelectors []labels.Selector
	// Password is the TCP MD5 password, given literally or read from the password secret.
	Password               string
	BFDProfile             string
	BFD                    *BFDProfile // the profile BFDProfile names; nil without one
	EnableGracefulRestart  bool
	EBGPMultiHop           bool
	VRF                    string
	DualStackAddressFamily bool
	DisableMP              bool
}

// BFDProfile is a BFDProfile with its defaults applied. Intervals are in milliseconds.
type BFDProfile struct {
	Name             string
	ReceiveInterval  uint32
	TransmitInterval uint32
	DetectMultiplier uint32
	EchoInterval     uint32
	MinimumTTL       uint32
	EchoMode         bool
	PassiveMode      bool
}

// BGPAdvertisement is a BGPAdvertisement, resolved.
type BGPAdvertisement struct {
	Name                string
	AggregationLength   int // IPv4
	AggregationLengthV6 int
	// LocalPref is sent to iBGP peers only (MyASN equal to the peer's ASN, or dynamic
	// ASN "internal"); eBGP peers never get LOCAL_PREF.
	LocalPref     uint32
	AsPathPrepend uint8
	// Communities are sorted and free of duplicates, aliases replaced by their values.
	Communities []Community
	// Peers names the peers to announce to; empty means every peer.
	Peers []string
	// Nodes are the names of the nodes the advertisement is made from.
	Nodes sets.Set[string]
	// ServiceSelectors, sorted, restrict the services advertised; empty means all.
	ServiceSelectors []labels.Selector
}

// L2Advertisement is an L2Advertisement, resolved.
type L2Advertisement struct {
	Name string
	// Interfaces to announce from; empty means every interface.
	Interfaces []string
	// Nodes are the names of the nodes that may announce.
	Nodes sets.Set[string]
	// ServiceSelectors, sorted, restrict the services advertised; empty means all.
	ServiceSelectors []labels.Selector
	// PreferredNodes maps each node of Nodes that some preferredNodeSelector matches to
	// the sum of the matching weights; nil when none does.
	PreferredNodes map[string]int64
}

// For validates res and builds the model from it. validate adds the restrictions of a
// BGP implementation (see ValidationFor). The error is the first problem found; it is a
// TransientError when it may go away once a referenced object exists.
func For(res ClusterResources, validate Validate) (*Config, error) {
	if err := validate(res); err != nil {
		return nil, err
	}
	bfdProfiles, err := bfdProfilesFor(res.BFDProfiles)
	if err != nil {
		return nil, err
	}
	peers, err := peersFor(res.Peers, res.PasswordSecrets, bfdProfiles)
	if err != nil {
		return nil, err
	}
	aliases, err := communityAliasesFor(res.Communities)
	if err != nil {
		return nil, err
	}
	pools, err := poolsFor(res.Pools, objectsOf(res.Namespaces))
	if err != nil {
		return nil, err
	}
	poolObjects, nodes := objectsOf(res.Pools), objectsOf(res.Nodes)
	if err := attachL2Advertisements(res.L2Advs, pools, poolObjects, nodes); err != nil {
		return nil, err
	}
	if err := attachBGPAdvertisements(res.BGPAdvs, pools, poolObjects, nodes, aliases); err != nil {
		return nil, err
	}
	if err := checkBFDEchoOnIPv6(pools, peers, bfdProfiles); err != nil {
		return nil, err
	}
	return &Config{Pools: indexPools(pools), Peers: peers, BFDProfiles: bfdProfiles}, nil
}
