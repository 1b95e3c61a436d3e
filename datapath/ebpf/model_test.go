// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// A reference model of the load balancer in Go, written from the packet formats rather than
// from the C code: fixtures compare the program's output with it byte for byte.

// frameInfo is what the model reads from a frame it expects to be balanced.
type frameInfo struct {
	l2Len    int
	family   uint8
	src, dst netip.Addr
	proto    uint8
	sport    uint16
	dport    uint16
	fragment bool
	l3Len    int
	l4Off    int // from the start of the IP header, past the walked extension headers
}

// readFrame parses a well-formed IP frame; ok is false for anything else.
func readFrame(frame []byte) (info frameInfo, ok bool) {
	if len(frame) < 14 {
		return info, false
	}
	info.l2Len = 14
	etherType := binary.BigEndian.Uint16(frame[12:])
	if etherType == ether8021Q || etherType == ether8021AD {
		if len(frame) < 18 {
			return info, false
		}
		info.l2Len = 18
		etherType = binary.BigEndian.Uint16(frame[16:])
	}
	l3 := frame[info.l2Len:]
	ports := -1
	switch {
	case etherType == etherIPv4 && len(l3) >= 20 && l3[0] == 0x45:
		info.family = familyIPv4
		info.src = netip.AddrFrom4([4]byte(l3[12:16]))
		info.dst = netip.AddrFrom4([4]byte(l3[16:20]))
		info.proto = l3[9]
		info.l3Len = int(binary.BigEndian.Uint16(l3[2:]))
		info.fragment = binary.BigEndian.Uint16(l3[6:])&0x3fff != 0
		ports = 20
	case etherType == etherIPv6 && len(l3) >= 40 && l3[0]>>4 == 6:
		info.family = familyIPv6
		info.src = netip.AddrFrom16([16]byte(l3[8:24]))
		info.dst = netip.AddrFrom16([16]byte(l3[24:40]))
		info.proto = l3[6]
		info.l3Len = 40 + int(binary.BigEndian.Uint16(l3[4:]))
		ports = 40
	walk:
		for range 4 { // the extension headers the program walks
			if len(l3) < ports+8 {
				break
			}
			switch info.proto {
			case protoHopByHop, protoRouting, protoDestOptions:
				info.proto = l3[ports]
				ports += 8 * (int(l3[ports+1]) + 1)
			case protoFrag:
				info.proto = l3[ports]
				info.fragment = true
				break walk
			default:
				break walk
			}
		}
	default:
		return info, false
	}
	info.l4Off = ports
	if !info.fragment && len(l3) >= ports+4 {
		info.sport = binary.BigEndian.Uint16(l3[ports:])
		info.dport = binary.BigEndian.Uint16(l3[ports+2:])
	}
	return info, true
}

// flowKeyBytes lays out struct flow_key; fragments hash on addresses and protocol only.
func (f frameInfo) flowKeyBytes() []byte {
	key := make([]byte, 40)
	copy(key[0:16], f.src.AsSlice())
	copy(key[16:32], f.dst.AsSlice())
	if !f.fragment {
		binary.BigEndian.PutUint16(key[32:], f.sport)
		binary.BigEndian.PutUint16(key[34:], f.dport)
	}
	key[36] = f.proto
	return key
}

