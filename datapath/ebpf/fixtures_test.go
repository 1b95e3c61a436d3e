// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/maglb/maglb/datapath"
)

var (
	vipTCP80      = netip.MustParseAddr("10.10.0.1") // TCP 80 and UDP 53 (GUE)
	vipAllPorts   = netip.MustParseAddr("10.10.0.2") // TCP and UDP (GUE), every port
	vipNoBackends = netip.MustParseAddr("10.10.0.3")
	vipRedirect   = netip.MustParseAddr("10.10.0.4") // backend behind lb1
	vipNoRoute    = netip.MustParseAddr("10.10.0.5") // backend never resolved
	vipFIB        = netip.MustParseAddr("10.10.0.6") // backend resolved after Sync
	vip6          = netip.MustParseAddr("fd10::1")   // TCP 443 and UDP 443 (GUE)
	vip6AllPorts  = netip.MustParseAddr("fd10::2")   // TCP, every port
	vipRouteMTU   = netip.MustParseAddr("10.10.0.7") // backend behind a route with MTU 1400
	vipLocal      = netip.MustParseAddr("10.10.0.8") // the backend is the node itself
	vipLocal6     = netip.MustParseAddr("fd10::8")
	notVIP        = netip.MustParseAddr("10.10.0.99")
	notVIP6       = netip.MustParseAddr("fd10::99")

	backendRouted = netip.MustParseAddr("10.2.0.7") // via backend2, route MTU 1400
	router4       = netip.MustParseAddr("198.51.100.1")
	router6       = netip.MustParseAddr("2001:db8:ff::1")
)

func one(addr netip.Addr) []datapath.Backend { return []datapath.Backend{{Addr: addr, Weight: 1}} }

var fixtureServices = []datapath.Service{
	{VIP: vipTCP80, Protocol: datapath.TCP, Port: 80, Backends: one(backend2)},
	{VIP: vipTCP80, Protocol: datapath.UDP, Port: 53, Backends: one(backend3), Encap: datapath.EncapGUE},
	{VIP: vipAllPorts, Protocol: datapath.TCP, Backends: one(backend2)},
	{VIP: vipAllPorts, Protocol: datapath.UDP, Backends: one(backend3), Encap: datapath.EncapGUE},
	{VIP: vipNoBackends, Protocol: datapath.TCP, Port: 80},
	{VIP: vipRedirect, Protocol: datapath.TCP, Port: 80, Backends: one(backendL1)},
	{VIP: vipNoRoute, Protocol: datapath.TCP, Port: 80, Backends: one(backend9)},
	{VIP: vipFIB, Protocol: datapath.TCP, Port: 80, Backends: one(backend4)},
	{VIP: vip6, Protocol: datapath.TCP, Port: 443, Backends: one(backendV2)},
	{VIP: vip6, Protocol: datapath.UDP, Port: 443, Backends: one(backendV3), Encap: datapath.EncapGUE},
	{VIP: vip6AllPorts, Protocol: datapath.TCP, Backends: one(backendV2)},
	{VIP: vipRouteMTU, Protocol: datapath.TCP, Port: 80, Backends: one(backendRouted)},
	{VIP: vipLocal, Protocol: datapath.TCP, Port: 80, Backends: one(lb0Addr)},
	{VIP: vipLocal6, Protocol: datapath.TCP, Port: 80, Backends: one(lb0Addr6)},
}

// newFixtureEnv programs fixtureServices, then resolves backend4, so that only the FIB knows it.
func newFixtureEnv(t testing.TB) *lbEnv {
	env := newLBEnv(t, Options{})
	env.ns.Sysctl(t, "net.ipv4.conf.all.forwarding", "1")
	env.ns.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
	env.ns.Run(t, "ip", "route", "add", "10.2.0.0/24", "via", backend2.String(), "dev", "lb0", "mtu", "1400")
	env.sync(t, fixtureServices)
	env.ns.Run(t, "ip", "neigh", "replace", backend4.String(), "lladdr", backend4MAC.String(), "dev", "lb0", "nud", "permanent")
	return env
}

// Frame builders for the common shapes.

type l4 struct {
	proto        uint8
	sport, dport uint16
	flags        uint8 // TCP
	payload      []byte
}

func (l l4) bytes() []byte {
	if l.proto == protoUDP {
		return udp(l.sport, l.dport, l.payload)
	}
	return tcp(l.sport, l.dport, l.flags, l.payload)
}

var (
	syn80  = l4{proto: protoTCP, sport: 40000, dport: 80, flags: tcpSYN}
	ack80  = l4{proto: protoTCP, sport: 40001, dport: 80, flags: tcpACK | tcpPSH, payload: []byte("GET / HTTP/1.1\r\n\r\n")}
	dns53  = l4{proto: protoUDP, sport: 40002, dport: 53, payload: []byte("query")}
	syn443 = l4{proto: protoTCP, sport: 40003, dport: 443, flags: tcpSYN}
	udp443 = l4{proto: protoUDP, sport: 40004, dport: 443, payload: []byte("quic")}
)

func frame4(dst netip.Addr, l l4, edit func(*ipv4Header)) []byte {
	h := ipv4Header{src: client4, dst: dst, proto: l.proto, ttl: 64, id: 7}
	if edit != nil {
		edit(&h)
	}
	return concat(ethernet(lb0MAC, clientMAC, etherIPv4, -1), ipv4(h, l.bytes()))
}

