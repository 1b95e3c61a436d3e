// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"encoding/binary"
	"net/netip"
)

// Frame builders for the fixtures: each returns wire bytes, checksums included where the
// programs or the kernel check them.

type mac [6]byte

const (
	etherIPv4   = 0x0800
	etherIPv6   = 0x86dd
	etherARP    = 0x0806
	ether8021Q  = 0x8100
	ether8021AD = 0x88a8

	protoICMP        = 1
	protoIPIP        = 4
	protoTCP         = 6
	protoUDP         = 17
	protoIPv6        = 41
	protoFrag        = 44
	protoICMPv6      = 58
	protoHopByHop    = 0
	protoRouting     = 43
	protoNoNext      = 59
	protoDestOptions = 60
	protoGRE         = 47

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ethernet returns the link-layer header; with vlan ≥ 0 it carries an 802.1Q tag.
func ethernet(dst, src mac, etherType uint16, vlan int) []byte {
	b := concat(dst[:], src[:])
	if vlan >= 0 {
		b = binary.BigEndian.AppendUint16(b, ether8021Q)
		b = binary.BigEndian.AppendUint16(b, uint16(vlan))
	}
	return binary.BigEndian.AppendUint16(b, etherType)
}

type ipv4Header struct {
	src, dst netip.Addr
	proto    uint8
	ttl      uint8
	tos      uint8
	id       uint16
	flags    uint16 // flags and fragment offset (in 8-byte units)
	options  []byte
}

func (h ipv4Header) bytes(payloadLen int) []byte {
	ihl := 5 + len(h.options)/4
	b := make([]byte, 20, 20+len(h.options))
	b[0] = 0x40 | byte(ihl)
	b[1] = h.tos
	binary.BigEndian.PutUint16(b[2:], uint16(4*ihl+payloadLen))
	binary.BigEndian.PutUint16(b[4:], h.id)
	binary.BigEndian.PutUint16(b[6:], h.flags)
	b[8] = h.ttl
	b[9] = h.proto
	copy(b[12:], h.src.AsSlice())
	copy(b[16:], h.dst.AsSlice())
	b = append(b, h.options...)
	binary.BigEndian.PutUint16(b[10:], checksum(b))
	return b
}

func ipv4(h ipv4Header, payload []byte) []byte {
	return concat(h.bytes(len(payload)), payload)
}

type ipv6Header struct {
	src, dst     netip.Addr
	next         uint8
	hopLimit     uint8
	trafficClass uint8
	flowLabel    uint32
}

func ipv6(h ipv6Header, payload []byte) []byte {
	b := make([]byte, 40)
	binary.BigEndian.PutUint32(b, 6<<28|uint32(h.trafficClass)<<20|h.flowLabel&0xfffff)
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = h.next
	b[7] = h.hopLimit
	copy(b[8:], h.src.AsSlice())
	copy(b[24:], h.dst.AsSlice())
	return concat(b, payload)
}

// ipv6Fragment returns a fragment header; offset is in 8-byte units.
func ipv6Fragment(next uint8, offset uint16, more bool, id uint32) []byte {
	b := []byte{next, 0, 0, 0, 0, 0, 0, 0}
	field := offset << 3
	if more {
		field |= 1
	}
	binary.BigEndian.PutUint16(b[2:], field)
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

func tcp(sport, dport uint16, flags uint8, payload []byte) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000)
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	return concat(b, payload)
}

func udp(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return concat(b, payload)
}

// checksum is the Internet checksum of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// icmp4 returns an ICMP message: type, code, the 4 bytes after the checksum, and a body.
func icmp4(typ, code uint8, rest uint32, body []byte) []byte {
	b := concat([]byte{typ, code, 0, 0}, binary.BigEndian.AppendUint32(nil, rest), body)
	binary.BigEndian.PutUint16(b[2:], checksum(b))
	return b
}

// icmp6 returns an ICMPv6 message from src to dst, checksummed with the pseudo-header.
func icmp6(src, dst netip.Addr, typ, code uint8, rest uint32, body []byte) []byte {
	b := concat([]byte{typ, code, 0, 0}, binary.BigEndian.AppendUint32(nil, rest), body)
	binary.BigEndian.PutUint16(b[2:], icmp6Checksum(src, dst, b))
	return b
}

// ipv6Extension returns a hop-by-hop, routing or destination options header of 8 bytes
// (padded with PadN) before next.
func ipv6Extension(next uint8) []byte {
	return []byte{next, 0, 1, 4, 0, 0, 0, 0}
}
