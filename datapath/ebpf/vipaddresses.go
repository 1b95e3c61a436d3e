// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/maglb/maglb/bpf"
)

// writeVIPAddresses makes the vip_addresses map hold the address of every wanted service, so
// that the program answers, forwards or drops what it does not balance to them instead of
// passing it to a stack that has no route for them. The map itself is the programmed state,
// so a restarted process needs nothing else to adopt it.
func (d *Datapath) writeVIPAddresses(wanted map[bpf.LBVipKey]wantedService) error {
	missing := map[bpf.LBVipAddress]bool{}
	for key := range wanted {
		missing[bpf.LBVipAddress{Addr: key.Addr, Family: key.Family}] = true
	}
	var (
		addr  bpf.LBVipAddress
		value uint8
		stale []bpf.LBVipAddress
	)
	entries := d.objs.VipAddresses.Iterate()
	for entries.Next(&addr, &value) {
		if missing[addr] {
			delete(missing, addr)
		} else {
			stale = append(stale, addr)
		}
	}
	if err := entries.Err(); err != nil {
		return fmt.Errorf("reading VIP addresses: %w", err)
	}
	for addr := range missing {
		if err := d.objs.VipAddresses.Put(addr, uint8(0)); err != nil {
			return fmt.Errorf("VIP address %s: %w", wordsAddr(addr.Addr, addr.Family), err)
		}
	}
	for _, addr := range stale {
		if err := d.objs.VipAddresses.Delete(addr); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("removing VIP address %s: %w", wordsAddr(addr.Addr, addr.Family), err)
		}
	}
	return nil
}
