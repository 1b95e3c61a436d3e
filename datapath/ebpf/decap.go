// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/maglb/maglb/bpf"
)

// DecapOptions configure the decapsulation program of a backend node.
type DecapOptions struct {
	// Interfaces receive the tunnelled packets. Empty: loaded but not attached (tests).
	Interfaces []string
	// Hook is where the program attaches: DecapAuto (the default), DecapXDP or DecapTCX.
	Hook DecapHook
	// XDPMode is native (the default) or generic, for DecapXDP.
	XDPMode XDPMode
	// PinPath is the bpffs directory for the maps and the links; it may be the load
	// balancer's.
	PinPath string
	// GUEPort is the UDP port GUE packets arrive on; it must match the load balancers'.
	GUEPort uint16
	// Addresses are the node's addresses: only packets tunnelled to one of them are opened.
	Addresses []netip.Addr
	// AllowedSources are the outer source prefixes tunnelled packets may come from (the load
	// balancers); packets tunnelled to the node from anywhere else are dropped.
	AllowedSources []netip.Prefix
	// KeepOnClose leaves the program attached and the maps pinned on Close, for a restart.
	KeepOnClose bool
}

// DecapHook is where the decapsulation program attaches to an interface.
type DecapHook string

const (
	// DecapAuto is DecapTCX on an interface where another XDP program (the load balancer's)
	// is attached, DecapXDP elsewhere.
	DecapAuto DecapHook = "auto"
	// DecapXDP runs first, before any socket buffer exists; the interface's one XDP program.
	DecapXDP DecapHook = "xdp"
	// DecapTCX runs at TC ingress, after the XDP program, whose XDP_PASS it sees.
	DecapTCX DecapHook = "tcx"
)

// decapXDPName is the name the kernel knows the XDP decapsulation program by.
const decapXDPName = bpf.DecapProgXdpDecap

// resolveHook is the hook for an interface whose attached XDP program is named attachedXDP
// ("" when none is).
func resolveHook(hook DecapHook, attachedXDP string) DecapHook {
	if hook != DecapAuto {
		return hook
	}
	if attachedXDP != "" && attachedXDP != decapXDPName {
		return DecapTCX
	}
	return DecapXDP
}

// attachedXDPName names the XDP program attached to the interface, "" when none is: the
// decapsulation program's name when it is the one the link pinned at pinFile attached (an
// earlier run's), another name otherwise. Opening a program by its ID would need
// CAP_SYS_ADMIN; the pinned link tells without it.
func attachedXDPName(ifname, pinFile string) (string, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return "", err
	}
	xdp := l.Attrs().Xdp
	if xdp == nil || !xdp.Attached || xdp.ProgId == 0 {
		return "", nil
	}
	if pinned, err := link.LoadPinnedLink(pinFile, nil); err == nil {
		defer pinned.Close()
		if info, err := pinned.Info(); err == nil && info.Program == ebpf.ProgramID(xdp.ProgId) {
			return decapXDPName, nil
		}
	}
	return fmt.Sprintf("program %d", xdp.ProgId), nil
}

// Decap strips IPIP and GUE headers from packets that the allowed sources tunnel to the node,
// so that the inner packet reaches the VIP configured on the node without a tunnel device.
type Decap struct {
	opts  DecapOptions
	objs  bpf.DecapObjects
	links []link.Link          // of opts.Interfaces, in order
	hooks map[string]DecapHook // by interface
	pins  *pinSet

	mu        sync.Mutex
	closed    bool
	addresses map[bpf.DecapLocalAddr]bool
	sources   map[bpf.DecapSourcePrefix]bool
}

// DecapCounters count the packets Decap opened and those it refused.
type DecapCounters struct {
	IPIP     uint64
	GUE      uint64
	Bytes    uint64 // of the inner packets
	Rejected uint64 // tunnelled to the node from outside the allowed sources
}

