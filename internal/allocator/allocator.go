// SPDX-License-Identifier: Apache-2.0

// Package allocator assigns load-balancer addresses to services from the configured
// pools, with MetalLB's rules: the same sequence of calls picks the same addresses as
// MetalLB does. It is pure: it keeps state in memory, does no I/O and is not safe for
// concurrent use; the caller serializes the calls.
package allocator

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/maglb/maglb/internal/config"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Allocator tracks the pools and which service uses which address.
type Allocator struct {
	pools      *config.Pools
	poolNames  []string // sorted
	configured bool

	services map[string]*allocation     // by service key
	addrs    map[netip.Addr]*addressUse // addresses with a user or a sharing key
	// keyed holds the addresses that carry a sharing key: the others are free.
	keyed spanSet
	// sharedBy lists, per non-empty sharing key, the addresses carrying that key.
	sharedBy map[string]sortedAddrs
	usage    map[string]*poolUsage // by pool name
	changed  map[string]struct{}   // pools whose counters changed since TakeChangedPools
	gauges   map[string]*poolGauges
}

// shareKey is what two services sharing an address must agree on.
type shareKey struct {
	sharing string
	backend string
}

type allocation struct {
	pool  string
	ips   []netip.Addr
	ports []Port
	key   shareKey
}

type addressUse struct {
	// hasKey is set while the address carries a sharing key, which is what makes it
	// taken; key is the key of the last service assigned the address.
	hasKey   bool
	key      shareKey
	ports    []portUse // few: the ports of the services sharing the address
	services []string  // keys of the services using the address
}

type portUse struct {
	port Port
	svc  string
}

// portOwner returns the service using port on the address, "" if none.
func (u *addressUse) portOwner(p Port) (string, bool) {
	for _, pu := range u.ports {
		if pu.port == p {
			return pu.svc, true
		}
	}
	return "", false
}

type poolUsage struct {
	users    map[netip.Addr]int // address → number of services using it
	v4, v6   int                // distinct addresses in use, per family
	services int
}

// PoolCounters are a pool's address counts, as published in the IPAddressPool status.
type PoolCounters struct {
	AssignedIPv4  int64
	AssignedIPv6  int64
	AvailableIPv4 int64
	AvailableIPv6 int64
	// ServicesAllocated is the number of services with addresses from the pool.
	ServicesAllocated int64
}

// New returns an allocator with no pools. Until the first SetPools, Converge does nothing.
func New() *Allocator {
	return &Allocator{
		pools:    &config.Pools{ByName: map[string]*config.Pool{}},
		services: map[string]*allocation{},
		addrs:    map[netip.Addr]*addressUse{},
		sharedBy: map[string]sortedAddrs{},
		usage:    map[string]*poolUsage{},
		changed:  map[string]struct{}{},
		gauges:   map[string]*poolGauges{},
	}
}

// SetPools replaces the pools. An allocation whose addresses are no longer all in one pool
// is released; one whose addresses moved to another pool follows them. A nil pools, or one
// with a nil ByName, is ignored, as MetalLB ignores a missing configuration; an empty
// ByName means no pools.
func (a *Allocator) SetPools(pools *config.Pools) {
	if pools == nil || pools.ByName == nil {
		return
	}
	for _, name := range a.poolNames {
		if pools.ByName[name] == nil {
			a.deleteMetrics(name)
			a.markChanged(name)
		}
	}
	a.pools = pools
	a.configured = true
	a.poolNames = a.poolNames[:0]
	for name := range pools.ByName {
		a.poolNames = append(a.poolNames, name)
	}
	sort.Strings(a.poolNames)

	keys := make([]string, 0, len(a.services))
	for key := range a.services {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		al := a.services[key]
		pool := a.poolFor(al.ips)
		switch {
		case pool == nil:
			a.unassign(key)
		case pool.Name != al.pool:
			a.unassign(key)
			moved := *al
			moved.pool = pool.Name
			a.assign(key, &moved)
		}
	}
	for name, u := range a.usage {
		if pools.ByName[name] == nil && len(u.users) == 0 && u.services == 0 {
			delete(a.usage, name)
		}
	}
	for _, name := range a.poolNames {
		a.updateCounters(name)
		a.markChanged(name)
	}
}

