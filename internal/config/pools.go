// SPDX-License-Identifier: Apache-2.0

package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
)

// parsedPool is a Pool while the model is built: it also keeps the prefixes of each
// spec.addresses entry, which the aggregation length check works on.
type parsedPool struct {
	*Pool
	blocks []addressBlock
}

type addressBlock struct {
	spec     string
	prefixes []netip.Prefix
}

// poolsFor parses the pools in order and checks that no two define the same name or
// overlapping addresses.
func poolsFor(crs []maglbv1beta1.IPAddressPool, namespaces []metav1.Object) ([]*parsedPool, error) {
	type ownedPrefix struct {
		prefix netip.Prefix
		pool   string
	}
	var defined []ownedPrefix
	names := sets.New[string]()
	pools := make([]*parsedPool, 0, len(crs))
	for _, cr := range crs {
		pool, err := poolFromCR(cr, namespaces)
		if err != nil {
			return nil, err
		}
		obj := objectRef{"ipaddresspool", cr.Name}
		if names.Has(cr.Name) {
			return nil, obj.errorf("metadata.name", "duplicate definition of pool %q", cr.Name)
		}
		names.Insert(cr.Name)
		for i, block := range pool.blocks {
			for _, prefix := range block.prefixes {
				for _, d := range defined {
					if prefix.Overlaps(d.prefix) {
						return nil, obj.errorf(fmt.Sprintf("spec.addresses[%d]", i),
							"CIDR %q in pool %q overlaps with already defined CIDR %q of pool %q",
							prefix, cr.Name, d.prefix, d.pool)
					}
				}
				defined = append(defined, ownedPrefix{prefix, cr.Name})
			}
		}
		pools = append(pools, pool)
	}
	return pools, nil
}

func poolFromCR(cr maglbv1beta1.IPAddressPool, namespaces []metav1.Object) (*parsedPool, error) {
	obj := objectRef{"ipaddresspool", cr.Name}
	if cr.Name == "" {
		return nil, obj.errorf("metadata.name", "missing pool name")
	}
	if len(cr.Spec.Addresses) == 0 {
		return nil, obj.errorf("spec.addresses", "pool has no prefixes defined")
	}
	pool := &Pool{
		Name:          cr.Name,
		AutoAssign:    true,
		AvoidBuggyIPs: cr.Spec.AvoidBuggyIPs,
		Shard:         cr.Spec.Shard,
	}
	if cr.Spec.AutoAssign != nil {
		pool.AutoAssign = *cr.Spec.AutoAssign
	}
	parsed := &parsedPool{Pool: pool}
	for i, spec := range cr.Spec.Addresses {
		prefixes, err := parseAddresses(spec)
		if err != nil {
			return nil, obj.errorf(fmt.Sprintf("spec.addresses[%d]", i), "%v", err)
		}
		pool.CIDRs = append(pool.CIDRs, prefixes...)
		parsed.blocks = append(parsed.blocks, addressBlock{spec, prefixes})
	}
	if err := checkShard(cr.Spec.Shard); err != nil {
		return nil, obj.errorf("spec.shard", "%v", err)
	}
	allocation, err := serviceAllocationFromCR(obj, cr.Spec.AllocateTo, namespaces)
	if err != nil {
		return nil, err
	}
	pool.ServiceAllocation = allocation
	return parsed, nil
}

// checkShard accepts an empty shard or a DNS label that also makes a valid node label
// key once prefixed, since shard membership is a node label.
func checkShard(shard string) error {
	if shard == "" {
		return nil
	}
	if problems := validation.IsDNS1123Label(shard); len(problems) > 0 {
		return fmt.Errorf("invalid shard %q: %s", shard, strings.Join(problems, "; "))
	}
	key := maglbv1beta1.ShardLabelPrefix + shard
	if problems := validation.IsQualifiedName(key); len(problems) > 0 {
		return fmt.Errorf("invalid shard %q: node label key %q: %s", shard, key, strings.Join(problems, "; "))
	}
	return nil
}

