// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
)

// selectedPools returns, in order, the pools an advertisement applies to: those it
// names and those its selectors match, or every pool when it has neither. Names of
// pools that do not exist are ignored, as upstream does.
func selectedPools(obj objectRef, names []string, selectors []metav1.LabelSelector, pools []*parsedPool, poolObjects []metav1.Object) ([]*parsedPool, error) {
	if err := checkDuplicateStrings(obj, "spec.ipAddressPools", "ipAddressPools", names); err != nil {
		return nil, err
	}
	parsed, err := selectorsFromCR(obj, "spec.ipAddressPoolSelectors", "ip address pool selector", selectors)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 && len(selectors) == 0 {
		return pools, nil
	}
	chosen := matchingNames(poolObjects, parsed).Insert(names...)
	var selected []*parsedPool
	for _, pool := range pools {
		if chosen.Has(pool.Name) {
			selected = append(selected, pool)
		}
	}
	return selected, nil
}

func attachL2Advertisements(crs []metallbv1beta1.L2Advertisement, pools []*parsedPool, poolObjects, nodes []metav1.Object) error {
	for _, cr := range crs {
		obj := objectRef{"l2advertisement", cr.Name}
		adv, err := l2AdvertisementFromCR(obj, cr, nodes)
		if err != nil {
			return err
		}
		selected, err := selectedPools(obj, cr.Spec.IPAddressPools, cr.Spec.IPAddressPoolSelectors, pools, poolObjects)
		if err != nil {
			return err
		}
		for _, pool := range selected {
			if !slices.ContainsFunc(pool.L2Advertisements, func(other *L2Advertisement) bool { return sameL2Announcement(adv, other) }) {
				pool.L2Advertisements = append(pool.L2Advertisements, adv)
			}
		}
	}
	return nil
}

// sameL2Announcement tells whether two advertisements announce alike, so that a pool
// keeps only one of them. Advertisements with preferred nodes are never merged: the
// speaker adds up their weights.
func sameL2Announcement(a, b *L2Advertisement) bool {
	return len(a.PreferredNodes) == 0 && len(b.PreferredNodes) == 0 &&
		a.Nodes.Equal(b.Nodes) &&
		sets.New(a.Interfaces...).Equal(sets.New(b.Interfaces...)) &&
		slices.EqualFunc(a.ServiceSelectors, b.ServiceSelectors, func(x, y labels.Selector) bool { return x.String() == y.String() })
}

func l2AdvertisementFromCR(obj objectRef, cr metallbv1beta1.L2Advertisement, nodes []metav1.Object) (*L2Advertisement, error) {
	nodeSelectors, err := selectorsFromCR(obj, "spec.nodeSelectors", "node selector", cr.Spec.NodeSelectors)
	if err != nil {
		return nil, err
	}
	serviceSelectors, err := selectorsFromCR(obj, "spec.serviceSelectors", "service selector", cr.Spec.ServiceSelectors)
	if err != nil {
		return nil, err
	}
	eligible := selectedNodes(nodes, nodeSelectors)
	preferred, err := preferredNodeWeights(obj, cr.Spec.PreferredNodeSelectors, nodes, eligible)
	if err != nil {
		return nil, err
	}
	return &L2Advertisement{
		Name:             cr.Name,
		Interfaces:       slices.Clone(cr.Spec.Interfaces),
		Nodes:            eligible,
		ServiceSelectors: serviceSelectors,
		PreferredNodes:   preferred,
	}, nil
}

// preferredNodeWeights sums, for each eligible node, the weights of the preferred node
// selectors that match it; nodes that sum to nothing are left out.
func preferredNodeWeights(obj objectRef, preferences []metallbv1beta1.PreferredNodeSelector, nodes []metav1.Object, eligible sets.Set[string]) (map[string]int64, error) {
	var weights map[string]int64
	for i := range preferences {
		selector, err := metav1.LabelSelectorAsSelector(&preferences[i].Preference)
		if err != nil {
			return nil, obj.errorf(fmt.Sprintf("spec.preferredNodeSelectors[%d].preference", i), "invalid preferred node selector: %v", err)
		}
		for name := range matchingNames(nodes, []labels.Selector{selector}).Intersection(eligible) {
			if weights == nil {
				weights = map[string]int64{}
			}
			weights[name] += int64(preferences[i].Weight)
		}
	}
	for name, weight := range weights {
		if weight <= 0 {
			delete(weights, name)
		}
	}
	if len(weights) == 0 {
		return nil, nil
	}
	return weights, nil
}