// Pools returns the pools last set.
func (a *Allocator) Pools() *config.Pools {
	return a.pools
}

// Pool returns the name of the pool the service's addresses come from, "" when it has none.
func (a *Allocator) Pool(key string) string {
	if al := a.services[key]; al != nil {
		return al.pool
	}
	return ""
}

// IPs returns the addresses allocated to the service, nil when it has none.
func (a *Allocator) IPs(key string) []netip.Addr {
	if al := a.services[key]; al != nil {
		return slices.Clone(al.ips)
	}
	return nil
}

// PoolForIPs returns the pool that holds all of ips (honouring avoidBuggyIPs), nil when
// there is none.
func (a *Allocator) PoolForIPs(ips []netip.Addr) *config.Pool {
	return a.poolFor(ips)
}

// Counters returns the pool's counters; zero for an unknown pool.
func (a *Allocator) Counters(pool string) PoolCounters {
	p := a.pools.ByName[pool]
	if p == nil {
		return PoolCounters{}
	}
	_, v4, v6 := capacity(p)
	u := a.usage[pool]
	if u == nil {
		u = &poolUsage{}
	}
	return PoolCounters{
		AssignedIPv4:      int64(u.v4),
		AssignedIPv6:      int64(u.v6),
		AvailableIPv4:     v4 - int64(u.v4),
		AvailableIPv6:     v6 - int64(u.v6),
		ServicesAllocated: int64(u.services),
	}
}

// TakeChangedPools returns, sorted, the pools whose counters may have changed since the
// previous call (including pools that went away), and forgets them.
func (a *Allocator) TakeChangedPools() []string {
	if len(a.changed) == 0 {
		return nil
	}
	names := make([]string, 0, len(a.changed))
	for name := range a.changed {
		names = append(names, name)
	}
	sort.Strings(names)
	clear(a.changed)
	return names
}

// Release frees the service's addresses. It reports whether the service had any.
func (a *Allocator) Release(key string) bool {
	if a.services[key] == nil {
		return false
	}
	a.unassign(key)
	return true
}

// allocationKey identifies how the service shares its addresses; it changes when the
// allocation appears, goes away or changes keys.
func (a *Allocator) allocationKey(key string) string {
	if al := a.services[key]; al != nil {
		return al.key.backend + al.key.sharing
	}
	return ""
}

// Assign gives the service exactly ips (one address, or one of each family), if they are
// all in one pool the service may use and the addresses can be shared with their current
// users. It is idempotent.
func (a *Allocator) Assign(r *Request, ips []netip.Addr) error {
	pool := a.poolFor(ips)
	if pool == nil {
		return fmt.Errorf("%s is not allowed in config", quoted(ips))
	}
	if !compatible(pool, r) {
		return fmt.Errorf("pool %s not compatible for ip assignment", pool.Name)
	}
	if len(ips) > 2 {
		return fmt.Errorf("more than two addresses %s", quoted(ips))
	}
	if len(ips) == 2 && ips[0].Is4() == ips[1].Is4() {
		return fmt.Errorf("%q %q has the same family", ips[0], ips[1])
	}
	key := shareKey{sharing: r.SharingKey, backend: r.BackendKey}
	for _, ip := range ips {
		if err := a.checkSharing(r.Key, ip, r.Ports, key); err != nil {
			return err
		}
	}
	a.assign(r.Key, &allocation{
		pool:  pool.Name,
		ips:   slices.Clone(ips),
		ports: slices.Clone(r.Ports),
		key:   key,
	})
	return nil
}

// Allocate gives the service addresses from the best pool: first the pools reserved to
// it by namespace or service selector (by priority, unset last), then the auto-assign
// pools that reserve nothing. A service that already has addresses keeps them.
func (a *Allocator) Allocate(r *Request) ([]netip.Addr, error) {
	if al := a.services[r.Key]; al != nil {
		if err := a.Assign(r, al.ips); err != nil {
			return nil, err
		}
		return slices.Clone(al.ips), nil
	}
	if ips, err := a.allocateFrom(a.pinnedPools(r), r); err == nil {
		return ips, nil
	}
	var open []*config.Pool
	for _, name := range a.poolNames {
		if p := a.pools.ByName[name]; p.AutoAssign && p.ServiceAllocation == nil {
			open = append(open, p)
		}
	}
	if ips, err := a.allocateFrom(open, r); err == nil {
		return ips, nil
	}
	return nil, errors.New("no available IPs")
}