func frame6(dst netip.Addr, l l4, edit func(*ipv6Header)) []byte {
	h := ipv6Header{src: client6, dst: dst, next: l.proto, hopLimit: 64}
	if edit != nil {
		edit(&h)
	}
	return concat(ethernet(lb0MAC, clientMAC, etherIPv6, -1), ipv6(h, l.bytes()))
}

// tagged inserts an 802.1Q (or with ad, 802.1ad) tag with vid into an untagged frame.
func tagged(frame []byte, vid uint16, ad bool) []byte {
	tagType := uint16(ether8021Q)
	if ad {
		tagType = ether8021AD
	}
	tag := binary.BigEndian.AppendUint16(nil, tagType)
	tag = binary.BigEndian.AppendUint16(tag, vid)
	return concat(frame[:12], tag, frame[12:])
}

// fragment4 returns the IPv4 fragment of l at offset (8-byte units) with the given payload
// part; a first fragment carries the L4 header.
func fragment4(dst netip.Addr, proto uint8, offset uint16, more bool, part []byte) []byte {
	flags := offset
	if more {
		flags |= 0x2000
	}
	h := ipv4Header{src: client4, dst: dst, proto: proto, ttl: 64, id: 99, flags: flags}
	return concat(ethernet(lb0MAC, clientMAC, etherIPv4, -1), ipv4(h, part))
}

func fragment6(dst netip.Addr, proto uint8, offset uint16, more bool, part []byte) []byte {
	h := ipv6Header{src: client6, dst: dst, next: protoFrag, hopLimit: 64}
	return concat(ethernet(lb0MAC, clientMAC, etherIPv6, -1), ipv6(h, concat(ipv6Fragment(proto, offset, more, 99), part)))
}

// sized sets the payload of l so that its IP packet is l3Len bytes long (IPv4 without
// options, IPv6 without extension headers).
func sized(l l4, family uint8, l3Len int) l4 {
	header := 20
	if family == familyIPv6 {
		header = 40
	}
	if l.proto == protoUDP {
		header += 8
	} else {
		header += 20
	}
	l.payload = make([]byte, l3Len-header)
	for i := range l.payload {
		l.payload[i] = byte(i % 251)
	}
	return l
}

func withDF(h *ipv4Header) { h.flags = 0x4000 }

// icmpError4 returns an ICMP error from a router to vip about the answer the VIP sent to the
// client of flow l, and that flow.
func icmpError4(vip netip.Addr, l l4, typ, code uint8, rest uint32) ([]byte, frameInfo) {
	answer := l4{proto: l.proto, sport: l.dport, dport: l.sport, flags: tcpACK, payload: make([]byte, 100)}
	quote := ipv4(ipv4Header{src: vip, dst: client4, proto: l.proto, ttl: 60, id: 3, flags: 0x4000}, answer.bytes())
	frame := concat(ethernet(lb0MAC, clientMAC, etherIPv4, -1),
		ipv4(ipv4Header{src: router4, dst: vip, proto: protoICMP, ttl: 64}, icmp4(typ, code, rest, quote)))
	return frame, frameInfo{src: client4, dst: vip, proto: l.proto, sport: l.sport, dport: l.dport}
}

func icmpError6(vip netip.Addr, l l4, typ, code uint8, rest uint32) ([]byte, frameInfo) {
	answer := l4{proto: l.proto, sport: l.dport, dport: l.sport, flags: tcpACK, payload: make([]byte, 100)}
	quote := ipv6(ipv6Header{src: vip, dst: client6, next: l.proto, hopLimit: 60}, answer.bytes())
	frame := concat(ethernet(lb0MAC, clientMAC, etherIPv6, -1),
		ipv6(ipv6Header{src: router6, dst: vip, next: protoICMPv6, hopLimit: 64}, icmp6(router6, vip, typ, code, rest, quote)))
	return frame, frameInfo{src: client6, dst: vip, proto: l.proto, sport: l.sport, dport: l.dport}
}

var pingPayload = []byte("0123456789abcdefghijklmnopqrstuv")

func echo4(dst netip.Addr) []byte {
	return concat(ethernet(lb0MAC, clientMAC, etherIPv4, -1),
		ipv4(ipv4Header{src: client4, dst: dst, proto: protoICMP, ttl: 64, id: 9}, icmp4(8, 0, 0x12340001, pingPayload)))
}

// frame6Ext returns a frame to dst whose IPv6 header is followed by the extension headers of
// chain, then by l.
func frame6Ext(dst netip.Addr, chain []uint8, l []byte, upper uint8) []byte {
	var headers []byte
	for i := range chain {
		next := upper
		if i+1 < len(chain) {
			next = chain[i+1]
		}
		headers = append(headers, ipv6Extension(next)...)
	}
	return concat(ethernet(lb0MAC, clientMAC, etherIPv6, -1),
		ipv6(ipv6Header{src: client6, dst: dst, next: chain[0], hopLimit: 64}, concat(headers, l)))
}