func serviceAllocationFromCR(obj objectRef, cr *metallbv1beta1.ServiceAllocation, namespaces []metav1.Object) (*ServiceAllocation, error) {
	if cr == nil {
		return nil, nil
	}
	const field = "spec.serviceAllocation"
	if err := checkDuplicateStrings(obj, field+".namespaces", "namespaces", cr.Namespaces); err != nil {
		return nil, err
	}
	allocation := &ServiceAllocation{Priority: cr.Priority, Namespaces: sets.New(cr.Namespaces...)}
	if len(cr.Namespaces) == 0 && len(cr.NamespaceSelectors) == 0 && len(cr.ServiceSelectors) == 0 {
		allocation.ServiceSelectors = []labels.Selector{labels.Everything()}
		return allocation, nil
	}
	var err error
	allocation.NamespaceSelectors, err = selectorsFromCR(obj, field+".namespaceSelectors", "namespace label selector", cr.NamespaceSelectors)
	if err != nil {
		return nil, err
	}
	allocation.ServiceSelectors, err = selectorsFromCR(obj, field+".serviceSelectors", "service label selector", cr.ServiceSelectors)
	if err != nil {
		return nil, err
	}
	allocation.Namespaces = allocation.Namespaces.Union(matchingNames(namespaces, allocation.NamespaceSelectors))
	return allocation, nil
}

// parseAddresses parses one spec.addresses entry: a CIDR, or a range "first-last" of
// one family, which becomes the prefixes that exactly cover it.
func parseAddresses(spec string) ([]netip.Prefix, error) {
	from, to, isRange := strings.Cut(spec, "-")
	if !isRange {
		prefix, err := netip.ParsePrefix(spec)
		if err != nil {
			return nil, fmt.Errorf("invalid CIDR %q", spec)
		}
		return []netip.Prefix{prefix.Masked()}, nil
	}
	first, ok := parseAddr(strings.TrimSpace(from))
	if !ok {
		return nil, fmt.Errorf("invalid IP range %q: invalid start IP %q", spec, from)
	}
	last, ok := parseAddr(strings.TrimSpace(to))
	if !ok {
		return nil, fmt.Errorf("invalid IP range %q: invalid end IP %q", spec, to)
	}
	if first.Is4() != last.Is4() {
		return nil, fmt.Errorf("invalid IP range %q: start and end IPs must be the same family", spec)
	}
	if first.Compare(last) > 0 {
		return nil, fmt.Errorf("invalid IP range %q: start IP %q is after the end IP %q", spec, first, last)
	}
	return rangePrefixes(first, last), nil
}

// parseAddr parses a plain IP address. Zones are refused and IPv4-mapped IPv6
// addresses count as IPv4, as for every address MetalLB reads.
func parseAddr(s string) (netip.Addr, bool) {
	addr, err := netip.ParseAddr(s)
	if err != nil || addr.Zone() != "" {
		return netip.Addr{}, false
	}
	return addr.Unmap(), true
}

// rangePrefixes returns the fewest prefixes that cover exactly first..last, in order.
func rangePrefixes(first, last netip.Addr) []netip.Prefix {
	var prefixes []netip.Prefix
	for {
		// The widest prefix that starts at first and does not go past last.
		bits := first.BitLen()
		for bits > 0 {
			wider := netip.PrefixFrom(first, bits-1)
			if wider.Masked().Addr() != first || lastAddr(wider).Compare(last) > 0 {
				break
			}
			bits--
		}
		prefix := netip.PrefixFrom(first, bits)
		prefixes = append(prefixes, prefix)
		end := lastAddr(prefix)
		if end == last {
			return prefixes
		}
		first = end.Next()
	}
}

// lastAddr returns the highest address of prefix.
func lastAddr(prefix netip.Prefix) netip.Addr {
	b := prefix.Masked().Addr().AsSlice()
	for i := prefix.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	addr, _ := netip.AddrFromSlice(b)
	return addr
}

// indexPools builds the lookups of the model from the pools in order.
func indexPools(pools []*parsedPool) Pools {
	index := Pools{ByName: make(map[string]*Pool, len(pools)), ByNamespace: map[string][]string{}}
	for _, pool := range pools {
		index.ByName[pool.Name] = pool.Pool
		if pool.ServiceAllocation == nil {
			continue
		}
		for namespace := range pool.ServiceAllocation.Namespaces {
			index.ByNamespace[namespace] = append(index.ByNamespace[namespace], pool.Name)
		}
		if len(pool.ServiceAllocation.ServiceSelectors) > 0 {
			index.ByServiceSelector = append(index.ByServiceSelector, pool.Name)
		}
	}
	for _, names := range index.ByNamespace {
		slices.Sort(names)
	}
	slices.Sort(index.ByServiceSelector)
	return index
}