// AllocateFromPool gives the service addresses from the named pool, whether or not the
// pool auto-assigns. A service that already has addresses keeps them.
func (a *Allocator) AllocateFromPool(r *Request, poolName string) ([]netip.Addr, error) {
	if al := a.services[r.Key]; al != nil {
		family, err := familyOfAddrs(al.ips)
		if err != nil {
			return nil, err
		}
		if r.policy() != corev1.IPFamilyPolicyPreferDualStack && family != r.Family {
			return nil, fmt.Errorf("IP for wrong family assigned alloc %s service family %s", family, r.Family)
		}
		if err := a.Assign(r, al.ips); err != nil {
			return nil, err
		}
		return slices.Clone(al.ips), nil
	}
	pool := a.pools.ByName[poolName]
	if pool == nil {
		return nil, fmt.Errorf("unknown pool %q", poolName)
	}
	free, err := a.freeAddrs(pool, r)
	if err != nil {
		return nil, err
	}
	ips, err := free.forService(r.Family, r.policy())
	if err != nil {
		return nil, err
	}
	if err := a.Assign(r, ips); err != nil {
		return nil, err
	}
	return ips, nil
}

// AllocateAdditionalFamily adds to a service that has the single address existing an
// address of the other family from the named pool (PreferDualStack).
func (a *Allocator) AllocateAdditionalFamily(r *Request, existing netip.Addr, poolName string) (netip.Addr, error) {
	other := IPv4
	if existing.Is4() {
		other = IPv6
	}
	pool := a.pools.ByName[poolName]
	if pool == nil {
		return netip.Addr{}, fmt.Errorf("unknown pool %q", poolName)
	}
	free, err := a.freeAddrs(pool, r)
	if err != nil {
		return netip.Addr{}, err
	}
	ips, err := free.forService(other, corev1.IPFamilyPolicySingleStack)
	if err != nil {
		return netip.Addr{}, err
	}
	if err := a.Assign(r, []netip.Addr{existing, ips[0]}); err != nil {
		return netip.Addr{}, err
	}
	return ips[0], nil
}

// allocateFrom takes addresses from the first suitable pool of pools.
func (a *Allocator) allocateFrom(pools []*config.Pool, r *Request) ([]netip.Addr, error) {
	free, err := a.bestPool(pools, r)
	if err != nil {
		return nil, err
	}
	ips, err := free.forService(r.Family, r.policy())
	if err == nil && a.Assign(r, ips) == nil {
		return ips, nil
	}
	return nil, errors.New("no available IPs")
}

// bestPool returns the free addresses of the first pool that serves the service's family:
// for a dual-stack service, the first pool with both families, or under PreferDualStack
// failing that the first with the preferred family, then the first with the other.
func (a *Allocator) bestPool(pools []*config.Pool, r *Request) (*freePair, error) {
	first, second := IPv4, IPv6
	if r.IPv6First {
		first, second = IPv6, IPv4
	}
	prefer := r.policy() == corev1.IPFamilyPolicyPreferDualStack && r.Family == DualStack
	var withFirst, withSecond *freePair
	for _, pool := range pools {
		free, err := a.freeAddrs(pool, r)
		if err != nil {
			continue
		}
		if free.of(r.Family).IsValid() {
			return free, nil
		}
		hasFirst, hasSecond := free.of(first).IsValid(), free.of(second).IsValid()
		if hasFirst && hasSecond {
			return free, nil
		}
		if !prefer {
			continue
		}
		if hasFirst && withFirst == nil {
			withFirst = free
		}
		if hasSecond && withSecond == nil {
			withSecond = free
		}
	}
	if withFirst != nil {
		return withFirst, nil
	}
	if withSecond != nil {
		return withSecond, nil
	}
	return nil, fmt.Errorf("no suitable pool for %s IPFamily", r.Family)
}

