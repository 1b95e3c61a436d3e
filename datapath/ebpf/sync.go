// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/go-kit/log/level"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
)

// Sync makes the maps hold want. A service that cannot be programmed (invalid, listed twice,
// no free id, its ring or a backend not written) is left out, releasing what it took, and
// reported in a *datapath.SyncError; the others are programmed. The order of writes keeps
// every packet on a complete state: backends before the rings that name them, a ring before
// the VIP meta that points to it (the spare ring is written, then the meta flips to it), and
// removals last.
func (d *Datapath) Sync(ctx context.Context, want []datapath.Service) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("datapath closed")
	}
	wanted, failed := plan(want, d.opts.Maglev)
	if err := d.apply(ctx, wanted, failed); err != nil {
		return err
	}
	if len(failed) > 0 {
		return &datapath.SyncError{Services: failed}
	}
	return nil
}

// apply programs wanted, moving the services it cannot program to failed.
func (d *Datapath) apply(ctx context.Context, wanted map[bpf.LBVipKey]wantedService, failed map[datapath.ServiceKey]error) error {
	badBackends, err := d.writeBackends(wantedBackends(wanted))
	if err != nil {
		return err
	}
	for key, w := range wanted {
		for _, b := range w.backends {
			if err := badBackends[backendAddr(b)]; err != nil {
				failed[serviceKey(key)] = err
				delete(wanted, key)
				break
			}
		}
	}
	retired, err := d.writeServices(ctx, wanted, failed)
	if err != nil {
		return err
	}
	owners := fragmentOwners(wanted)
	more, err := d.writeFragmentEntries(owners)
	retired = append(retired, more...)
	if err != nil {
		return err
	}
	more, err = d.removeServices(wanted, owners)
	retired = append(retired, more...)
	if err := errors.Join(err, d.clearRings(retired)); err != nil {
		return err
	}
	return errors.Join(d.removeBackends(wantedBackends(wanted)), d.writeVIPAddresses(wanted))
}

// writeBackends gives each wanted backend an id and writes its entry with a fresh next hop.
// It returns the backends it could not write.
func (d *Datapath) writeBackends(addrs []netip.Addr) (map[netip.Addr]error, error) {
	known, err := d.nextHops.neighbours()
	if err != nil {
		return nil, fmt.Errorf("listing neighbours: %w", err)
	}
	failed := map[netip.Addr]error{}
	for _, addr := range addrs {
		nh := d.nextHops.resolve(addr, known)
		entry := bpf.LBBackend{
			Addr:       addrWords(addr),
			Ifindex:    nh.ifindex,
			SourceMac:  nh.sourceMAC,
			NextHopMac: nh.mac,
			Family:     familyOf(addr),
			Local:      boolByte(nh.local),
			Mtu:        nh.mtu,
		}
		programmed, ok := d.backends[addr]
		if ok {
			entry.Generation = programmed.entry.Generation
			if entry == programmed.entry {
				continue
			}
		} else {
			if programmed.id, err = d.backendIDs.take(); err != nil {
				failed[addr] = fmt.Errorf("backend %s: %w: all %d backend ids are in use", addr, err, d.opts.MaxBackends)
				continue
			}
			d.generation++
			if d.generation == 0 {
				d.generation++
			}
			entry.Generation = d.generation
		}
		if err := d.objs.Backends.Put(programmed.id, entry); err != nil {
			if !ok {
				d.backendIDs.release(programmed.id)
			}
			failed[addr] = fmt.Errorf("backend %s: %w", addr, err)
			continue
		}
		programmed.entry = entry
		d.backends[addr] = programmed
	}
	return failed, nil
}

// A new ring goes into the service's spare slot; the meta flips to it once all new rings are
// installed. Installing or clearing slots of the rings map makes the kernel wait for an RCU
// grace period, so Sync installs all rings in one batch and clears all retired ones in another.

// pendingService is a service whose new ring is built but not yet in use.
type pendingService struct {
	key     bpf.LBVipKey
	meta    bpf.LBVipMeta
	retired []uint32 // the slot it used before
	ring    *ebpf.Map
}

// ringsPerBatch bounds the rings open at once (file descriptors) between two batches.
const ringsPerBatch = 512

