// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"testing"

	"github.com/maglb/maglb/datapath"
)

// VIPs the fuzz target adds to the fixtures: several weighted backends, so that the ring
// decides where a frame goes.
var (
	vipSpread  = netip.MustParseAddr("10.10.0.20") // TCP every port; UDP 53 over GUE
	vipSpread6 = netip.MustParseAddr("fd10::20")   // TCP 443
)

var fuzzServices = append(append([]datapath.Service(nil), fixtureServices...),
	datapath.Service{VIP: vipSpread, Protocol: datapath.TCP, Backends: []datapath.Backend{{Addr: backend2, Weight: 1}, {Addr: backend3, Weight: 2}, {Addr: backend4, Weight: 3}}},
	datapath.Service{VIP: vipSpread, Protocol: datapath.UDP, Port: 53, Encap: datapath.EncapGUE, Backends: []datapath.Backend{{Addr: backend2, Weight: 1}, {Addr: backend3, Weight: 1}}},
	datapath.Service{VIP: vipSpread6, Protocol: datapath.TCP, Port: 443, Backends: []datapath.Backend{{Addr: backendV2, Weight: 1}, {Addr: backendV3, Weight: 1}}},
)

// FuzzBalance runs arbitrary frames through the load balancer with the fixtures' VIPs,
// rings and backends programmed. Whatever the frame: the program never aborts; a frame it
// passes is unchanged (so every frame not addressed to a VIP passes unchanged); a frame it
// sends is either encapsulated to a backend of the VIP it was addressed to, with the outer
// headers the backend's next hop and the tunnel need, or an ICMP answer from that VIP to the
// sender; and what it sends never comes back to a VIP's path for ever.
func FuzzBalance(f *testing.F) {
	env := newFixtureEnv(f)
	env.sync(f, fuzzServices)
	for _, fx := range lbFixtures(env.opts, env.lb0, env.lb1) {
		f.Add(fx.in)
	}
	for _, seed := range [][]byte{
		frame4(vipSpread, syn80, nil),
		frame4(vipSpread, dns53, nil),
		frame6(vipSpread6, syn443, nil),
		tagged(frame4(vipSpread, ack80, nil), 7, true),
	} {
		f.Add(seed)
	}
	w := newFuzzWorld(env)
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 || len(frame) > 1518 {
			return // BPF_PROG_RUN takes Ethernet frames only
		}
		in := bytes.Clone(frame) // the program must not see our copy change
		for hop := 0; ; hop++ {
			verdict, out := env.run(t, env.dp.objs.XdpBalance, in, env.lb0)
			w.check(t, in, verdict, out)
			if verdict != xdpTX && verdict != xdpRedirect {
				return
			}
			// What leaves towards a VIP comes back to a load balancer: it must settle.
			dst, ok := destination(out)
			if !ok || !w.vips[dst] {
				return
			}
			if hop == 3 {
				t.Fatalf("still sent towards VIP %s after %d passes:\n%s", dst, hop+1, hex.EncodeToString(out))
			}
			in = out
		}
	})
}

// fuzzWorld is what the fuzz target knows of the programmed state.
type fuzzWorld struct {
	opts     Options
	vips     map[netip.Addr]bool
	backends map[netip.Addr]map[netip.Addr]bool // VIP → its backends
	nextHops map[netip.Addr]nextHop             // backend → the next hop frames to it take
}

func newFuzzWorld(env *lbEnv) *fuzzWorld {
	w := &fuzzWorld{opts: env.opts, vips: map[netip.Addr]bool{}, backends: map[netip.Addr]map[netip.Addr]bool{}}
	for _, s := range fuzzServices {
		w.vips[s.VIP] = true
		if w.backends[s.VIP] == nil {
			w.backends[s.VIP] = map[netip.Addr]bool{}
		}
		for _, b := range s.Backends {
			w.backends[s.VIP][b.Addr] = true
		}
	}
	via := func(m mac) nextHop { return nextHop{ifindex: uint32(env.lb0), sourceMAC: lb0MAC, mac: m} }
	w.nextHops = map[netip.Addr]nextHop{
		backend2: via(backend2MAC), backend3: via(backend3MAC), backend4: via(backend4MAC),
		backendV2: via(backend2MAC), backendV3: via(backend3MAC), backendRouted: via(backend2MAC),
		backendL1: {ifindex: uint32(env.lb1), sourceMAC: lb1MAC, mac: lb1PeerMAC},
	}
	return w
}

