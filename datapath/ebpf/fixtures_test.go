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
	notVIP        = netip.MustParseAddr("10.10.0.99")
	notVIP6       = netip.MustParseAddr("fd10::99")
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
}

// newFixtureEnv programs fixtureServices, then resolves backend4, so that only the FIB knows it.
func newFixtureEnv(t testing.TB) *lbEnv {
	env := newLBEnv(t, Options{})
	env.ns.Sysctl(t, "net.ipv4.conf.all.forwarding", "1")
	env.ns.Sysctl(t, "net.ipv6.conf.all.forwarding", "1")
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

type fixture struct {
	name    string
	in      []byte
	verdict uint32
	out     []byte // nil: the input, unchanged
}

func lbFixtures(opts Options, lb0, lb1 int) []fixture {
	via := func(backendMAC mac) nextHop { return nextHop{ifindex: uint32(lb0), sourceMAC: lb0MAC, mac: backendMAC} }
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
		pass("v4 TCP wrong port", frame4(vipTCP80, l4{proto: protoTCP, sport: 40000, dport: 81, flags: tcpSYN}, nil)),
		pass("v4 UDP to the TCP port", frame4(vipTCP80, l4{proto: protoUDP, sport: 40000, dport: 80}, nil)),
		pass("v4 TCP to the UDP port", frame4(vipTCP80, l4{proto: protoTCP, sport: 40000, dport: 53, flags: tcpSYN}, nil)),
		pass("v4 ICMP to a VIP", concat(ethernet(lb0MAC, clientMAC, etherIPv4, -1), ipv4(ipv4Header{src: client4, dst: vipTCP80, proto: protoICMP, ttl: 64}, []byte{8, 0, 0, 0, 0, 0, 0, 0}))),
		pass("v4 non-VIP TCP", frame4(notVIP, syn80, nil)),
		pass("v4 non-VIP UDP", frame4(notVIP, dns53, nil)),
		pass("v4 backend address", frame4(backend2, syn80, nil)),
		// All-ports VIPs.
		ipip("v4 all-ports TCP high port", frame4(vipAllPorts, l4{proto: protoTCP, sport: 5, dport: 65535, flags: tcpSYN}, nil), backend2, backend2MAC),
		ipip("v4 all-ports TCP port 0", frame4(vipAllPorts, l4{proto: protoTCP, sport: 5, dport: 0, flags: tcpSYN}, nil), backend2, backend2MAC),
		gue("v4 all-ports UDP", frame4(vipAllPorts, l4{proto: protoUDP, sport: 5, dport: 4789, payload: []byte{1}}, nil), backend3, backend3MAC),
		ipip("v6 all-ports TCP", frame6(vip6AllPorts, l4{proto: protoTCP, sport: 5, dport: 8443, flags: tcpSYN}, nil), backendV2, backend2MAC),
		pass("v6 all-ports VIP, UDP not served", frame6(vip6AllPorts, udp443, nil)),
		// IPv4 header variants.
		pass("v4 with options", frame4(vipTCP80, syn80, func(h *ipv4Header) { h.options = []byte{1, 1, 1, 0} })),
		pass("v4 with record-route option", frame4(vipTCP80, syn80, func(h *ipv4Header) { h.options = []byte{7, 7, 4, 0, 0, 0, 0, 0} })),
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
		pass("v4 ICMP fragment to a VIP", fragment4(vipTCP80, protoICMP, 1, false, make([]byte, 8))),
		ipip("v6 first fragment", fragment6(vip6, protoTCP, 0, true, tcp(40031, 443, tcpACK, make([]byte, 12))), backendV2, backend2MAC),
		ipip("v6 later fragment", fragment6(vip6, protoTCP, 4, false, make([]byte, 8)), backendV2, backend2MAC),
		gue("v6 UDP fragment", fragment6(vip6, protoUDP, 4, false, make([]byte, 8)), backendV3, backend3MAC),
		pass("v6 fragment to non-VIP", fragment6(notVIP6, protoTCP, 4, false, make([]byte, 8))),
		// IPv6.
		ipip("v6 TCP SYN", synV6, backendV2, backend2MAC),
		ipip("v6 TCP non-SYN", frame6(vip6, l4{proto: protoTCP, sport: 40040, dport: 443, flags: tcpACK, payload: []byte("data")}, nil), backendV2, backend2MAC),
		gue("v6 UDP over GUE", frame6(vip6, udp443, nil), backendV3, backend3MAC),
		ipip("v6 traffic class copied", frame6(vip6, l4{proto: protoTCP, sport: 40041, dport: 443, flags: tcpSYN}, func(h *ipv6Header) { h.trafficClass = 0xb9; h.flowLabel = 0x12345 }), backendV2, backend2MAC),
		pass("v6 TCP wrong port", frame6(vip6, l4{proto: protoTCP, sport: 1, dport: 444, flags: tcpSYN}, nil)),
		pass("v6 non-VIP", frame6(notVIP6, syn443, nil)),
		pass("v6 ICMPv6 to a VIP", concat(ethernet(lb0MAC, clientMAC, etherIPv6, -1), ipv6(ipv6Header{src: client6, dst: vip6, next: protoICMPv6, hopLimit: 64}, []byte{128, 0, 0, 0, 0, 0, 0, 0}))),
		pass("v6 hop-by-hop header", frame6(vip6, l4{proto: protoHopByHop}, func(h *ipv6Header) { h.next = protoHopByHop })),
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
	}

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
	wantDrops := map[string]uint64{"ttl_exceeded": 4, "no_backend": 1, "no_route": 1, "encap": 0}
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