func echo6(dst netip.Addr, chain ...uint8) []byte {
	msg := icmp6(client6, dst, 128, 0, 0x12340001, pingPayload)
	if len(chain) > 0 {
		return frame6Ext(dst, chain, msg, protoICMPv6)
	}
	return concat(ethernet(lb0MAC, clientMAC, etherIPv6, -1), ipv6(ipv6Header{src: client6, dst: dst, next: protoICMPv6, hopLimit: 64}, msg))
}

func ipPacket4(dst netip.Addr, proto uint8, payload []byte) []byte {
	return concat(ethernet(lb0MAC, clientMAC, etherIPv4, -1), ipv4(ipv4Header{src: client4, dst: dst, proto: proto, ttl: 64}, payload))
}

func ipPacket6(dst netip.Addr, proto uint8, payload []byte) []byte {
	return concat(ethernet(lb0MAC, clientMAC, etherIPv6, -1), ipv6(ipv6Header{src: client6, dst: dst, next: proto, hopLimit: 64}, payload))
}

type fixture struct {
	name    string
	in      []byte
	verdict uint32
	out     []byte // nil: the input, unchanged
}

func lbFixtures(opts Options, lb0, lb1 int) []fixture {
	via := func(backendMAC mac) nextHop { return nextHop{ifindex: uint32(lb0), sourceMAC: lb0MAC, mac: backendMAC} }
	drop := func(name string, in []byte) fixture { return fixture{name, in, xdpDrop, nil} }
	tooBig := func(name string, in []byte, mtu int) fixture { return fixture{name, in, xdpTX, modelTooBig(in, mtu)} }
	echo := func(name string, in []byte) fixture { return fixture{name, in, xdpTX, modelEchoReply(in)} }
	// follows expects an ICMP error forwarded like the packets of the flow it quotes.
	follows := func(name string, in []byte, flow frameInfo, backend netip.Addr, m mac, gue bool) fixture {
		hash := modelFlowHash(opts.FlowHashSeed, flow.flowKeyBytes())
		return fixture{name, in, xdpTX, modelForwardHashed(opts, in, hash, backend, via(m), gue)}
	}
	ipip := func(name string, in []byte, backend netip.Addr, m mac) fixture {
		return fixture{name, in, xdpTX, modelForward(opts, in, backend, via(m), false)}
	}
	gue := func(name string, in []byte, backend netip.Addr, m mac) fixture {
		return fixture{name, in, xdpTX, modelForward(opts, in, backend, via(m), true)}
	}
	pass := func(name string, in []byte) fixture { return fixture{name, in, xdpPass, nil} }

	syn := frame4(vipTCP80, syn80, nil)
	synV6 := frame6(vip6, syn443, nil)
	withPadding := concat(syn, make([]byte, 6)) // a 60-byte minimum frame
	fixtures := []fixture{
		// IPv4, port-specific VIPs.
		ipip("v4 TCP SYN", syn, backend2, backend2MAC),
		ipip("v4 TCP non-SYN with payload", frame4(vipTCP80, ack80, nil), backend2, backend2MAC),
		ipip("v4 TCP FIN", frame4(vipTCP80, l4{proto: protoTCP, sport: 40010, dport: 80, flags: tcpFIN | tcpACK}, nil), backend2, backend2MAC),
		ipip("v4 TCP RST", frame4(vipTCP80, l4{proto: protoTCP, sport: 40011, dport: 80, flags: tcpRST}, nil), backend2, backend2MAC),
		ipip("v4 TCP SYN-ACK", frame4(vipTCP80, l4{proto: protoTCP, sport: 40012, dport: 80, flags: tcpSYN | tcpACK}, nil), backend2, backend2MAC),
		gue("v4 UDP over GUE", frame4(vipTCP80, dns53, nil), backend3, backend3MAC),
		gue("v4 UDP empty payload over GUE", frame4(vipTCP80, l4{proto: protoUDP, sport: 1, dport: 53}, nil), backend3, backend3MAC),
		drop("v4 TCP to an unserved port", frame4(vipTCP80, l4{proto: protoTCP, sport: 40000, dport: 81, flags: tcpSYN}, nil)),
		drop("v4 UDP to the TCP port", frame4(vipTCP80, l4{proto: protoUDP, sport: 40000, dport: 80}, nil)),
		drop("v4 TCP to the UDP port", frame4(vipTCP80, l4{proto: protoTCP, sport: 40000, dport: 53, flags: tcpSYN}, nil)),
		pass("v4 non-VIP TCP", frame4(notVIP, syn80, nil)),
		pass("v4 non-VIP UDP", frame4(notVIP, dns53, nil)),
		pass("v4 backend address", frame4(backend2, syn80, nil)),
		// All-ports VIPs.
		ipip("v4 all-ports TCP high port", frame4(vipAllPorts, l4{proto: protoTCP, sport: 5, dport: 65535, flags: tcpSYN}, nil), backend2, backend2MAC),
		ipip("v4 all-ports TCP port 0", frame4(vipAllPorts, l4{proto: protoTCP, sport: 5, dport: 0, flags: tcpSYN}, nil), backend2, backend2MAC),
		gue("v4 all-ports UDP", frame4(vipAllPorts, l4{proto: protoUDP, sport: 5, dport: 4789, payload: []byte{1}}, nil), backend3, backend3MAC),
		ipip("v6 all-ports TCP", frame6(vip6AllPorts, l4{proto: protoTCP, sport: 5, dport: 8443, flags: tcpSYN}, nil), backendV2, backend2MAC),
		drop("v6 all-ports VIP, UDP not served", frame6(vip6AllPorts, udp443, nil)),
		// IPv4 header variants.
		drop("v4 with options", frame4(vipTCP80, syn80, func(h *ipv4Header) { h.options = []byte{1, 1, 1, 0} })),
		drop("v4 with record-route option", frame4(vipTCP80, syn80, func(h *ipv4Header) { h.options = []byte{7, 7, 4, 0, 0, 0, 0, 0} })),
		pass("v4 header length below 5", func() []byte { f := frame4(vipTCP80, syn80, nil); f[14] = 0x44; return f }()),
		pass("v4 ethertype with version 6", func() []byte { f := frame4(vipTCP80, syn80, nil); f[14] = 0x65; return f }()),
		ipip("v4 DF set", frame4(vipTCP80, l4{proto: protoTCP, sport: 40020, dport: 80, flags: tcpSYN}, func(h *ipv4Header) { h.flags = 0x4000 }), backend2, backend2MAC),
		ipip("v4 DSCP and ECN copied", frame4(vipTCP80, l4{proto: protoTCP, sport: 40021, dport: 80, flags: tcpSYN}, func(h *ipv4Header) { h.tos = 0xb9 }), backend2, backend2MAC),
		ipip("v4 Ethernet padding kept", withPadding, backend2, backend2MAC),
		// TTL and hop limit.
		pass("v4 TTL 1 to the stack", frame4(vipTCP80, syn80, func(h *ipv4Header) { h.ttl = 1 })),
		pass("v4 TTL 0 to the stack", frame4(vipTCP80, syn80, func(h *ipv4Header) { h.ttl = 0 })),
		ipip("v4 TTL 2 leaves as 1", frame4(vipTCP80, syn80, func(h *ipv4Header) { h.ttl = 2 }), backend2, backend2MAC),
		ipip("v4 TTL 255", frame4(vipTCP80, syn80, func(h *ipv4Header) { h.ttl = 255 }), backend2, backend2MAC),
		pass("v6 hop limit 1 to the stack", frame6(vip6, syn443, func(h *ipv6Header) { h.hopLimit = 1 })),
		pass("v6 hop limit 0 to the stack", frame6(vip6, syn443, func(h *ipv6Header) { h.hopLimit = 0 })),
		ipip("v6 hop limit 2 leaves as 1", frame6(vip6, syn443, func(h *ipv6Header) { h.hopLimit = 2 }), backendV2, backend2MAC),
		// Fragments: L3 hash, the all-ports entry or the lowest port's ring.
		ipip("v4 first fragment", fragment4(vipTCP80, protoTCP, 0, true, tcp(40030, 80, tcpACK, make([]byte, 24))), backend2, backend2MAC),
		ipip("v4 middle fragment", fragment4(vipTCP80, protoTCP, 6, true, make([]byte, 48)), backend2, backend2MAC),
		ipip("v4 last fragment", fragment4(vipTCP80, protoTCP, 12, false, make([]byte, 10)), backend2, backend2MAC),
		gue("v4 UDP fragment", fragment4(vipTCP80, protoUDP, 3, false, make([]byte, 16)), backend3, backend3MAC),
		ipip("v4 fragment to all-ports VIP", fragment4(vipAllPorts, protoTCP, 1, false, make([]byte, 8)), backend2, backend2MAC),
		pass("v4 fragment to non-VIP", fragment4(notVIP, protoTCP, 1, false, make([]byte, 8))),
		ipip("v6 first fragment", fragment6(vip6, protoTCP, 0, true, tcp(40031, 443, tcpACK, make([]byte, 12))), backendV2, backend2MAC),
		ipip("v6 later fragment", fragment6(vip6, protoTCP, 4, false, make([]byte, 8)), backendV2, backend2MAC),
		gue("v6 UDP fragment", fragment6(vip6, protoUDP, 4, false, make([]byte, 8)), backendV3, backend3MAC),
		pass("v6 fragment to non-VIP", fragment6(notVIP6, protoTCP, 4, false, make([]byte, 8))),
		// IPv6.
		ipip("v6 TCP SYN", synV6, backendV2, backend2MAC),
		ipip("v6 TCP non-SYN", frame6(vip6, l4{proto: protoTCP, sport: 40040, dport: 443, flags: tcpACK, payload: []byte("data")}, nil), backendV2, backend2MAC),
		gue("v6 UDP over GUE", frame6(vip6, udp443, nil), backendV3, backend3MAC),
		ipip("v6 traffic class copied", frame6(vip6, l4{proto: protoTCP, sport: 40041, dport: 443, flags: tcpSYN}, func(h *ipv6Header) { h.trafficClass = 0xb9; h.flowLabel = 0x12345 }), backendV2, backend2MAC),
		drop("v6 TCP to an unserved port", frame6(vip6, l4{proto: protoTCP, sport: 1, dport: 444, flags: tcpSYN}, nil)),
		pass("v6 non-VIP", frame6(notVIP6, syn443, nil)),
		pass("v6 ethertype with version 4", func() []byte { f := frame6(vip6, syn443, nil); f[14] = 0x45; return f }()),
		// VLAN.
		ipip("802.1Q v4 TCP SYN", tagged(syn, 100, false), backend2, backend2MAC),
		gue("802.1Q v4 UDP", tagged(frame4(vipTCP80, dns53, nil), 4094, false), backend3, backend3MAC),
		ipip("802.1Q v6 TCP", tagged(synV6, 7, false), backendV2, backend2MAC),
		ipip("802.1ad v4 TCP", tagged(syn, 200, true), backend2, backend2MAC),
		pass("802.1Q non-VIP", tagged(frame4(notVIP, syn80, nil), 100, false)),
		pass("802.1Q ARP", tagged(concat(ethernet(lb0MAC, clientMAC, etherARP, -1), make([]byte, 28)), 100, false)),
		// Not IP.
		pass("ARP", concat(ethernet(lb0MAC, clientMAC, etherARP, -1), make([]byte, 28))),
		pass("LLDP", concat(ethernet(lb0MAC, clientMAC, 0x88cc, -1), make([]byte, 46))),
		pass("runt Ethernet header only", ethernet(lb0MAC, clientMAC, etherIPv4, -1)),
		// Backends and next hops.
		{"VIP without backends drops", frame4(vipNoBackends, syn80, nil), xdpDrop, nil},
		{"backend behind another interface redirects", frame4(vipRedirect, syn80, nil), xdpRedirect,
			modelForward(opts, frame4(vipRedirect, syn80, nil), backendL1, nextHop{ifindex: uint32(lb1), sourceMAC: lb1MAC, mac: lb1PeerMAC}, false)},
		{"unresolved backend drops", frame4(vipNoRoute, syn80, nil), xdpDrop, nil},
		ipip("uncached next hop from the FIB", frame4(vipFIB, syn80, nil), backend4, backend4MAC),
		// The backend is this node: its own stack (kube-proxy) delivers VIP:port.
		pass("v4 backend that is this node passes unchanged", frame4(vipLocal, syn80, nil)),
		pass("v6 backend that is this node passes unchanged", frame6(vipLocal6, l4{proto: protoTCP, sport: 40060, dport: 80, flags: tcpSYN}, nil)),
		pass("v4 full-size packet to this node passes", frame4(vipLocal, sized(ack80, familyIPv4, 1500), withDF)),
	}

	// Full-size packets: the encapsulated packet must fit the next hop's MTU (1500 on lb0,
	// 1400 on the route to backendRouted), else the client hears the MTU it can use.
	big4 := func(dst netip.Addr, l l4, l3Len int) []byte { return frame4(dst, sized(l, familyIPv4, l3Len), withDF) }
	big6 := func(dst netip.Addr, l l4, l3Len int) []byte { return frame6(dst, sized(l, familyIPv6, l3Len), nil) }
	bigError4, _ := icmpError4(vipTCP80, syn80, 3, 4, 1400)
	bigError4 = concat(bigError4, make([]byte, 14+1500-len(bigError4))) // zeros keep the ICMP checksum
	binary.BigEndian.PutUint16(bigError4[16:], 1500)
	binary.BigEndian.PutUint16(bigError4[24:], 0)
	binary.BigEndian.PutUint16(bigError4[24:], checksum(bigError4[14:34]))
	fixtures = append(fixtures,
		tooBig("v4 TCP too big with DF answers fragmentation needed", big4(vipTCP80, ack80, 1500), 1480),
		tooBig("v4 TCP one byte too big", big4(vipTCP80, ack80, 1481), 1480),
		ipip("v4 TCP that fits once encapsulated", big4(vipTCP80, ack80, 1480), backend2, backend2MAC),
		drop("v4 too big without DF drops", frame4(vipTCP80, sized(ack80, familyIPv4, 1500), nil)),
		tooBig("v4 UDP too big over GUE", big4(vipTCP80, dns53, 1500), 1468),
		gue("v4 UDP that fits over GUE", big4(vipTCP80, dns53, 1468), backend3, backend3MAC),
		tooBig("802.1Q v4 too big", tagged(big4(vipTCP80, ack80, 1500), 100, false), 1480),
		tooBig("v4 too big on the FIB path", big4(vipFIB, ack80, 1500), 1480),
		tooBig("v4 too big for the route MTU", big4(vipRouteMTU, ack80, 1381), 1380),
		ipip("v4 that fits the route MTU", big4(vipRouteMTU, ack80, 1380), backendRouted, backend2MAC),
		tooBig("v6 TCP too big answers packet too big", big6(vip6, syn443, 1500), 1460),
		ipip("v6 TCP that fits once encapsulated", big6(vip6, syn443, 1460), backendV2, backend2MAC),
		tooBig("v6 UDP too big over GUE", big6(vip6, udp443, 1500), 1448),
		drop("v4 ICMP error too big to forward drops", bigError4),
	)

	// ICMP to VIP addresses: errors follow the flow they quote, echo is answered, the rest
	// is dropped; never passed to a stack without a route for the VIP.
	fragNeeded, fragNeededFlow := icmpError4(vipTCP80, syn80, 3, 4, 1400)
	portUnreachable, portUnreachableFlow := icmpError4(vipTCP80, dns53, 3, 3, 0)
	timeExceeded, timeExceededFlow := icmpError4(vipAllPorts, l4{proto: protoTCP, sport: 40070, dport: 8080}, 11, 0, 0)
	packetTooBig, packetTooBigFlow := icmpError6(vip6, syn443, 2, 0, 1280)
	unreachable6, unreachable6Flow := icmpError6(vip6, udp443, 1, 4, 0)
	unservedPort, _ := icmpError4(vipTCP80, l4{proto: protoTCP, sport: 40071, dport: 81}, 3, 4, 1400)
	otherSource, _ := icmpError4(vipTCP80, syn80, 3, 4, 1400)
	copy(otherSource[14+20+8+12:], vipAllPorts.AsSlice()) // the quoted packet came from another VIP
	truncated6, _ := icmpError6(vip6, syn443, 2, 0, 1280)
	truncated6 = truncated6[:14+40+8+40+2]
	binary.BigEndian.PutUint16(truncated6[18:], 8+40+2)
	neighbourSolicitation := ipPacket6(vip6, protoICMPv6, icmp6(client6, vip6, 135, 0, 0, vip6.AsSlice()))
	fixtures = append(fixtures,
		follows("v4 fragmentation needed follows its TCP flow", fragNeeded, fragNeededFlow, backend2, backend2MAC, false),
		follows("v4 port unreachable follows its UDP flow over GUE", portUnreachable, portUnreachableFlow, backend3, backend3MAC, true),
		follows("v4 time exceeded follows its flow to an all-ports VIP", timeExceeded, timeExceededFlow, backend2, backend2MAC, false),
		follows("v6 packet too big follows its TCP flow", packetTooBig, packetTooBigFlow, backendV2, backend2MAC, false),
		follows("v6 unreachable follows its UDP flow over GUE", unreachable6, unreachable6Flow, backendV3, backend3MAC, true),
		follows("802.1Q v4 fragmentation needed", tagged(fragNeeded, 100, false), fragNeededFlow, backend2, backend2MAC, false),
		drop("v4 ICMP error quoting an unserved port drops", unservedPort),
		drop("v4 ICMP error quoting another address drops", otherSource),
		drop("v6 ICMP error quoting a truncated header drops", truncated6),
		pass("v4 ICMP error to a non-VIP passes", func() []byte { f, _ := icmpError4(notVIP, syn80, 3, 4, 1400); return f }()),
		echo("v4 echo to a VIP is answered", echo4(vipTCP80)),
		echo("v4 echo to a VIP without backends is answered", echo4(vipNoBackends)),
		echo("802.1Q v4 echo is answered", tagged(echo4(vipTCP80), 100, false)),
		echo("v6 echo to a VIP is answered", echo6(vip6)),
		echo("v6 echo after a hop-by-hop header is answered", echo6(vip6, protoHopByHop)),
		pass("v4 echo to a non-VIP passes", echo4(notVIP)),
		pass("v6 echo to a non-VIP passes", echo6(notVIP6)),
		pass("v6 neighbour solicitation to a VIP passes", neighbourSolicitation),
		drop("v4 echo reply to a VIP drops", ipPacket4(vipTCP80, protoICMP, icmp4(0, 0, 1, nil))),
		drop("v4 ICMP fragment to a VIP drops", fragment4(vipTCP80, protoICMP, 1, false, make([]byte, 8))),
		// Other protocols.
		drop("v4 GRE to a VIP drops", ipPacket4(vipTCP80, protoGRE, make([]byte, 8))),
		drop("v4 GRE to a VIP without backends drops", ipPacket4(vipNoBackends, protoGRE, make([]byte, 8))),
		drop("v6 SCTP to a VIP drops", ipPacket6(vip6, 132, make([]byte, 12))),
		drop("v6 no next header to a VIP drops", ipPacket6(vip6, protoNoNext, nil)),
		pass("v4 GRE to a non-VIP passes", ipPacket4(notVIP, protoGRE, make([]byte, 8))),
		pass("v6 SCTP to a non-VIP passes", ipPacket6(notVIP6, 132, make([]byte, 12))),
		// IPv6 extension headers.
		ipip("v6 hop-by-hop and destination options before TCP", frame6Ext(vip6, []uint8{protoHopByHop, protoDestOptions}, syn443.bytes(), protoTCP), backendV2, backend2MAC),
		gue("v6 routing header before UDP", frame6Ext(vip6, []uint8{protoRouting}, udp443.bytes(), protoUDP), backendV3, backend3MAC),
		ipip("v6 four extension headers before TCP", frame6Ext(vip6, []uint8{protoHopByHop, protoDestOptions, protoRouting, protoDestOptions}, syn443.bytes(), protoTCP), backendV2, backend2MAC),
		ipip("v6 hop-by-hop before a fragment", frame6Ext(vip6, []uint8{protoHopByHop, protoFrag}, make([]byte, 16), protoTCP), backendV2, backend2MAC),
		drop("v6 five extension headers drop", frame6Ext(vip6, []uint8{protoHopByHop, protoDestOptions, protoRouting, protoDestOptions, protoDestOptions}, syn443.bytes(), protoTCP)),
		drop("v6 fragment before destination options drops", frame6Ext(vip6, []uint8{protoFrag, protoDestOptions}, syn443.bytes(), protoTCP)),
		pass("v6 five extension headers to a non-VIP pass", frame6Ext(notVIP6, []uint8{protoHopByHop, protoDestOptions, protoRouting, protoDestOptions, protoDestOptions}, syn443.bytes(), protoTCP)),
		drop("v6 extension headers before TCP to an unserved port", frame6Ext(vip6, []uint8{protoHopByHop}, l4{proto: protoTCP, sport: 1, dport: 444, flags: tcpSYN}.bytes(), protoTCP)),
	)

	// Truncation at and inside every header: all pass unchanged.
	truncations := []struct {
		name  string
		frame []byte
		cuts  []int
	}{
		{"v4 TCP", syn, []int{14, 15, 33, 34, 35, 44, 53}},
		{"v4 UDP", frame4(vipTCP80, dns53, nil), []int{34, 38, 41}},
		{"802.1Q v4 TCP", tagged(syn, 100, false), []int{14, 16, 17, 18, 37, 57}},
		{"v6 TCP", synV6, []int{14, 30, 53, 54, 60, 73}},
		{"v6 UDP", frame6(vip6, udp443, nil), []int{54, 61}},
		{"v6 fragment header", fragment6(vip6, protoTCP, 4, false, make([]byte, 8)), []int{54, 58, 61}},
	}
	for _, tr := range truncations {
		for _, cut := range tr.cuts {
			fixtures = append(fixtures, pass(fmt.Sprintf("%s truncated to %d bytes", tr.name, cut), tr.frame[:cut]))
		}
	}
	// A frame shorter than its IP packet claims (found by FuzzBalance): never forwarded with
	// an outer length counting bytes that are not there.
	fixtures = append(fixtures,
		pass("v4 fragment shorter than its total length passes", fragment4(vipTCP80, protoUDP, 3, true, make([]byte, 16))[:14+20+8]),
		pass("v4 TCP shorter than its total length passes", frame4(vipTCP80, ack80, nil)[:14+20+20]),
		pass("v6 TCP shorter than its payload length passes", frame6(vip6, l4{proto: protoTCP, sport: 40080, dport: 443, flags: tcpACK, payload: []byte("abc")}, nil)[:14+40+20]),
	)
	return fixtures
}

