// SPDX-License-Identifier: Apache-2.0

// Package ebpf is the XDP datapath: it loads the load balancer from package bpf, attaches it
// to the uplink, pins its maps and link so that a restarted process adopts them without
// interrupting forwarding, and keeps the maps equal to the wanted services (Sync).
package ebpf

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/go-kit/log/level"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
)

// Datapath is the XDP load balancer of one node.
type Datapath struct {
	opts     Options
	objs     bpf.LBObjects
	ringSpec *ebpf.MapSpec
	// emptyRing fills ring slots no service uses, so that the rings they held are freed.
	emptyRing *ebpf.Map
	link      link.Link
	nextHops  *nextHopResolver
	pins      *pinSet

	mu     sync.Mutex
	closed bool
	// What the maps hold, so that Sync writes only differences.
	vips         map[bpf.LBVipKey]bpf.LBVipMeta
	vipAddresses map[bpf.LBVipAddress]bool
	backends     map[netip.Addr]programmedBackend
	serviceIDs   *idPool
	backendIDs   *idPool
	generation   uint32 // of the last backend written; generation 0 marks a free id
}

type programmedBackend struct {
	id    uint32
	entry bpf.LBBackend
}

var (
	_ datapath.Datapath    = (*Datapath)(nil)
	_ datapath.StatsReader = (*Datapath)(nil)
)

// New loads the load balancer, adopting maps and the link pinned by a previous process, and
// attaches it to opts.Interface. Netlink and the attachment use the caller's network namespace.
func New(opts Options) (*Datapath, error) {
	opts, err := withInterfaceSources(opts)
	if err != nil {
		return nil, err
	}
	if err := ensurePinPath(opts.PinPath); err != nil {
		return nil, err
	}
	spec, err := bpf.LoadLB()
	if err != nil {
		return nil, err
	}
	if err := configureSpec(spec, opts); err != nil {
		return nil, err
	}
	d := &Datapath{
		opts:         opts,
		ringSpec:     spec.Maps[bpf.LBMapRings].InnerMap.Copy(),
		vips:         map[bpf.LBVipKey]bpf.LBVipMeta{},
		vipAddresses: map[bpf.LBVipAddress]bool{},
		backends:     map[netip.Addr]programmedBackend{},
		serviceIDs:   newIDPool(opts.MaxServices),
		backendIDs:   newIDPool(opts.MaxBackends),
	}
	pinned := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinPath}}
	err = spec.LoadAndAssign(&d.objs, pinned)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Maps pinned with other sizes (another MaxServices, say) are recreated: the attached
		// program forwards with the old ones until the new program replaces it, Sync then
		// programs every service afresh, and established flows choose their backend again.
		level.Warn(opts.Logger).Log("op", "loadDatapath", "msg", "pinned maps have other sizes or layouts: recreating them", "pinPath", opts.PinPath, "error", err)
		if err = unpinMaps(spec, opts.PinPath); err == nil {
			err = spec.LoadAndAssign(&d.objs, pinned)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("loading the load balancer: %w", err)
	}
	empty := d.ringSpec.Copy()
	empty.MaxEntries = 1
	if d.emptyRing, err = ebpf.NewMap(empty); err != nil {
		_ = d.objs.Close()
		return nil, err
	}
	if d.nextHops, err = newNextHopResolver(); err != nil {
		_ = d.release(true)
		return nil, err
	}
	if err := d.adopt(); err != nil {
		_ = d.release(true)
		return nil, err
	}
	if opts.Interface != "" {
		if d.link, err = attachXDP(d.objs.XdpBalance, opts.Interface, opts.XDPMode, linkPinFile(opts.PinPath, "xdp", opts.Interface)); err != nil {
			_ = d.release(true)
			return nil, err
		}
	}
	if d.pins, err = newPinSet(d.pinned()); err != nil {
		_ = d.release(true)
		return nil, err
	}
	return d, nil
}

// pinnedMaps are the maps pinned by name in the pin path.
func (d *Datapath) pinnedMaps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		bpf.LBMapVips: d.objs.Vips, bpf.LBMapVipAddresses: d.objs.VipAddresses, bpf.LBMapRings: d.objs.Rings,
		bpf.LBMapBackends: d.objs.Backends, bpf.LBMapFlows: d.objs.Flows, bpf.LBMapVipStats: d.objs.VipStats,
		bpf.LBMapGlobalStats: d.objs.GlobalStats,
	}
}

// pinned is every pinned object by its pin file.
func (d *Datapath) pinned() map[string]pinnable {
	links := map[string]link.Link{}
	if d.link != nil {
		links[linkPinFile(d.opts.PinPath, "xdp", d.opts.Interface)] = d.link
	}
	return pinnedObjects(d.opts.PinPath, d.pinnedMaps(), links)
}

// RestorePins pins again the maps and link whose pin files were removed under the running
// process, and returns their paths; see PinGuard.
func (d *Datapath) RestorePins() ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, nil
	}
	return d.pins.restore()
}

