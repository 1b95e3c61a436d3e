// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/maglb/maglb/bpf"
)

// DecapOptions configure the decapsulation program of a backend node.
type DecapOptions struct {
	// Interface receives the tunnelled packets. Empty: loaded but not attached (tests).
	Interface string
	// XDPMode is native (the default) or generic.
	XDPMode XDPMode
	// PinPath is the bpffs directory for the map and the link; it may be the load
	// balancer's.
	PinPath string
	// GUEPort is the UDP port GUE packets arrive on; it must match the load balancers'.
	GUEPort uint16
	// Addresses are the node's addresses: only packets tunnelled to one of them are opened.
	Addresses []netip.Addr
	// KeepOnClose leaves the program attached and the map pinned on Close, for a restart.
	KeepOnClose bool
}

// Decap strips IPIP and GUE headers from packets addressed to the node, so that the inner
// packet reaches the VIP configured on the node without a tunnel device.
type Decap struct {
	opts DecapOptions
	objs bpf.DecapObjects
	link link.Link

	mu        sync.Mutex
	addresses map[bpf.DecapLocalAddr]bool
}

// DecapCounters count the packets Decap opened.
type DecapCounters struct {
	IPIP  uint64
	GUE   uint64
	Bytes uint64 // of the inner packets
}

// NewDecap loads the decapsulation program, adopting a pinned link and map, and attaches it.
func NewDecap(opts DecapOptions) (*Decap, error) {
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
	d := &Decap{opts: opts, addresses: map[bpf.DecapLocalAddr]bool{}}
	if err := spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinPath}}); err != nil {
		return nil, fmt.Errorf("loading the decapsulation program: %w", err)
	}
	var key bpf.DecapLocalAddr
	var present uint8
	entries := d.objs.LocalAddrs.Iterate()
	for entries.Next(&key, &present) {
		d.addresses[key] = true
	}
	if err := errors.Join(entries.Err(), d.SetAddresses(opts.Addresses)); err != nil {
		_ = d.release(true)
		return nil, err
	}
	if opts.Interface != "" {
		if d.link, err = attachXDP(d.objs.XdpDecap, opts.Interface, opts.XDPMode, linkPinFile(opts.PinPath, "decap", opts.Interface)); err != nil {
			_ = d.release(true)
			return nil, err
		}
	}
	return d, nil
}

// SetAddresses replaces the node addresses tunnelled packets may be sent to.
func (d *Decap) SetAddresses(addrs []netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	want := map[bpf.DecapLocalAddr]bool{}
	for _, a := range addrs {
		key := bpf.DecapLocalAddr{Addr: addrWords(a.Unmap()), Family: familyOf(a.Unmap())}
		want[key] = true
		if !d.addresses[key] {
			if err := d.objs.LocalAddrs.Put(key, uint8(1)); err != nil {
				return fmt.Errorf("adding %s: %w", a, err)
			}
			d.addresses[key] = true
		}
	}
	for key := range d.addresses {
		if !want[key] {
			if err := d.objs.LocalAddrs.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return err
			}
			delete(d.addresses, key)
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
	}
	return c, nil
}

// Close detaches the program and removes the pinned state unless KeepOnClose is set.
func (d *Decap) Close() error {
	return d.release(d.opts.KeepOnClose)
}

func (d *Decap) release(keep bool) error {
	pinned := []*ebpf.Map{d.objs.LocalAddrs, d.objs.DecapCounters}
	return release(d.link, pinned, []interface{ Close() error }{&d.objs}, keep, d.opts.PinPath)
}