// pinnedPools are the auto-assign pools that reserve themselves to the service's
// namespace (by name or by namespace selector) or select it by label, sorted by priority:
// lower first, unset (0) last, then by name.
func (a *Allocator) pinnedPools(r *Request) []*config.Pool {
	var pools []*config.Pool
	seen := map[string]bool{}
	add := func(name string) {
		p := a.pools.ByName[name]
		if p == nil || seen[name] || !p.AutoAssign || !compatible(p, r) {
			return
		}
		seen[name] = true
		pools = append(pools, p)
	}
	for _, name := range a.pools.ByNamespace[r.Namespace] {
		add(name)
	}
	for _, name := range a.pools.ByServiceSelector {
		add(name)
	}
	for _, name := range a.poolNames {
		if sa := a.pools.ByName[name].ServiceAllocation; sa != nil && anyMatches(sa.NamespaceSelectors, r.NamespaceLabels) {
			add(name)
		}
	}
	slices.SortStableFunc(pools, func(p, q *config.Pool) int {
		pp, qp := p.ServiceAllocation.Priority, q.ServiceAllocation.Priority
		switch {
		case pp == qp:
			return strings.Compare(p.Name, q.Name)
		case pp == 0:
			return 1
		case qp == 0:
			return -1
		case pp < qp:
			return -1
		}
		return 1
	})
	return pools
}

// compatible tells whether the pool's serviceAllocation lets the service use it.
func compatible(p *config.Pool, r *Request) bool {
	sa := p.ServiceAllocation
	if sa == nil {
		return true
	}
	if sa.Namespaces.Len() > 0 && !sa.Namespaces.Has(r.Namespace) && !anyMatches(sa.NamespaceSelectors, r.NamespaceLabels) {
		return false
	}
	if len(sa.ServiceSelectors) > 0 {
		return anyMatches(sa.ServiceSelectors, r.Labels)
	}
	return true
}

func anyMatches(selectors []labels.Selector, set map[string]string) bool {
	for _, s := range selectors {
		if s.Matches(labels.Set(set)) {
			return true
		}
	}
	return false
}

// poolFor returns the pool holding every address of ips, nil if none does or ips is
// empty. An address that avoidBuggyIPs excludes does not count as held.
func (a *Allocator) poolFor(ips []netip.Addr) *config.Pool {
	if len(ips) == 0 {
		return nil
	}
	for _, name := range a.poolNames {
		p := a.pools.ByName[name]
		held := 0
		for _, ip := range ips {
			if p.AvoidBuggyIPs && confusesBuggyFirmware(ip) {
				continue
			}
			for _, c := range p.CIDRs {
				if c.Contains(ip) {
					held++
					break
				}
			}
		}
		if held == len(ips) {
			return p
		}
	}
	return nil
}

// freePair holds the lowest usable address of each family found in a pool.
type freePair struct {
	pool   string
	v4, v6 netip.Addr
}

func (f *freePair) of(family Family) netip.Addr {
	switch family {
	case IPv4:
		return f.v4
	case IPv6:
		return f.v6
	}
	return netip.Addr{}
}

// forService picks the addresses for a service of the given family and policy. A
// single-family service gets its family's slot, even when the pool had nothing of that
// family (the zero Addr, which Assign then refuses).
func (f *freePair) forService(family Family, policy corev1.IPFamilyPolicy) ([]netip.Addr, error) {
	switch family {
	case IPv4:
		return []netip.Addr{f.v4}, nil
	case IPv6:
		return []netip.Addr{f.v6}, nil
	}
	both := f.v4.IsValid() && f.v6.IsValid()
	switch policy {
	case corev1.IPFamilyPolicySingleStack:
		if ip := f.of(family); ip.IsValid() {
			return []netip.Addr{ip}, nil
		}
	case corev1.IPFamilyPolicyRequireDualStack:
		if both {
			return []netip.Addr{f.v4, f.v6}, nil
		}
	case corev1.IPFamilyPolicyPreferDualStack:
		switch {
		case both:
			return []netip.Addr{f.v4, f.v6}, nil
		case f.v4.IsValid():
			return []netip.Addr{f.v4}, nil
		case f.v6.IsValid():
			return []netip.Addr{f.v6}, nil
		}
	}
	return nil, fmt.Errorf("no available IPs in pool %s for %s IPFamily", f.pool, family)
}