// check fails t when the program's verdict and output for in break an invariant.
func (w *fuzzWorld) check(t *testing.T, in []byte, verdict uint32, out []byte) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("verdict %s: "+format+"\n in: %s\nout: %s", append(append([]any{verdictNames[verdict]}, args...),
			hex.EncodeToString(in), hex.EncodeToString(out))...)
	}
	switch verdict {
	case xdpDrop:
		return
	case xdpPass:
		if !bytes.Equal(out, in) {
			fail("a passed frame changed")
		}
		return
	case xdpTX, xdpRedirect:
	default:
		fail("unexpected verdict %d", verdict)
	}
	dst, ok := destination(in)
	if !ok || !w.vips[dst] {
		fail("a frame to %v (not a VIP) was sent", dst)
	}
	if bytes.Equal(out, in) {
		fail("sent back unchanged")
	}
	l2 := 14
	if et := binary.BigEndian.Uint16(in[12:]); et == ether8021Q || et == ether8021AD {
		l2 = 18
	}
	if len(out) < l2 || !bytes.Equal(out[12:l2-2], in[12:l2-2]) {
		fail("the VLAN tag changed")
	}
	if problem := w.encapsulated(in, out, l2, dst); problem == "" {
		return
	} else if verdict == xdpRedirect {
		fail("redirected, but not a tunnelled frame: %s", problem)
	} else if answerProblem := w.answer(in, out, l2, dst); answerProblem != "" {
		fail("neither tunnelled (%s) nor an answer from the VIP (%s)", problem, answerProblem)
	}
}

// encapsulated says what is wrong with out as the tunnelled form of in, sent to a backend of
// vip, or "" when nothing is.
func (w *fuzzWorld) encapsulated(in, out []byte, l2 int, vip netip.Addr) string {
	inner := in[l2:]
	family := familyIPv4
	if vip.Is6() {
		family = familyIPv6
	}
	outerLen, tunnelProto := 20, uint8(protoIPIP)
	if family == familyIPv6 {
		outerLen, tunnelProto = 40, protoIPv6
	}
	if len(out) < l2+outerLen {
		return "too short for the outer header"
	}
	outer := out[l2:]
	var src, dst netip.Addr
	var proto uint8
	var payloadLen int // after the outer header, as it claims
	if family == familyIPv4 {
		if binary.BigEndian.Uint16(out[l2-2:]) != etherIPv4 || outer[0] != 0x45 || checksum(outer[:20]) != 0 || outer[8] != 64 {
			return "no valid outer IPv4 header (version, length, checksum, TTL 64)"
		}
		src, dst = netip.AddrFrom4([4]byte(outer[12:16])), netip.AddrFrom4([4]byte(outer[16:20]))
		proto = outer[9]
		payloadLen = int(binary.BigEndian.Uint16(outer[2:])) - 20
		if !w.opts.TunnelSource4.Contains(src) {
			return "outer source " + src.String() + " outside " + w.opts.TunnelSource4.String()
		}
	} else {
		if binary.BigEndian.Uint16(out[l2-2:]) != etherIPv6 || outer[0]>>4 != 6 || outer[7] != 64 {
			return "no valid outer IPv6 header (version, hop limit 64)"
		}
		src, dst = netip.AddrFrom16([16]byte(outer[8:24])), netip.AddrFrom16([16]byte(outer[24:40]))
		proto = outer[6]
		payloadLen = int(binary.BigEndian.Uint16(outer[4:]))
		if !w.opts.TunnelSource6.Contains(src) {
			return "outer source " + src.String() + " outside " + w.opts.TunnelSource6.String()
		}
	}
	if !w.backends[vip][dst] {
		return "outer destination " + dst.String() + " is not a backend of " + vip.String()
	}
	nh := w.nextHops[dst]
	if !bytes.Equal(out[0:6], nh.mac[:]) || !bytes.Equal(out[6:12], nh.sourceMAC[:]) {
		return "link layer is not the next hop's of " + dst.String()
	}
	tunnel := 0
	switch proto {
	case tunnelProto:
	case protoUDP:
		tunnel = 12
		gue := outer[outerLen:]
		if len(gue) < tunnel || binary.BigEndian.Uint16(gue[2:]) != w.opts.GUEPort ||
			int(binary.BigEndian.Uint16(gue[4:])) != payloadLen || gue[8] != 0 || gue[9] != tunnelProto {
			return "no valid GUE header to the GUE port"
		}
	default:
		return "outer protocol is not a tunnel"
	}
	got := out[l2+outerLen+tunnel:]
	if len(got) != len(inner) {
		return "the inner packet's length changed"
	}
	innerL3 := payloadLen - tunnel
	if innerL3 < outerLen || innerL3 > len(inner) {
		return "the outer length claims bytes the frame does not carry"
	}
	claimed := int(binary.BigEndian.Uint16(inner[2:])) // IPv4 total length
	if family == familyIPv6 {
		claimed = 40 + int(binary.BigEndian.Uint16(inner[4:]))
	}
	if innerL3 != claimed {
		return fmt.Sprintf("the outer length counts %d inner bytes, the inner header %d", innerL3, claimed)
	}
	// The inner packet is the frame's, its TTL or hop limit one less.
	want := bytes.Clone(inner)
	if family == familyIPv4 {
		if want[8] <= 1 {
			return fmt.Sprintf("sent with TTL %d", want[8])
		}
		want[8]--
		copy(want[10:12], got[10:12])
		if checksum(got[:20]) != checksum(inner[:20]) && checksum(got[:20])^checksum(inner[:20]) != 0xffff {
			return "the inner header checksum is not updated for the TTL"
		}
	} else {
		if want[7] <= 1 {
			return "sent with hop limit 1 or 0"
		}
		want[7]--
	}
	if !bytes.Equal(got, want) {
		return "the inner packet is not the frame's"
	}
	return ""
}