func attachBGPAdvertisements(crs []metallbv1beta1.BGPAdvertisement, pools []*parsedPool, poolObjects, nodes []metav1.Object, aliases map[string]Community) error {
	names := sets.New[string]()
	for _, cr := range crs {
		obj := objectRef{"bgpadvertisement", cr.Name}
		if names.Has(cr.Name) {
			return obj.errorf("metadata.name", "duplicate definition of bgpadvertisements")
		}
		names.Insert(cr.Name)
		adv, err := bgpAdvertisementFromCR(obj, cr, nodes, aliases)
		if err != nil {
			return err
		}
		selected, err := selectedPools(obj, cr.Spec.IPAddressPools, cr.Spec.IPAddressPoolSelectors, pools, poolObjects)
		if err != nil {
			return err
		}
		for _, pool := range selected {
			if err := checkBGPAdvertisementForPool(obj, adv, pool); err != nil {
				return err
			}
			pool.BGPAdvertisements = append(pool.BGPAdvertisements, adv)
		}
	}
	return nil
}

func bgpAdvertisementFromCR(obj objectRef, cr metallbv1beta1.BGPAdvertisement, nodes []metav1.Object, aliases map[string]Community) (*BGPAdvertisement, error) {
	spec := cr.Spec
	if err := checkDuplicateStrings(obj, "spec.communities", "community", spec.Communities); err != nil {
		return nil, err
	}
	if err := checkDuplicateStrings(obj, "spec.peers", "peers", spec.Peers); err != nil {
		return nil, err
	}
	adv := &BGPAdvertisement{
		Name:                cr.Name,
		AggregationLength:   32,
		AggregationLengthV6: 128,
		LocalPref:           spec.LocalPref,
		AsPathPrepend:       spec.AsPathPrepend,
		Peers:               slices.Clone(spec.Peers),
	}
	if spec.AggregationLength != nil {
		adv.AggregationLength = int(*spec.AggregationLength)
	}
	if spec.AggregationLengthV6 != nil {
		adv.AggregationLengthV6 = int(*spec.AggregationLengthV6)
	}
	// A service selector picks single services, which cannot share an aggregated prefix.
	if len(spec.ServiceSelectors) > 0 {
		if adv.AggregationLength != 32 {
			return nil, obj.errorf("spec.aggregationLength", "serviceSelectors and aggregationLength are mutually exclusive, both cannot be set")
		}
		if adv.AggregationLengthV6 != 128 {
			return nil, obj.errorf("spec.aggregationLengthV6", "serviceSelectors and aggregationLengthV6 are mutually exclusive, both cannot be set")
		}
	}
	if adv.AggregationLength > 32 {
		return nil, obj.errorf("spec.aggregationLength", "invalid aggregation length %d for IPv4", adv.AggregationLength)
	}
	if adv.AggregationLengthV6 > 128 {
		return nil, obj.errorf("spec.aggregationLengthV6", "invalid aggregation length %d for IPv6", adv.AggregationLengthV6)
	}

	for i, s := range spec.Communities {
		community, err := resolveCommunity(s, aliases)
		field := fmt.Sprintf("spec.communities[%d]", i)
		switch {
		case errors.Is(err, errCommunityFormat):
			// Not shaped like a community: maybe an alias whose Community is not there yet.
			return nil, obj.transientf(field, "invalid community %q in BGP advertisement: %v", s, err)
		case err != nil:
			return nil, obj.errorf(field, "invalid community %q in BGP advertisement: %v", s, err)
		}
		adv.Communities = append(adv.Communities, community)
	}
	slices.SortFunc(adv.Communities, CompareCommunities)
	adv.Communities = slices.Compact(adv.Communities)

	nodeSelectors, err := selectorsFromCR(obj, "spec.nodeSelectors", "node selector", spec.NodeSelectors)
	if err != nil {
		return nil, err
	}
	adv.Nodes = selectedNodes(nodes, nodeSelectors)
	if adv.ServiceSelectors, err = selectorsFromCR(obj, "spec.serviceSelectors", "service selector", spec.ServiceSelectors); err != nil {
		return nil, err
	}
	return adv, nil
}