// freeAddrs finds, for each family, the lowest address the service can use in the first
// of the pool's CIDRs (in order) of that family that has one.
func (a *Allocator) freeAddrs(pool *config.Pool, r *Request) (*freePair, error) {
	free := &freePair{pool: pool.Name}
	key := shareKey{sharing: r.SharingKey, backend: r.BackendKey}
	for _, c := range pool.CIDRs {
		slot := &free.v6
		if c.Addr().Is4() {
			slot = &free.v4
		}
		if slot.IsValid() {
			continue
		}
		*slot = a.firstUsable(c, pool.AvoidBuggyIPs, r.Key, r.Ports, key)
	}
	if !free.v4.IsValid() && !free.v6.IsValid() {
		return nil, fmt.Errorf("no available IPs in pool %s", pool.Name)
	}
	return free, nil
}

// firstUsable returns the lowest address of c that the service can take: a free one, one
// it can share, or one only it uses. The zero Addr when there is none.
func (a *Allocator) firstUsable(c netip.Prefix, avoidBuggy bool, svc string, ports []Port, key shareKey) netip.Addr {
	last := lastAddr(c)
	skip := func(ip netip.Addr) bool { return avoidBuggy && confusesBuggyFirmware(ip) }

	// The lowest address without a sharing key.
	best := c.Addr()
	for {
		best = a.keyed.firstAbsent(best)
		if !best.IsValid() || best.Compare(last) > 0 {
			best = netip.Addr{}
			break
		}
		if !skip(best) {
			break
		}
		best = best.Next()
		if !best.IsValid() {
			break
		}
	}
	below := func(ip netip.Addr) bool { return !best.IsValid() || ip.Less(best) }

	// A lower address with the same sharing key and no port in common.
	if key.sharing != "" {
		list := a.sharedBy[key.sharing]
		i, _ := list.search(c.Addr())
		for ; i < len(list) && list[i].Compare(last) <= 0 && below(list[i]); i++ {
			if !skip(list[i]) && a.checkSharing(svc, list[i], ports, key) == nil {
				best = list[i]
				break
			}
		}
	}
	// A lower address the service itself holds.
	if al := a.services[svc]; al != nil {
		for _, ip := range al.ips {
			if c.Contains(ip) && below(ip) && !skip(ip) && a.checkSharing(svc, ip, ports, key) == nil {
				best = ip
			}
		}
	}
	return best
}

// checkSharing tells whether svc may use ip with ports and key, given its current users:
// they must all accept sharing with the same keys (unless svc is the only user, which
// may then change its key), and none of them may use one of ports.
func (a *Allocator) checkSharing(svc string, ip netip.Addr, ports []Port, key shareKey) error {
	use := a.addrs[ip]
	if use == nil || !use.hasKey {
		return nil
	}
	if sharingRefused(use.key, key) {
		var others []string
		for _, other := range use.services {
			if other != svc {
				others = append(others, other)
			}
		}
		if len(others) > 0 {
			sort.Strings(others)
			return fmt.Errorf("can't change sharing key for %q, address also in use by %s", svc, strings.Join(others, ","))
		}
	}
	for _, p := range ports {
		if owner, ok := use.portOwner(p); ok && owner != svc {
			return fmt.Errorf("port %s is already in use on %q", p, ip)
		}
	}
	return nil
}

func sharingRefused(existing, wanted shareKey) bool {
	return existing.sharing == "" || wanted.sharing == "" ||
		existing.sharing != wanted.sharing || existing.backend != wanted.backend
}

// assign records al for the service, replacing any previous allocation, without checks.
func (a *Allocator) assign(svc string, al *allocation) {
	a.unassign(svc)
	a.services[svc] = al
	u := a.usage[al.pool]
	if u == nil {
		u = &poolUsage{users: map[netip.Addr]int{}}
		a.usage[al.pool] = u
	}
	u.services++
	for _, ip := range al.ips {
		use := a.addrs[ip]
		if use == nil {
			use = &addressUse{}
			a.addrs[ip] = use
		}
		a.setKey(ip, use, al.key)
		for _, p := range al.ports {
			if i := slices.IndexFunc(use.ports, func(pu portUse) bool { return pu.port == p }); i >= 0 {
				use.ports[i].svc = svc
			} else {
				use.ports = append(use.ports, portUse{p, svc})
			}
		}
		if !slices.Contains(use.services, svc) {
			use.services = append(use.services, svc)
		}
		if u.users[ip] == 0 {
			if ip.Is4() {
				u.v4++
			} else {
				u.v6++
			}
		}
		u.users[ip]++
	}
	a.updateCounters(al.pool)
	a.markChanged(al.pool)
}