// answer says what is wrong with out as an ICMP answer from vip to the sender of in.
func (w *fuzzWorld) answer(in, out []byte, l2 int, vip netip.Addr) string {
	if !bytes.Equal(out[0:6], in[6:12]) || !bytes.Equal(out[6:12], in[0:6]) {
		return "the link layer is not the way back"
	}
	l3In, l3 := in[l2:], out[l2:]
	var src, dst, sender netip.Addr
	if vip.Is4() {
		if len(l3) < 20 || l3[0] != 0x45 || checksum(l3[:20]) != 0 {
			return "no valid IPv4 header"
		}
		src, dst, sender = netip.AddrFrom4([4]byte(l3[12:16])), netip.AddrFrom4([4]byte(l3[16:20])), netip.AddrFrom4([4]byte(l3In[12:16]))
		if l3[9] != protoICMP {
			return "not ICMP"
		}
	} else {
		if len(l3) < 40 || l3[0]>>4 != 6 {
			return "no valid IPv6 header"
		}
		src, dst, sender = netip.AddrFrom16([16]byte(l3[8:24])), netip.AddrFrom16([16]byte(l3[24:40])), netip.AddrFrom16([16]byte(l3In[8:24]))
	}
	if src != vip || dst != sender {
		return "from " + src.String() + " to " + dst.String() + ", not from the VIP to the sender"
	}
	return ""
}

// destination reads the IP destination where the program looks for it, whatever the rest of
// the frame holds.
func destination(frame []byte) (netip.Addr, bool) {
	l3 := 14
	etherType := binary.BigEndian.Uint16(frame[12:])
	if etherType == ether8021Q || etherType == ether8021AD {
		if len(frame) < 18 {
			return netip.Addr{}, false
		}
		l3 = 18
		etherType = binary.BigEndian.Uint16(frame[16:])
	}
	switch {
	case etherType == etherIPv4 && len(frame) >= l3+20:
		return netip.AddrFrom4([4]byte(frame[l3+16 : l3+20])), true
	case etherType == etherIPv6 && len(frame) >= l3+40:
		return netip.AddrFrom16([16]byte(frame[l3+24 : l3+40])), true
	}
	return netip.Addr{}, false
}