// resolveCommunity looks s up among the aliases, then reads it as a community value.
func resolveCommunity(s string, aliases map[string]Community) (Community, error) {
	if community, ok := aliases[s]; ok {
		return community, nil
	}
	return parseCommunity(s)
}

// checkBGPAdvertisementForPool checks that adv can apply to pool: its aggregation
// length does not reach outside any address entry of the pool, and it does not give
// the same BGP update another local preference or AS path prepend than an
// advertisement already applying to the pool.
func checkBGPAdvertisementForPool(obj objectRef, adv *BGPAdvertisement, pool *parsedPool) error {
	for _, block := range pool.blocks {
		length, field := adv.AggregationLength, "spec.aggregationLength"
		if block.prefixes[0].Addr().Is6() {
			length, field = adv.AggregationLengthV6, "spec.aggregationLengthV6"
		}
		widest := slices.MinFunc(block.prefixes, func(a, b netip.Prefix) int { return a.Bits() - b.Bits() }).Bits()
		if length < widest {
			return obj.errorf(field, "invalid aggregation length %d: prefix %d in this pool is more specific than the aggregation length for addresses %s of pool %q",
				length, widest, block.spec, pool.Name)
		}
	}

	// Which services an advertisement with service selectors announces is only known
	// at run time, so the speaker checks those.
	if len(adv.ServiceSelectors) > 0 {
		return nil
	}
	for _, other := range pool.BGPAdvertisements {
		if len(other.ServiceSelectors) > 0 || !sameBGPUpdates(adv, other, pool.Pool) {
			continue
		}
		if adv.LocalPref != other.LocalPref {
			return obj.errorf("spec.localPref", "invalid local preference %d: local preference %d was already set for the same type of BGP update by bgpadvertisement %q. Check existing BGP advertisements with common pools and aggregation lengths",
				adv.LocalPref, other.LocalPref, other.Name)
		}
		if adv.AsPathPrepend != other.AsPathPrepend {
			return obj.errorf("spec.asPathPrepend", "invalid as path prepend %d: as path prepend %d was already set for the same type of BGP update by bgpadvertisement %q. Check existing BGP advertisements with common pools and aggregation lengths",
				adv.AsPathPrepend, other.AsPathPrepend, other.Name)
		}
	}
	return nil
}

// sameBGPUpdates tells whether two advertisements of pool can produce the same BGP
// update: the same prefix length for one of the pool's families, sent to a common peer
// from a common node.
func sameBGPUpdates(a, b *BGPAdvertisement, pool *Pool) bool {
	hasV4, hasV6 := containsFamily(pool.CIDRs, false), containsFamily(pool.CIDRs, true)
	sameV4, sameV6 := a.AggregationLength == b.AggregationLength, a.AggregationLengthV6 == b.AggregationLengthV6
	if !(hasV4 && sameV4 || hasV6 && sameV6) {
		return false
	}
	// No peer list means every peer.
	sharePeer := len(a.Peers) == 0 || len(b.Peers) == 0 ||
		slices.ContainsFunc(a.Peers, func(p string) bool { return slices.Contains(b.Peers, p) })
	return sharePeer && a.Nodes.Intersection(b.Nodes).Len() > 0
}

func containsFamily(prefixes []netip.Prefix, ipv6 bool) bool {
	return slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Addr().Is6() == ipv6 })
}

// checkBFDEchoOnIPv6 rejects IPv6 addresses advertised to a peer whose BFD profile
// uses echo mode, which BFD cannot do over IPv6.
func checkBFDEchoOnIPv6(pools []*parsedPool, peers map[string]*Peer, profiles map[string]*BFDProfile) error {
	allPeers := slices.Sorted(maps.Keys(peers))
	for _, pool := range pools {
		if !containsFamily(pool.CIDRs, true) {
			continue
		}
		for _, adv := range pool.BGPAdvertisements {
			targets := adv.Peers
			if len(targets) == 0 {
				targets = allPeers
			}
			for _, name := range targets {
				peer, ok := peers[name]
				if !ok {
					continue
				}
				if profile, ok := profiles[peer.BFDProfile]; ok && profile.EchoMode {
					return objectRef{"bgpadvertisement", adv.Name}.errorf("spec.peers",
						"pool %s has bgpadvertisement %s which references peer %s which has bfd echo enabled, which is not possible",
						pool.Name, adv.Name, peer.Name)
				}
			}
		}
	}
	return nil
}