// decapLinkPrefix names the pinned links, decap_link_<interface>: no map name starts so.
const decapLinkPrefix = "decap_link"

// NewDecap loads the decapsulation program, adopting pinned links and maps, and attaches it.
// Links a previous process pinned for interfaces no longer wanted are removed.
func NewDecap(opts DecapOptions) (*Decap, error) {
	if opts.Hook == "" {
		opts.Hook = DecapAuto
	}
	if opts.Hook != DecapAuto && opts.Hook != DecapXDP && opts.Hook != DecapTCX {
		return nil, fmt.Errorf("decapsulation hook %q is not one of auto, xdp, tcx", opts.Hook)
	}
	if opts.XDPMode == "" {
		opts.XDPMode = XDPNative
	}
	if opts.PinPath == "" {
		opts.PinPath = DefaultPinPath
	}
	if opts.GUEPort == 0 {
		opts.GUEPort = DefaultGUEPort
	}
	if err := ensurePinPath(opts.PinPath); err != nil {
		return nil, err
	}
	spec, err := bpf.LoadDecap()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables[bpf.DecapVarSettings].Set(bpf.DecapConfig{GuePort: networkOrder16(opts.GUEPort)}); err != nil {
		return nil, err
	}
	d := &Decap{opts: opts, hooks: map[string]DecapHook{}, addresses: map[bpf.DecapLocalAddr]bool{}, sources: map[bpf.DecapSourcePrefix]bool{}}
	load := func() error {
		return spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinPath}})
	}
	err = load()
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Maps of an older layout: everything in them is rebuilt from the options, only the
		// counters start again from zero.
		for name := range spec.Maps {
			_ = os.Remove(filepath.Join(opts.PinPath, name))
		}
		err = load()
	}
	if err != nil {
		return nil, fmt.Errorf("loading the decapsulation program: %w", err)
	}
	if err := errors.Join(readKeys(d.objs.LocalAddrs, d.addresses), readKeys(d.objs.AllowedSources, d.sources),
		d.SetAddresses(opts.Addresses), d.SetAllowedSources(opts.AllowedSources)); err != nil {
		_ = d.release(true)
		return nil, err
	}
	for _, ifname := range opts.Interfaces {
		l, err := d.attach(ifname)
		if err != nil {
			_ = d.release(true)
			return nil, err
		}
		d.links = append(d.links, l)
	}
	if opts.Interfaces != nil {
		if err := removeStaleLinks(opts.PinPath, opts.Interfaces); err != nil {
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
func (d *Decap) pinnedMaps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		bpf.DecapMapLocalAddrs: d.objs.LocalAddrs, bpf.DecapMapAllowedSources: d.objs.AllowedSources,
		bpf.DecapMapDecapCounters: d.objs.DecapCounters,
	}
}

// pinned is every pinned object by its pin file.
func (d *Decap) pinned() map[string]pinnable {
	links := map[string]link.Link{}
	for i, l := range d.links {
		links[linkPinFile(d.opts.PinPath, decapLinkPrefix, d.opts.Interfaces[i])] = l
	}
	return pinnedObjects(d.opts.PinPath, d.pinnedMaps(), links)
}

// RestorePins pins again the maps and links whose pin files were removed under the running
// process, and returns their paths; see PinGuard.
func (d *Decap) RestorePins() ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, nil
	}
	return d.pins.restore()
}

// attach attaches the program of the interface's hook. One pinned link per interface, of
// either hook: a link of the other hook is replaced.
func (d *Decap) attach(ifname string) (link.Link, error) {
	hook := d.opts.Hook
	pinFile := linkPinFile(d.opts.PinPath, decapLinkPrefix, ifname)
	if hook == DecapAuto {
		attached, err := attachedXDPName(ifname, pinFile)
		if err != nil {
			return nil, err
		}
		hook = resolveHook(hook, attached)
	}
	d.hooks[ifname] = hook
	if hook == DecapTCX {
		return attachTCXIngress(d.objs.TcDecap, ifname, pinFile)
	}
	return attachXDP(d.objs.XdpDecap, ifname, d.opts.XDPMode, pinFile)
}

