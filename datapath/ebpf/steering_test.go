// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"net/netip"
	"testing"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
)

// outerDestination returns where the balancer sent a frame: the outer destination address.
func outerDestination(t *testing.T, env *lbEnv, frame []byte) netip.Addr {
	t.Helper()
	verdict, out := env.run(t, env.dp.objs.XdpBalance, frame, env.lb0)
	if verdict != xdpTX {
		t.Fatalf("verdict %s, want TX", verdictNames[verdict])
	}
	if out[12] == 0x08 {
		return netip.AddrFrom4([4]byte(out[14+16 : 14+20]))
	}
	return netip.AddrFrom16([16]byte(out[14+24 : 14+40]))
}

// An ICMP error about a flow reaches the flow's backend: the connection table's while it
// holds the flow, else the ring's, which is where the flow's next packet goes too.
func TestICMPErrorsFollowTheirFlow(t *testing.T) {
	env := newLBEnv(t, Options{})
	backend5, backendV5 := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")
	for _, addr := range []netip.Addr{backend5, backendV5} {
		env.ns.Run(t, "ip", "neigh", "replace", addr.String(), "lladdr", "02:00:00:00:00:05", "dev", "lb0", "nud", "permanent")
	}
	vip, vip6 := netip.MustParseAddr("10.10.1.1"), netip.MustParseAddr("fd10:1::1")
	services := func(backends4, backends6 []netip.Addr) []datapath.Service {
		s := []datapath.Service{{VIP: vip, Protocol: datapath.TCP, Port: 443}, {VIP: vip6, Protocol: datapath.TCP, Port: 443}}
		for _, b := range backends4 {
			s[0].Backends = append(s[0].Backends, datapath.Backend{Addr: b, Weight: 1})
		}
		for _, b := range backends6 {
			s[1].Backends = append(s[1].Backends, datapath.Backend{Addr: b, Weight: 1})
		}
		return s
	}
	type flow struct{ packet, icmpError []byte }
	var flows []flow
	for port := uint16(40100); port < 40132; port++ {
		l := l4{proto: protoTCP, sport: port, dport: 443, flags: tcpSYN}
		err4, _ := icmpError4(vip, l, 3, 4, 1400)
		err6, _ := icmpError6(vip6, l, 2, 0, 1280)
		flows = append(flows, flow{frame4(vip, l, nil), err4}, flow{frame6(vip6, l, nil), err6})
	}

	env.sync(t, services([]netip.Addr{backend2, backend3}, []netip.Addr{backendV2, backendV3}))
	first := make([]netip.Addr, len(flows))
	for i, f := range flows {
		first[i] = outerDestination(t, env, f.packet)
	}
	// A third backend moves part of the ring; the connection table keeps the flows.
	env.sync(t, services([]netip.Addr{backend2, backend3, backend5}, []netip.Addr{backendV2, backendV3, backendV5}))
	for i, f := range flows {
		if got := outerDestination(t, env, f.icmpError); got != first[i] {
			t.Errorf("flow %d: ICMP error went to %s, the flow's backend is %s", i, got, first[i])
		}
	}

	var key bpf.LBFlowKey
	var keys []bpf.LBFlowKey
	for it := env.dp.objs.Flows.Iterate(); it.Next(&key, new(bpf.LBFlow)); {
		keys = append(keys, key)
	}
	for _, k := range keys {
		if err := env.dp.objs.Flows.Delete(k); err != nil {
			t.Fatal(err)
		}
	}
	moved, seen := 0, map[netip.Addr]bool{}
	for i, f := range flows {
		got := outerDestination(t, env, f.icmpError)
		seen[got] = true
		if got != first[i] {
			moved++
		}
		if next := outerDestination(t, env, f.packet); next != got {
			t.Errorf("flow %d: ICMP error went to %s, the flow's next packet to %s", i, got, next)
		}
	}
	if moved == 0 || len(seen) < 4 {
		t.Errorf("%d flows moved to another backend, %d backends seen: the test proves nothing", moved, len(seen))
	}
}

// The program knows the addresses of the programmed services, and only those.
func TestVIPAddressesFollowSync(t *testing.T) {
	env := newLBEnv(t, Options{})
	both := []datapath.Service{
		{VIP: vipTCP80, Protocol: datapath.TCP, Port: 80, Backends: one(backend2)},
		{VIP: vip6, Protocol: datapath.UDP, Port: 443},
	}
	for _, step := range []struct {
		services []datapath.Service
		v4, v6   uint32
	}{
		{both, xdpTX, xdpTX},
		{both[1:], xdpPass, xdpTX},
		{nil, xdpPass, xdpPass},
		{both[:1], xdpTX, xdpPass},
	} {
		env.sync(t, step.services)
		if verdict, _ := env.run(t, env.dp.objs.XdpBalance, echo4(vipTCP80), env.lb0); verdict != step.v4 {
			t.Errorf("%d services: echo to %s: %s, want %s", len(step.services), vipTCP80, verdictNames[verdict], verdictNames[step.v4])
		}
		if verdict, _ := env.run(t, env.dp.objs.XdpBalance, echo6(vip6), env.lb0); verdict != step.v6 {
			t.Errorf("%d services: echo to %s: %s, want %s", len(step.services), vip6, verdictNames[verdict], verdictNames[step.v6])
		}
	}
}

// Backend entries carry the next hop's MTU, and mark the node's own addresses; a flow to a
// local backend is still recorded, so it stays there when the backend set changes.
func TestBackendEntries(t *testing.T) {
	env := newFixtureEnv(t)
	for _, c := range []struct {
		addr  netip.Addr
		mtu   uint16
		local uint8
	}{
		{backend2, 1500, 0},
		{backendV2, 1500, 0},
		{backendRouted, 1400, 0},
		{backend4, 0, 0}, // resolved after Sync: the FIB checks the MTU
		{lb0Addr, 0, 1},
		{lb0Addr6, 0, 1},
	} {
		e := env.backendEntry(t, c.addr)
		if e.Mtu != c.mtu || e.Local != c.local {
			t.Errorf("%s: mtu %d local %d, want mtu %d local %d", c.addr, e.Mtu, e.Local, c.mtu, c.local)
		}
	}

	syn := frame4(vipLocal, syn80, nil)
	if verdict, _ := env.run(t, env.dp.objs.XdpBalance, syn, env.lb0); verdict != xdpPass {
		t.Fatalf("verdict %s, want PASS", verdictNames[verdict])
	}
	info, _ := readFrame(syn)
	key := bpf.LBFlowKey{Src: addrWords(info.src), Dst: addrWords(info.dst), Sport: networkOrder16(info.sport), Dport: networkOrder16(info.dport), Proto: info.proto}
	var f bpf.LBFlow
	if err := env.dp.objs.Flows.Lookup(key, &f); err != nil {
		t.Fatalf("flow to the local backend not recorded: %v", err)
	}
	if want := env.dp.backends[lb0Addr].id; f.Backend != want {
		t.Errorf("flow recorded with backend %d, want %d", f.Backend, want)
	}
}
