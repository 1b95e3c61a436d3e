// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"net/netip"
	"slices"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/datapath/maglev"
)

// wantedService is a valid service reduced to what the maps hold.
type wantedService struct {
	key bpf.LBVipKey
	// backends have positive weights, one per address; Key holds the address bytes.
	backends []maglev.Backend
	flags    bpf.LBVipFlags
	// digest fingerprints everything the ring depends on, so an unchanged ring is not rebuilt,
	// also by a restarted process.
	digest uint64
}

// plan turns the services into what the maps must hold. Invalid services and every copy of
// a service listed twice are left out and returned with their reason; the others are planned.
func plan(want []datapath.Service, config maglev.Config) (map[bpf.LBVipKey]wantedService, map[datapath.ServiceKey]error) {
	wanted := make(map[bpf.LBVipKey]wantedService, len(want))
	failed := map[datapath.ServiceKey]error{}
	for _, s := range want {
		if err := s.Validate(); err != nil {
			failed[s.Key()] = err
			continue
		}
		key := vipKey(s.Key())
		if _, dup := wanted[key]; dup || failed[s.Key()] != nil {
			delete(wanted, key)
			failed[s.Key()] = fmt.Errorf("service %s: listed twice", s.Key())
			continue
		}
		w := wantedService{key: key, backends: mergeBackends(s.Backends)}
		if s.Encap == datapath.EncapGUE {
			w.flags = bpf.LBVipFlagsVIP_GUE
		}
		w.digest = ringDigest(w.backends, config)
		wanted[key] = w
	}
	return wanted, failed
}

// mergeBackends sums the weights of repeated addresses, drops zero weights and sorts.
func mergeBackends(backends []datapath.Backend) []maglev.Backend {
	weights := map[netip.Addr]uint64{}
	for _, b := range backends {
		weights[b.Addr] += uint64(b.Weight)
	}
	merged := make([]maglev.Backend, 0, len(weights))
	for addr, weight := range weights {
		if weight > 0 {
			merged = append(merged, maglev.Backend{Key: string(addr.AsSlice()), Weight: uint32(min(weight, math.MaxUint32))})
		}
	}
	slices.SortFunc(merged, func(a, b maglev.Backend) int { return cmp.Compare(a.Key, b.Key) })
	return merged
}

func backendAddr(b maglev.Backend) netip.Addr {
	addr, _ := netip.AddrFromSlice([]byte(b.Key))
	return addr
}

func ringDigest(backends []maglev.Backend, config maglev.Config) uint64 {
	h := fnv.New64a()
	_ = binary.Write(h, binary.BigEndian, uint32(maglev.Version))
	_ = binary.Write(h, binary.BigEndian, config)
	for _, b := range backends {
		h.Write([]byte(b.Key))
		_ = binary.Write(h, binary.BigEndian, b.Weight)
	}
	return h.Sum64()
}

// fragmentOwners maps, for each VIP address and protocol without an all-ports service, the
// all-ports key to the port-specific service with the lowest port. Fragments carry no port,
// so that service's ring steers all fragments to the address; services of one VIP usually
// share their backends.
func fragmentOwners(wanted map[bpf.LBVipKey]wantedService) map[bpf.LBVipKey]bpf.LBVipKey {
	owners := map[bpf.LBVipKey]bpf.LBVipKey{}
	for _, key := range slices.SortedFunc(maps.Keys(wanted), compareVIPKeys) {
		allPorts := key
		allPorts.Port = 0
		if _, ok := wanted[allPorts]; ok {
			continue
		}
		if _, ok := owners[allPorts]; !ok {
			owners[allPorts] = key
		}
	}
	return owners
}

// compareVIPKeys orders keys of one address and protocol by port in host order.
func compareVIPKeys(a, b bpf.LBVipKey) int {
	return cmp.Or(
		slices.Compare(a.Addr[:], b.Addr[:]),
		cmp.Compare(a.Family, b.Family),
		cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(networkOrder16(a.Port), networkOrder16(b.Port)),
	)
}

// wantedBackends returns every backend address the services use.
func wantedBackends(wanted map[bpf.LBVipKey]wantedService) []netip.Addr {
	set := map[netip.Addr]bool{}
	for _, w := range wanted {
		for _, b := range w.backends {
			set[backendAddr(b)] = true
		}
	}
	return slices.SortedFunc(maps.Keys(set), netip.Addr.Compare)
}