// writeServices programs the services that are not programmed as wanted, and returns the ring
// slots they no longer use. A service it cannot program moves from wanted to failed.
func (d *Datapath) writeServices(ctx context.Context, wanted map[bpf.LBVipKey]wantedService, failed map[datapath.ServiceKey]error) (retired []uint32, err error) {
	var pending []pendingService
	defer func() { closeRings(pending) }()
	for _, key := range slices.SortedFunc(maps.Keys(wanted), compareVIPKeys) {
		if err := ctx.Err(); err != nil {
			d.releaseIDs(pending)
			return retired, err
		}
		p, changed, err := d.prepareService(wanted[key])
		if err != nil {
			failed[serviceKey(key)] = fmt.Errorf("service %s: %w", serviceKey(key), err)
			delete(wanted, key)
			continue
		}
		if !changed {
			continue
		}
		pending = append(pending, p)
		if len(pending) == ringsPerBatch {
			more, err := d.commitServices(pending, wanted, failed)
			retired = append(retired, more...)
			closeRings(pending)
			pending = nil
			if err != nil {
				return retired, err
			}
		}
	}
	more, err := d.commitServices(pending, wanted, failed)
	return append(retired, more...), err
}

// commitServices installs the new rings in one batch, then flips each service's meta to its
// new ring, and returns the slots the services used before. A service whose meta cannot be
// written moves from wanted to failed; a new one gives back its slot and id.
func (d *Datapath) commitServices(pending []pendingService, wanted map[bpf.LBVipKey]wantedService, failed map[datapath.ServiceKey]error) (retired []uint32, err error) {
	var slots, rings []uint32
	for _, p := range pending {
		if p.ring != nil {
			slots = append(slots, p.meta.Ring)
			rings = append(rings, uint32(p.ring.FD()))
		}
	}
	if err := d.batchRings(slots, rings); err != nil {
		d.releaseIDs(pending)
		return nil, fmt.Errorf("installing rings: %w", err)
	}
	for _, p := range pending {
		if err := d.putVIP(p.key, p.meta); err != nil {
			failed[serviceKey(p.key)] = fmt.Errorf("service %s: %w", serviceKey(p.key), err)
			delete(wanted, p.key)
			if len(p.retired) == 0 {
				// Cleared now, since a later batch of this Sync may take the id again.
				if err := d.clearRings([]uint32{p.meta.Ring}); err != nil {
					return retired, err
				}
				d.serviceIDs.release(p.meta.Id)
			}
			continue
		}
		level.Debug(d.opts.Logger).Log("msg", "programmed service", "service", serviceKey(p.key), "ring", p.meta.Ring, "size", p.meta.RingSize)
		retired = append(retired, p.retired...)
	}
	return retired, nil
}

// closeRings closes the descriptors of built rings; the rings map holds its own references.
func closeRings(pending []pendingService) {
	for _, p := range pending {
		if p.ring != nil {
			_ = p.ring.Close()
		}
	}
}

// prepareService builds what a service needs when it is not programmed as wanted. A change
// of the encapsulation alone is written at once: it needs no new ring.
func (d *Datapath) prepareService(w wantedService) (p pendingService, changed bool, err error) {
	old, exists := d.vips[w.key]
	if exists && old.Flags&bpf.LBVipFlagsVIP_FRAGMENTS_ONLY != 0 {
		// A fragments-only entry held this all-ports key: the new service replaces it.
		exists = false
	}
	if exists && old.Digest == w.digest {
		if old.Flags != w.flags {
			meta := old
			meta.Flags = w.flags
			err = d.putVIP(w.key, meta)
		}
		return p, false, err
	}

	p = pendingService{key: w.key, meta: bpf.LBVipMeta{Digest: w.digest, Flags: w.flags}}
	if exists {
		p.meta.Id = old.Id
		p.meta.Ring = old.Ring ^ 1 // the spare of the service's two slots
		p.retired = []uint32{old.Ring}
	} else {
		if p.meta.Id, err = d.serviceIDs.take(); err != nil {
			return p, false, fmt.Errorf("%w: all %d service ids are in use (MaxServices, the speaker's --datapath-max-services)", err, d.opts.MaxServices)
		}
		p.meta.Ring = 2 * p.meta.Id
		if err := d.resetStats(p.meta.Id); err != nil {
			d.serviceIDs.release(p.meta.Id)
			return p, false, err
		}
	}
	if len(w.backends) == 0 {
		return p, true, nil // no ring (size 0): packets are dropped and counted
	}
	if p.ring, err = d.buildRing(w); err != nil {
		if !exists {
			d.serviceIDs.release(p.meta.Id)
		}
		return p, false, err
	}
	p.meta.RingSize = d.opts.Maglev.Size(len(w.backends))
	return p, true, nil
}

// releaseIDs returns the ids taken for new services that were not programmed.
func (d *Datapath) releaseIDs(pending []pendingService) {
	for _, p := range pending {
		if len(p.retired) == 0 {
			d.serviceIDs.release(p.meta.Id)
		}
	}
}

// ringIDsPerBlock backend ids of 16 bits share each element of a ring (RING_IDS_PER_BLOCK).
const ringIDsPerBlock = 4