// Hooks tells where the program is attached, by interface.
func (d *Decap) Hooks() map[string]DecapHook { return maps.Clone(d.hooks) }

// readKeys adds the keys m holds to keys.
func readKeys[K comparable](m *ebpf.Map, keys map[K]bool) error {
	var (
		key   K
		value uint8
	)
	entries := m.Iterate()
	for entries.Next(&key, &value) {
		keys[key] = true
	}
	return entries.Err()
}

// removeStaleLinks detaches and unpins the decapsulation links of interfaces not in keep.
func removeStaleLinks(pinPath string, keep []string) error {
	files, err := filepath.Glob(filepath.Join(pinPath, decapLinkPrefix+"_*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, file := range files {
		if slices.Contains(keep, strings.TrimPrefix(filepath.Base(file), decapLinkPrefix+"_")) {
			continue
		}
		l, err := link.LoadPinnedLink(file, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, closeLink(l, false))
	}
	return errors.Join(errs...)
}

// SetAddresses replaces the node addresses tunnelled packets may be sent to.
func (d *Decap) SetAddresses(addrs []netip.Addr) error {
	want := map[bpf.DecapLocalAddr]bool{}
	for _, a := range addrs {
		a = a.Unmap()
		want[bpf.DecapLocalAddr{Addr: addrWords(a), Family: familyOf(a)}] = true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return syncKeys(d.objs.LocalAddrs, d.addresses, want)
}

// SetAllowedSources replaces the prefixes tunnelled packets may come from.
func (d *Decap) SetAllowedSources(prefixes []netip.Prefix) error {
	want := map[bpf.DecapSourcePrefix]bool{}
	for _, p := range prefixes {
		want[sourcePrefixKey(p)] = true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return syncKeys(d.objs.AllowedSources, d.sources, want)
}

// sourcePrefixKey is the allowlist key of p: IPv4 as IPv4-mapped IPv6, as the program looks
// sources up.
func sourcePrefixKey(p netip.Prefix) bpf.DecapSourcePrefix {
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return bpf.DecapSourcePrefix{Prefixlen: uint32(bits), Addr: addrWords(netip.AddrFrom16(p.Addr().As16()))}
}

// syncKeys makes m's keys (each with value 1) equal to want; have is what m holds.
func syncKeys[K comparable](m *ebpf.Map, have, want map[K]bool) error {
	for key := range want {
		if !have[key] {
			if err := m.Put(key, uint8(1)); err != nil {
				return fmt.Errorf("adding %+v to %s: %w", key, m, err)
			}
			have[key] = true
		}
	}
	for key := range have {
		if !want[key] {
			if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return err
			}
			delete(have, key)
		}
	}
	return nil
}

// Stats sums the per-CPU counters.
func (d *Decap) Stats() (DecapCounters, error) {
	var perCPU []bpf.DecapStats
	if err := d.objs.DecapCounters.Lookup(uint32(0), &perCPU); err != nil {
		return DecapCounters{}, err
	}
	var c DecapCounters
	for _, s := range perCPU {
		c.IPIP += s.Ipip
		c.GUE += s.Gue
		c.Bytes += s.Bytes
		c.Rejected += s.Rejected
	}
	return c, nil
}

// Close detaches the program and removes the pinned state unless KeepOnClose is set.
func (d *Decap) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.release(d.opts.KeepOnClose)
}

func (d *Decap) release(keep bool) error {
	var errs []error
	for _, l := range d.links {
		errs = append(errs, closeLink(l, keep))
	}
	pinned := slices.Collect(maps.Values(d.pinnedMaps()))
	return errors.Join(append(errs, release(nil, pinned, []interface{ Close() error }{&d.objs}, keep, d.opts.PinPath))...)
}
