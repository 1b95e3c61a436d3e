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
// passing it to a stack that has no route for them. It writes only the differences from what
// the map holds (read once on adoption).
func (d *Datapath) writeVIPAddresses(wanted map[bpf.LBVipKey]wantedService) error {
	want := map[bpf.LBVipAddress]bool{}
	for key := range wanted {
		addr := bpf.LBVipAddress{Addr: key.Addr, Family: key.Family}
		want[addr] = true
		if d.vipAddresses[addr] {
			continue
		}
		if err := d.objs.VipAddresses.Put(addr, uint8(0)); err != nil {
			return fmt.Errorf("VIP address %s: %w", wordsAddr(addr.Addr, addr.Family), err)
		}
		d.vipAddresses[addr] = true
	}
	for addr := range d.vipAddresses {
		if want[addr] {
			continue
		}
		if err := d.objs.VipAddresses.Delete(addr); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("removing VIP address %s: %w", wordsAddr(addr.Addr, addr.Family), err)
		}
		delete(d.vipAddresses, addr)
	}
	return nil
}