func TestFixtures(t *testing.T) {
	env := newFixtureEnv(t)
	fixtures := lbFixtures(env.opts, env.lb0, env.lb1)
	decap := decapFixtures(env.opts, env.lb0)
	if n := len(fixtures) + len(decap); n < 60 {
		t.Fatalf("only %d fixtures", n)
	}
	t.Run("balancer", func(t *testing.T) { runFixtures(t, env, env.dp.objs.XdpBalance, fixtures) })

	stats := env.stats(t)
	wantDrops := map[string]uint64{
		"ttl_exceeded": 4, "no_backend": 1, "no_route": 1, "encap": 0,
		"fragmentation_needed": 8, "too_big": 2, "protocol": 4, "ipv6_extension_headers": 2, "icmp": 5, "port": 6, "ipv4_options": 2,
	}
	for reason, want := range wantDrops {
		if got := stats.Global.Drops[reason]; got != want {
			t.Errorf("global %s drops = %d, want %d", reason, got, want)
		}
	}
	noBackends := datapath.ServiceKey{VIP: vipNoBackends, Protocol: datapath.TCP, Port: 80}
	if got := stats.Services[noBackends].Drops["no_backend"]; got != 1 {
		t.Errorf("%s: no_backend drops = %d, want 1", noBackends, got)
	}
	tcp80 := datapath.ServiceKey{VIP: vipTCP80, Protocol: datapath.TCP, Port: 80}
	if c := stats.Services[tcp80]; c.Packets == 0 || c.Bytes < 54*c.Packets || c.NewFlows == 0 || c.LRUMisses == 0 {
		t.Errorf("%s: counters %+v, want packets, bytes, new flows and LRU misses", tcp80, c)
	}

	// The allowlist holds the load balancer's per-flow source prefixes.
	d := newTestDecap(t, env, []netip.Prefix{env.opts.TunnelSource4, env.opts.TunnelSource6}, backend2, backendV2)
	t.Run("decap", func(t *testing.T) { runFixtures(t, env, d.objs.XdpDecap, decap) })
	c, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var rejected uint64
	for _, f := range decap {
		if f.verdict == xdpDrop {
			rejected++
		}
	}
	if c.Rejected != rejected || rejected == 0 {
		t.Errorf("decap counted %d rejected packets, want %d", c.Rejected, rejected)
	}
}

