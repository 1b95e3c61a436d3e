// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"encoding/binary"
	"net/netip"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
)

// The BPF structs hold addresses and ports in network order inside host-order integers:
// these helpers move between the two.

const (
	familyIPv4 = 4
	familyIPv6 = 6
)

func familyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return familyIPv4
	}
	return familyIPv6
}

// addrWords lays the address bytes out as the BPF programs read them; IPv4 fills word 0.
func addrWords(a netip.Addr) [4]uint32 {
	var words [4]uint32
	b := a.AsSlice()
	for i := 0; i < len(b)/4; i++ {
		words[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return words
}

func wordsAddr(words [4]uint32, family uint8) netip.Addr {
	var b [16]byte
	for i, w := range words {
		binary.NativeEndian.PutUint32(b[4*i:], w)
	}
	if family == familyIPv4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// networkOrder16 converts a port between host and network order (the same swap both ways).
func networkOrder16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func vipKey(k datapath.ServiceKey) bpf.LBVipKey {
	return bpf.LBVipKey{
		Addr:   addrWords(k.VIP),
		Port:   networkOrder16(k.Port),
		Proto:  uint8(k.Protocol),
		Family: familyOf(k.VIP),
	}
}

func serviceKey(k bpf.LBVipKey) datapath.ServiceKey {
	return datapath.ServiceKey{
		VIP:      wordsAddr(k.Addr, k.Family),
		Protocol: datapath.Protocol(k.Proto),
		Port:     networkOrder16(k.Port),
	}
}