// modelFlowHash is murmur3's 32-bit mixing over the key's big-endian words.
func modelFlowHash(seed uint32, key []byte) uint32 {
	h := seed
	for i := 0; i+4 <= len(key); i += 4 {
		k := binary.BigEndian.Uint32(key[i:])
		k *= 0xcc9e2d51
		k = bits.RotateLeft32(k, 15)
		k *= 0x1b873593
		h ^= k
		h = bits.RotateLeft32(h, 13)
		h = h*5 + 0xe6546b64
	}
	h ^= uint32(len(key))
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// modelForward returns the frame the load balancer sends to backend through nh.
func modelForward(opts Options, frame []byte, backend netip.Addr, nh nextHop, gue bool) []byte {
	info, ok := readFrame(frame)
	if !ok {
		panic("modelForward: not a balanced frame")
	}
	return modelForwardHashed(opts, frame, modelFlowHash(opts.FlowHashSeed, info.flowKeyBytes()), backend, nh, gue)
}

// modelForwardHashed is modelForward for a frame whose flow hash is another flow's: an ICMP
// error travels with the flow it quotes.
func modelForwardHashed(opts Options, frame []byte, hash uint32, backend netip.Addr, nh nextHop, gue bool) []byte {
	info, _ := readFrame(frame)

	inner := append([]byte(nil), frame[info.l2Len:]...)
	var tos uint8
	if info.family == familyIPv4 {
		tos = inner[1]
		inner[8]--
		binary.BigEndian.PutUint16(inner[10:], 0)
		binary.BigEndian.PutUint16(inner[10:], checksum(inner[:20]))
	} else {
		tos = uint8(binary.BigEndian.Uint32(inner) >> 20)
		inner[7]--
	}

	var tunnel []byte
	innerProto := uint8(protoIPIP)
	if info.family == familyIPv6 {
		innerProto = protoIPv6
	}
	outerProto := innerProto
	if gue {
		outerProto = protoUDP
		tunnel = binary.BigEndian.AppendUint16(nil, 0xc000|uint16(hash&0x3fff))
		tunnel = binary.BigEndian.AppendUint16(tunnel, opts.GUEPort)
		tunnel = binary.BigEndian.AppendUint16(tunnel, uint16(12+info.l3Len))
		tunnel = append(tunnel, 0, 0, 0, innerProto, 0, 0)
	}

	var outer []byte
	etherType := uint16(etherIPv4)
	if info.family == familyIPv4 {
		source := sourceFor(opts.TunnelSource4, hash)
		var flags uint16
		if binary.BigEndian.Uint16(inner[6:])&0x4000 != 0 {
			flags = 0x4000
		}
		outer = ipv4Header{src: source, dst: backend, proto: outerProto, ttl: 64, tos: tos, flags: flags}.bytes(len(tunnel) + info.l3Len)
	} else {
		etherType = etherIPv6
		outer = ipv6(ipv6Header{
			src: sourceFor(opts.TunnelSource6, hash), dst: backend, next: outerProto, hopLimit: 64,
			trafficClass: tos, flowLabel: hash,
		}, nil)
		binary.BigEndian.PutUint16(outer[4:], uint16(len(tunnel)+info.l3Len))
	}

	vlan := -1
	if info.l2Len == 18 {
		vlan = int(binary.BigEndian.Uint16(frame[14:]))
	}
	l2 := ethernet(nh.mac, nh.sourceMAC, etherType, vlan)
	if vlan >= 0 {
		copy(l2[12:14], frame[12:14]) // the tag type (802.1Q or 802.1ad) stays
	}
	return concat(l2, outer, tunnel, inner)
}

// sourceFor is the prefix with its last 32 bits' host part taken from the hash.
func sourceFor(prefix netip.Prefix, hash uint32) netip.Addr {
	b := prefix.Masked().Addr().AsSlice()
	hostBits := min(prefix.Addr().BitLen()-prefix.Bits(), 32)
	mask := uint32(0)
	if hostBits > 0 {
		mask = ^uint32(0) >> (32 - hostBits)
	}
	last := binary.BigEndian.Uint32(b[len(b)-4:])
	binary.BigEndian.PutUint32(b[len(b)-4:], last|hash&mask)
	addr, _ := netip.AddrFromSlice(b)
	return addr
}

// swappedL2 is the frame's link layer with the MACs exchanged: the way back.
func swappedL2(frame []byte, l2Len int) []byte {
	l2 := append([]byte(nil), frame[:l2Len]...)
	copy(l2[0:6], frame[6:12])
	copy(l2[6:12], frame[0:6])
	return l2
}

// icmp6Checksum is the ICMPv6 checksum of msg, pseudo-header included.
func icmp6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	pseudo := concat(src.AsSlice(), dst.AsSlice(), binary.BigEndian.AppendUint32(nil, uint32(len(msg))), []byte{0, 0, 0, protoICMPv6})
	return checksum(concat(pseudo, msg))
}

// Quoted lengths of ICMP answers: up to 576 bytes in all for IPv4 (RFC 1812), up to the
// IPv6 minimum MTU of 1280 (RFC 4443).
const (
	icmp4Quote = 576 - 20 - 8
	icmp6Quote = 1280 - 40 - 8
)

// modelTooBig returns the answer to an oversized frame: ICMP fragmentation needed or ICMPv6
// packet too big from the VIP to the client, announcing mtu and quoting the packet's start.
func modelTooBig(frame []byte, mtu int) []byte {
	info, _ := readFrame(frame)
	l3 := frame[info.l2Len:]
	l2 := swappedL2(frame, info.l2Len)
	if info.family == familyIPv4 {
		msg := concat([]byte{3, 4, 0, 0, 0, 0}, binary.BigEndian.AppendUint16(nil, uint16(mtu)), l3[:icmp4Quote])
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
		return concat(l2, ipv4(ipv4Header{src: info.dst, dst: info.src, proto: protoICMP, ttl: 64}, msg))
	}
	msg := concat([]byte{2, 0, 0, 0}, binary.BigEndian.AppendUint32(nil, uint32(mtu)), l3[:icmp6Quote])
	binary.BigEndian.PutUint16(msg[2:], icmp6Checksum(info.dst, info.src, msg))
	return concat(l2, ipv6(ipv6Header{src: info.dst, dst: info.src, next: protoICMPv6, hopLimit: 64}, msg))
}

// modelEchoReply returns the reply to an echo request frame, checksums computed afresh.
func modelEchoReply(frame []byte) []byte {
	info, _ := readFrame(frame)
	out := concat(swappedL2(frame, info.l2Len), frame[info.l2Len:])
	l3 := out[info.l2Len:]
	if info.family == familyIPv4 {
		copy(l3[12:], info.dst.AsSlice())
		copy(l3[16:], info.src.AsSlice())
		l3[8] = 64
		binary.BigEndian.PutUint16(l3[10:], 0)
		binary.BigEndian.PutUint16(l3[10:], checksum(l3[:20]))
		msg := l3[20:info.l3Len]
		msg[0] = 0
		binary.BigEndian.PutUint16(msg[2:], 0)
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
		return out
	}
	copy(l3[8:], info.dst.AsSlice())
	copy(l3[24:], info.src.AsSlice())
	l3[7] = 64
	msg := l3[info.l4Off:info.l3Len]
	msg[0] = 129
	binary.BigEndian.PutUint16(msg[2:], 0)
	binary.BigEndian.PutUint16(msg[2:], icmp6Checksum(info.dst, info.src, msg))
	return out
}