// unassign forgets the service's allocation, if any.
func (a *Allocator) unassign(svc string) {
	al := a.services[svc]
	if al == nil {
		return
	}
	delete(a.services, svc)
	u := a.usage[al.pool]
	u.services--
	for _, ip := range al.ips {
		use := a.addrs[ip]
		for _, p := range al.ports {
			i := slices.IndexFunc(use.ports, func(pu portUse) bool { return pu.port == p })
			if i < 0 || use.ports[i].svc != svc {
				owner, _ := use.portOwner(p)
				panic(fmt.Sprintf("allocator state corrupted: port %s of %s belongs to %q, not %q", p, ip, owner, svc))
			}
			use.ports = slices.Delete(use.ports, i, i+1)
		}
		use.services = slices.DeleteFunc(use.services, func(s string) bool { return s == svc })
		if len(use.ports) == 0 {
			a.clearKey(ip, use)
		}
		if !use.hasKey && len(use.services) == 0 {
			delete(a.addrs, ip)
		}
		u.users[ip]--
		if u.users[ip] == 0 {
			delete(u.users, ip)
			if ip.Is4() {
				u.v4--
			} else {
				u.v6--
			}
		}
	}
	if a.pools.ByName[al.pool] == nil {
		a.deleteMetrics(al.pool)
		if len(u.users) == 0 && u.services == 0 {
			delete(a.usage, al.pool)
		}
		return
	}
	a.updateCounters(al.pool)
	a.markChanged(al.pool)
}

func (a *Allocator) setKey(ip netip.Addr, use *addressUse, key shareKey) {
	if use.hasKey {
		if use.key == key {
			return
		}
		a.unindex(ip, use.key.sharing)
	} else {
		a.keyed.add(ip)
	}
	use.hasKey, use.key = true, key
	if key.sharing != "" {
		a.sharedBy[key.sharing] = a.sharedBy[key.sharing].insert(ip)
	}
}

func (a *Allocator) clearKey(ip netip.Addr, use *addressUse) {
	if !use.hasKey {
		return
	}
	a.keyed.remove(ip)
	a.unindex(ip, use.key.sharing)
	use.hasKey, use.key = false, shareKey{}
}

func (a *Allocator) unindex(ip netip.Addr, sharing string) {
	if sharing == "" {
		return
	}
	if l := a.sharedBy[sharing].remove(ip); len(l) > 0 {
		a.sharedBy[sharing] = l
	} else {
		delete(a.sharedBy, sharing)
	}
}

func (a *Allocator) markChanged(pool string) {
	a.changed[pool] = struct{}{}
}

// updateCounters publishes the pool's metrics.
func (a *Allocator) updateCounters(pool string) {
	p := a.pools.ByName[pool]
	if p == nil {
		return
	}
	total, v4, v6 := capacity(p)
	u := a.usage[pool]
	if u == nil {
		u = &poolUsage{}
	}
	a.publish(pool, total, v4, v6, u)
}

// capacity counts the usable addresses of a pool: all, IPv4, IPv6. A CIDR of 2^62
// addresses or more makes the count (and the IPv6 count) math.MaxInt64.
func capacity(p *config.Pool) (total, v4, v6 int64) {
	for _, c := range p.CIDRs {
		hostBits := c.Addr().BitLen() - c.Bits()
		if hostBits >= 62 {
			total, v6 = math.MaxInt64, math.MaxInt64
			continue
		}
		size := int64(1) << hostBits
		if p.AvoidBuggyIPs {
			if c.Bits() <= 24 {
				// Each /24 holds one .0 and one .255.
				size -= int64(2) << (24 - c.Bits())
			} else {
				if confusesBuggyFirmware(c.Addr()) {
					size--
				}
				if confusesBuggyFirmware(lastAddr(c)) {
					size--
				}
			}
		}
		total = saturatingAdd(total, size)
		if c.Addr().Is4() {
			v4 += size
		} else {
			v6 = saturatingAdd(v6, size)
		}
	}
	return total, v4, v6
}

func saturatingAdd(sum, n int64) int64 {
	if n > 0 && sum > math.MaxInt64-n {
		return math.MaxInt64
	}
	return sum + n
}