// buildRing returns a new ring holding the service's Maglev table.
func (d *Datapath) buildRing(w wantedService) (*ebpf.Map, error) {
	table, err := d.opts.Maglev.Build(w.backends)
	if err != nil {
		return nil, err
	}
	blocks := make([][ringIDsPerBlock]uint16, (len(table.Entries)+ringIDsPerBlock-1)/ringIDsPerBlock)
	indexes := make([]uint32, len(blocks))
	for i := range indexes {
		indexes[i] = uint32(i)
	}
	for i, e := range table.Entries {
		blocks[i/ringIDsPerBlock][i%ringIDsPerBlock] = uint16(d.backends[backendAddr(table.Backends[e])].id)
	}
	spec := d.ringSpec.Copy()
	spec.MaxEntries = uint32(len(blocks))
	ring, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("creating ring: %w", err)
	}
	if _, err := ring.BatchUpdate(indexes, blocks, nil); err != nil {
		_ = ring.Close()
		return nil, fmt.Errorf("filling ring: %w", err)
	}
	return ring, nil
}

// clearRings points retired slots at the empty placeholder ring, which frees their rings:
// deleting slots one by one would cost a grace period each.
func (d *Datapath) clearRings(slots []uint32) error {
	fds := make([]uint32, len(slots))
	for i := range fds {
		fds[i] = uint32(d.emptyRing.FD())
	}
	if err := d.batchRings(slots, fds); err != nil {
		return fmt.Errorf("clearing rings: %w", err)
	}
	return nil
}

func (d *Datapath) batchRings(slots, fds []uint32) error {
	if len(slots) == 0 {
		return nil
	}
	_, err := d.objs.Rings.BatchUpdate(slots, fds, nil)
	return err
}

func (d *Datapath) putVIP(key bpf.LBVipKey, meta bpf.LBVipMeta) error {
	if err := d.objs.Vips.Put(key, meta); err != nil {
		return err
	}
	d.vips[key] = meta
	return nil
}

// writeFragmentEntries points each all-ports key in owners at its owner's ring, flagged
// fragments only. A service that held such a key is gone from wanted: its rings are returned.
func (d *Datapath) writeFragmentEntries(owners map[bpf.LBVipKey]bpf.LBVipKey) (retired []uint32, err error) {
	for key, owner := range owners {
		meta := d.vips[owner]
		meta.Flags |= bpf.LBVipFlagsVIP_FRAGMENTS_ONLY
		old, exists := d.vips[key]
		if exists && old == meta {
			continue
		}
		if err := d.putVIP(key, meta); err != nil {
			return retired, fmt.Errorf("fragment entry of %s: %w", serviceKey(owner), err)
		}
		if exists && old.Flags&bpf.LBVipFlagsVIP_FRAGMENTS_ONLY == 0 {
			retired = append(retired, d.retireService(old)...)
		}
	}
	return retired, nil
}

// removeServices deletes the VIP entries that are neither wanted services nor wanted
// fragment entries, and returns the rings they used.
func (d *Datapath) removeServices(wanted map[bpf.LBVipKey]wantedService, owners map[bpf.LBVipKey]bpf.LBVipKey) (retired []uint32, err error) {
	for key, meta := range d.vips {
		fragmentsOnly := meta.Flags&bpf.LBVipFlagsVIP_FRAGMENTS_ONLY != 0
		if _, ok := wanted[key]; ok && !fragmentsOnly {
			continue
		}
		if _, ok := owners[key]; ok && fragmentsOnly {
			continue
		}
		if err := d.objs.Vips.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return retired, fmt.Errorf("removing %s: %w", serviceKey(key), err)
		}
		delete(d.vips, key)
		if !fragmentsOnly {
			level.Debug(d.opts.Logger).Log("msg", "removed service", "service", serviceKey(key))
			retired = append(retired, d.retireService(meta)...)
		}
	}
	return retired, nil
}

// retireService frees a removed service's id and returns both of its ring slots.
func (d *Datapath) retireService(meta bpf.LBVipMeta) []uint32 {
	d.serviceIDs.release(meta.Id)
	return []uint32{2 * meta.Id, 2*meta.Id + 1}
}

// removeBackends frees the backends no service uses any more. Their generation becomes 0, so
// flows still pointing at them pick a backend from their ring again.
func (d *Datapath) removeBackends(wanted []netip.Addr) error {
	for addr, programmed := range d.backends {
		if _, ok := slices.BinarySearchFunc(wanted, addr, netip.Addr.Compare); ok {
			continue
		}
		if err := d.objs.Backends.Put(programmed.id, bpf.LBBackend{}); err != nil {
			return fmt.Errorf("removing backend %s: %w", addr, err)
		}
		d.backendIDs.release(programmed.id)
		delete(d.backends, addr)
	}
	return nil
}