func runFixtures(t *testing.T, env *lbEnv, prog *ebpf.Program, fixtures []fixture) {
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			verdict, out := env.run(t, prog, f.in, env.lb0)
			want := f.out
			if want == nil {
				want = f.in
			}
			if verdict != f.verdict {
				t.Errorf("verdict %s, want %s", verdictNames[verdict], verdictNames[f.verdict])
			}
			if f.verdict != xdpDrop && !bytes.Equal(out, want) {
				t.Errorf("output differs\n got: %s\nwant: %s", hex.EncodeToString(out), hex.EncodeToString(want))
			}
		})
	}
}

func newTestDecap(t testing.TB, env *lbEnv, allowed []netip.Prefix, addrs ...netip.Addr) *Decap {
	t.Helper()
	var d *Decap
	err := env.ns.Do(func() (err error) {
		d, err = NewDecap(DecapOptions{PinPath: testPinPath(t), GUEPort: env.opts.GUEPort, Addresses: addrs, AllowedSources: allowed})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("closing decap: %v", err)
		}
	})
	return d
}

// decapFixtures feed the decapsulation program the model's load balancer output: it must
// give back the inner packet behind the same link layer.
func decapFixtures(opts Options, lb0 int) []fixture {
	nh := nextHop{ifindex: uint32(lb0), sourceMAC: lb0MAC, mac: backend2MAC}
	open := func(name string, in []byte, backend netip.Addr, gue bool) fixture {
		tunnelled := modelForward(opts, in, backend, nh, gue)
		info, _ := readFrame(in)
		inner := modelForward(opts, in, backend, nh, false) // same inner bytes, IPIP framing
		outerLen := 20
		if info.family == familyIPv6 {
			outerLen = 40
		}
		want := concat(inner[:info.l2Len], inner[info.l2Len+outerLen:])
		etherType := etherIPv4
		if info.family == familyIPv6 {
			etherType = etherIPv6
		}
		binary.BigEndian.PutUint16(want[info.l2Len-2:], uint16(etherType))
		return fixture{name, tunnelled, xdpPass, want}
	}
	pass := func(name string, in []byte) fixture { return fixture{name, in, xdpPass, nil} }
	reject := func(name string, in []byte) fixture { return fixture{name, fromOutsideAllowlist(in), xdpDrop, nil} }
	syn := frame4(vipTCP80, syn80, nil)
	synV6 := frame6(vip6, syn443, nil)
	ipipToOther := modelForward(opts, syn, backend3, nh, false)
	gueWrongPort := modelForward(opts, frame4(vipTCP80, dns53, nil), backend2, nh, true)
	binary.BigEndian.PutUint16(gueWrongPort[14+20+2:], opts.GUEPort+1)
	ipipWrongInner := modelForward(opts, syn, backend2, nh, false)
	ipipWrongInner[14+20] = 0x65
	outerFragment := modelForward(opts, syn, backend2, nh, false)
	binary.BigEndian.PutUint16(outerFragment[14+6:], 0x2000)
	binary.BigEndian.PutUint16(outerFragment[14+10:], 0)
	binary.BigEndian.PutUint16(outerFragment[14+10:], checksum(outerFragment[14:34]))
	gueTruncated := modelForward(opts, frame4(vipTCP80, dns53, nil), backend2, nh, true)[:14+20+10]
	return []fixture{
		open("decap IPIP 4in4", syn, backend2, false),
		open("decap GUE over IPv4", frame4(vipTCP80, dns53, nil), backend2, true),
		open("decap IPIP 6in6", synV6, backendV2, false),
		open("decap GUE over IPv6", frame6(vip6, udp443, nil), backendV2, true),
		open("decap 802.1Q IPIP", tagged(syn, 100, false), backend2, false),
		open("decap fragment inside IPIP", fragment4(vipTCP80, protoTCP, 6, true, make([]byte, 48)), backend2, false),
		reject("decap rejects IPIP 4in4 from outside the allowlist", modelForward(opts, syn, backend2, nh, false)),
		reject("decap rejects GUE over IPv4 from outside the allowlist", modelForward(opts, frame4(vipTCP80, dns53, nil), backend2, nh, true)),
		reject("decap rejects IPIP 6in6 from outside the allowlist", modelForward(opts, synV6, backendV2, nh, false)),
		reject("decap rejects GUE over IPv6 from outside the allowlist", modelForward(opts, frame6(vip6, udp443, nil), backendV2, nh, true)),
		pass("decap IPIP to another address", ipipToOther),
		pass("decap IPIP to another address from outside the allowlist", fromOutsideAllowlist(ipipToOther)),
		pass("decap GUE on another port", gueWrongPort),
		pass("decap IPIP with a wrong inner version", ipipWrongInner),
		pass("decap outer fragment", outerFragment),
		pass("decap truncated GUE header", gueTruncated),
		pass("decap plain TCP to the node", frame4(backend2, syn80, nil)),
		pass("decap ARP", concat(ethernet(lb0MAC, clientMAC, etherARP, -1), make([]byte, 28))),
	}
}

// fromOutsideAllowlist rewrites the outer source of an untagged tunnelled frame to the first
// address after the load balancer's default per-flow prefix of its family.
func fromOutsideAllowlist(frame []byte) []byte {
	out := bytes.Clone(frame)
	if binary.BigEndian.Uint16(out[12:]) == etherIPv4 {
		copy(out[14+12:], netip.MustParseAddr("100.65.0.0").AsSlice())
		binary.BigEndian.PutUint16(out[14+10:], 0)
		binary.BigEndian.PutUint16(out[14+10:], checksum(out[14:34]))
		return out
	}
	copy(out[14+8:], netip.MustParseAddr("fd6d:6167:6c62:1::").AsSlice())
	return out
}
