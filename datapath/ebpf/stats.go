// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
)

// dropReasons names the program's drop counters for metrics, in enum drop_reason order.
var dropReasons = [bpf.LBDropReasonDROP_REASONS]string{
	bpf.LBDropReasonDROP_NO_BACKEND: "no_backend",
	bpf.LBDropReasonDROP_NO_ROUTE:   "no_route",
	bpf.LBDropReasonDROP_ENCAP:      "encap",
	bpf.LBDropReasonDROP_TTL:        "ttl_exceeded",
	// Too big once encapsulated: answered with ICMP fragmentation needed / packet too big.
	bpf.LBDropReasonDROP_FRAGMENTATION_NEEDED: "fragmentation_needed",
	// Too big and not answered: IPv4 without DF, ICMP errors, too short to quote.
	bpf.LBDropReasonDROP_TOO_BIG: "too_big",
	// To a VIP address, neither TCP, UDP nor ICMP.
	bpf.LBDropReasonDROP_PROTOCOL: "protocol",
	// To a VIP address, with more IPv6 extension headers than the program walks.
	bpf.LBDropReasonDROP_IPV6HEADERS: "ipv6_extension_headers",
	// ICMP to a VIP address that is neither echo nor an error about a service's flow.
	bpf.LBDropReasonDROP_ICMP: "icmp",
	// TCP or UDP to a VIP address on a port none of its services has.
	bpf.LBDropReasonDROP_PORT: "port",
	// IPv4 with options, to a VIP address.
	bpf.LBDropReasonDROP_IPV4OPTIONS: "ipv4_options",
}

// Stats sums the per-CPU counters of every programmed service and the global ones.
func (d *Datapath) Stats() (datapath.Stats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	global, err := readStats(d.objs.GlobalStats, 0)
	if err != nil {
		return datapath.Stats{}, err
	}
	stats := datapath.Stats{
		Global: global, Services: map[datapath.ServiceKey]datapath.Counters{},
		ServiceIDs: d.serviceIDs.inUse, ServiceIDCapacity: len(d.serviceIDs.used),
	}
	for key, meta := range d.vips {
		if meta.Flags&bpf.LBVipFlagsVIP_FRAGMENTS_ONLY != 0 {
			continue
		}
		if stats.Services[serviceKey(key)], err = readStats(d.objs.VipStats, meta.Id); err != nil {
			return datapath.Stats{}, err
		}
	}
	if stats.MapEntries, err = d.mapEntries(); err != nil {
		return datapath.Stats{}, err
	}
	return stats, nil
}

// mapEntries counts what the kernel's maps hold, not what this process believes they hold:
// the two differ when state leaked.
func (d *Datapath) mapEntries() (map[string]int, error) {
	emptyRing, err := d.emptyRing.Info()
	if err != nil {
		return nil, err
	}
	emptyRingID, _ := emptyRing.ID()
	var errs [4]error
	entries := map[string]int{}
	entries[bpf.LBMapVips], errs[0] = countEntries[bpf.LBVipKey](d.objs.Vips, func(bpf.LBVipMeta) bool { return true })
	entries[bpf.LBMapVipAddresses], errs[1] = countEntries[bpf.LBVipAddress](d.objs.VipAddresses, func(uint8) bool { return true })
	entries[bpf.LBMapBackends], errs[2] = countEntries[uint32](d.objs.Backends, func(b bpf.LBBackend) bool { return b.Generation != 0 })
	// A ring slot no service uses points at the empty placeholder ring (or at none).
	entries[bpf.LBMapRings], errs[3] = countEntries[uint32](d.objs.Rings, func(ring uint32) bool { return ring != uint32(emptyRingID) })
	return entries, errors.Join(errs[:]...)
}

// countEntries counts the entries of m whose value used accepts, in batches.
func countEntries[K any, V any](m *ebpf.Map, used func(V) bool) (int, error) {
	const batch = 4096
	keys, values := make([]K, batch), make([]V, batch)
	var cursor ebpf.MapBatchCursor
	n := 0
	for {
		got, err := m.BatchLookup(&cursor, keys, values, nil)
		for _, v := range values[:got] {
			if used(v) {
				n++
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("counting the entries of %s: %w", m, err)
		}
	}
}

func readStats(m *ebpf.Map, index uint32) (datapath.Counters, error) {
	var perCPU []bpf.LBStats
	if err := m.Lookup(index, &perCPU); err != nil {
		return datapath.Counters{}, fmt.Errorf("reading counters %d: %w", index, err)
	}
	c := datapath.Counters{Drops: map[string]uint64{}}
	for _, s := range perCPU {
		c.Packets += s.Packets
		c.Bytes += s.Bytes
		c.NewFlows += s.NewFlows
		c.LRUMisses += s.LruMisses
		for reason, n := range s.Drops {
			c.Drops[dropReasons[reason]] += n
		}
	}
	return c, nil
}

// resetStats zeroes a service id's counters before the id serves a new service.
func (d *Datapath) resetStats(id uint32) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	return d.objs.VipStats.Put(id, make([]bpf.LBStats, cpus))
}