// unpinMaps removes the pins of the spec's maps from dir.
func unpinMaps(spec *ebpf.CollectionSpec, dir string) error {
	for name, m := range spec.Maps {
		if m.Pinning != ebpf.PinByName {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing pinned map %s: %w", name, err)
		}
	}
	return nil
}

// configureSpec sizes the maps and sets the constants of the load balancer's spec.
func configureSpec(spec *ebpf.CollectionSpec, opts Options) error {
	sizes := map[string]int{
		bpf.LBMapVips:         2 * opts.MaxServices,
		bpf.LBMapVipAddresses: opts.MaxServices,
		bpf.LBMapRings:        2 * opts.MaxServices,
		bpf.LBMapVipStats:     opts.MaxServices,
		bpf.LBMapBackends:     opts.MaxBackends,
		bpf.LBMapFlows:        opts.MaxFlows,
	}
	for name, size := range sizes {
		spec.Maps[name].MaxEntries = uint32(size)
	}
	return spec.Variables[bpf.LBVarSettings].Set(settings(opts))
}

// settings are the load balancer's constants.
func settings(opts Options) bpf.LBConfig {
	c := bpf.LBConfig{
		FlowSeed: opts.FlowHashSeed,
		GuePort:  networkOrder16(opts.GUEPort),
		Source4:  addrWords(opts.TunnelSource4.Masked().Addr())[0],
		Source6:  addrWords(opts.TunnelSource6.Masked().Addr()),
	}
	c.Source4Mask = addrWords(hostMask(opts.TunnelSource4.Bits()))[0]
	c.Source6Mask = addrWords(hostMask(max(opts.TunnelSource6.Bits(), 96) - 96))[0]
	return c
}

// hostMask returns, as an IPv4 address, the 32-bit mask of the bits after prefixBits.
func hostMask(prefixBits int) netip.Addr {
	mask := uint32(0)
	if prefixBits < 32 {
		mask = ^uint32(0) >> prefixBits
	}
	return netip.AddrFrom4([4]byte{byte(mask >> 24), byte(mask >> 16), byte(mask >> 8), byte(mask)})
}

// adopt reads what a previous process left in the pinned maps.
func (d *Datapath) adopt() error {
	var (
		key  bpf.LBVipKey
		meta bpf.LBVipMeta
	)
	vips := d.objs.Vips.Iterate()
	for vips.Next(&key, &meta) {
		d.vips[key] = meta
		if meta.Flags&bpf.LBVipFlagsVIP_FRAGMENTS_ONLY == 0 {
			d.serviceIDs.markUsed(meta.Id)
		}
	}
	if err := vips.Err(); err != nil {
		return fmt.Errorf("reading pinned VIPs: %w", err)
	}

	var (
		addr    bpf.LBVipAddress
		present uint8
	)
	addrs := d.objs.VipAddresses.Iterate()
	for addrs.Next(&addr, &present) {
		d.vipAddresses[addr] = true
	}
	if err := addrs.Err(); err != nil {
		return fmt.Errorf("reading pinned VIP addresses: %w", err)
	}

	var (
		id      uint32
		backend bpf.LBBackend
	)
	backends := d.objs.Backends.Iterate()
	for backends.Next(&id, &backend) {
		if backend.Generation == 0 {
			continue
		}
		d.backends[wordsAddr(backend.Addr, backend.Family)] = programmedBackend{id: id, entry: backend}
		d.backendIDs.markUsed(id)
		d.generation = max(d.generation, backend.Generation)
	}
	return backends.Err()
}

// Close detaches the program and removes the pinned state, unless Options.KeepOnClose is set:
// then forwarding goes on with the current state until a new process adopts it.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.release(d.opts.KeepOnClose)
}

func (d *Datapath) release(keep bool) error {
	pinned := slices.Collect(maps.Values(d.pinnedMaps()))
	closers := []interface{ Close() error }{&d.objs, d.emptyRing}
	if d.nextHops != nil {
		closers = append(closers, d.nextHops)
	}
	return release(d.link, pinned, closers, keep, d.opts.PinPath)
}

// idPool hands out the lowest free id below a limit.
type idPool struct {
	used   []bool
	lowest int // no free id below
	inUse  int
}

func newIDPool(limit int) *idPool {
	return &idPool{used: make([]bool, limit)}
}

var errPoolFull = errors.New("no free id")

func (p *idPool) take() (uint32, error) {
	for i := p.lowest; i < len(p.used); i++ {
		if !p.used[i] {
			p.used[i] = true
			p.lowest = i + 1
			p.inUse++
			return uint32(i), nil
		}
	}
	return 0, errPoolFull
}

func (p *idPool) markUsed(id uint32) {
	if int(id) < len(p.used) && !p.used[id] {
		p.used[id] = true
		p.inUse++
	}
}

func (p *idPool) release(id uint32) {
	if int(id) < len(p.used) && p.used[id] {
		p.used[id] = false
		p.lowest = min(p.lowest, int(id))
		p.inUse--
	}
}
