// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/datapath/internal/netnstest"
	"github.com/maglb/maglb/datapath/internal/privtest"
)

// TestLBNodeAsBackend: two load balancers (generic XDP) share the backends lbA and backend;
// lbA is also a backend, with the decapsulation attached at TCX ingress of the uplink whose
// XDP hook the load balancer holds. Flows that reach lbA and map to it go to its stack
// unencapsulated; flows that reach lbB and map to lbA arrive tunnelled, and lbA's TCX program
// opens them.
func TestLBNodeAsBackend(t *testing.T) {
	privtest.Require(t)
	var (
		vip         = netip.MustParseAddr("10.200.0.1")
		lbA         = netip.MustParseAddr("10.100.0.1")
		lbB         = netip.MustParseAddr("10.100.0.2")
		clientAddr  = netip.MustParseAddr("10.100.0.10")
		backendAddr = netip.MustParseAddr("10.100.0.12")
		lbSources   = []netip.Prefix{netip.PrefixFrom(lbA, 32), netip.PrefixFrom(lbB, 32)}
	)
	sw := netnstest.New(t, "switch")
	sw.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	sw.Run(t, "ip", "link", "set", "br0", "up")
	node := func(role, port string, addr netip.Addr) *netnstest.NS {
		ns := netnstest.New(t, role)
		netnstest.Veth(t, sw, port, ns, "eth0")
		sw.Run(t, "ip", "link", "set", port, "master", "br0")
		ns.Run(t, "ip", "addr", "add", addr.String()+"/24", "dev", "eth0")
		ns.Sysctl(t, "net.ipv4.conf.all.rp_filter", "0")
		ns.Sysctl(t, "net.ipv4.conf.eth0.rp_filter", "0")
		return ns
	}
	backendOf := func(ns *netnstest.NS, name string) {
		ns.Run(t, "ip", "addr", "add", vip.String()+"/32", "dev", "lo")
		ns.Sysctl(t, "net.ipv4.conf.all.arp_ignore", "1")
		ns.Sysctl(t, "net.ipv4.conf.all.arp_announce", "2")
		serve(t, ns, vip, name)
	}
	decapOn := func(ns *netnstest.NS, addr netip.Addr) *Decap {
		var d *Decap
		if err := ns.Do(func() (err error) {
			d, err = NewDecap(DecapOptions{
				Interfaces: []string{"eth0"}, Hook: DecapAuto, XDPMode: XDPGeneric, PinPath: testPinPath(t),
				Addresses: []netip.Addr{addr}, AllowedSources: lbSources,
			})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}

	client := node("client", "sw-client", clientAddr)
	be := node("backend", "sw-backend", backendAddr)
	backendOf(be, "backend")
	beDecap := decapOn(be, backendAddr)

	backends := []datapath.Backend{{Addr: lbA, Weight: 1}, {Addr: backendAddr, Weight: 1}}
	services := []datapath.Service{
		{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: backends},
		{VIP: vip, Protocol: datapath.UDP, Port: 5353, Backends: backends, Encap: datapath.EncapGUE},
	}
	balancer := func(ns *netnstest.NS) *Datapath {
		ns.Sysctl(t, "net.ipv4.ip_forward", "1")
		return startBalancer(t, ns, services)
	}
	nsA := node("lbA", "sw-lbA", lbA)
	backendOf(nsA, "lbA")
	dpA := balancer(nsA)
	dpB := balancer(node("lbB", "sw-lbB", lbB))
	// Attached after the load balancer, so auto finds the XDP hook taken.
	aDecap := decapOn(nsA, lbA)
	if hooks := aDecap.Hooks(); hooks["eth0"] != DecapTCX {
		t.Fatalf("lbA's decapsulation hooks %v, want eth0 at TCX: its XDP hook holds the load balancer", hooks)
	}
	if hooks := beDecap.Hooks(); hooks["eth0"] != DecapXDP {
		t.Fatalf("backend's decapsulation hooks %v, want eth0 at XDP", hooks)
	}

	const requests = 24
	var toBackend int // UDP queries answered by backend, each one GUE datagram it opened
	for _, via := range []struct {
		name string
		lb   netip.Addr
	}{{"lbA", lbA}, {"lbB", lbB}} {
		client.Run(t, "ip", "route", "replace", vip.String()+"/32", "via", via.lb.String())
		before, err := aDecap.Stats()
		if err != nil {
			t.Fatal(err)
		}
		httpSeen, udpSeen := map[string]int{}, map[string]int{}
		for range requests {
			out := client.Run(t, "curl", "-sS", "--max-time", "5", "http://"+vip.String()+"/")
			httpSeen[strings.SplitN(out, "\n", 2)[0]]++
			udpSeen[udpQuery(t, client, netip.AddrPortFrom(vip, 5353))]++
		}
		t.Logf("via %s: HTTP replies per backend %v, UDP replies per backend %v", via.name, httpSeen, udpSeen)
		for _, seen := range []map[string]int{httpSeen, udpSeen} {
			if len(seen) != 2 || seen["lbA"] == 0 || seen["backend"] == 0 {
				t.Errorf("via %s: replies came from %v, want lbA and backend", via.name, seen)
			}
		}
		toBackend += udpSeen["backend"]
		after, err := aDecap.Stats()
		if err != nil {
			t.Fatal(err)
		}
		ipip, gue := after.IPIP-before.IPIP, after.GUE-before.GUE
		t.Logf("via %s: lbA decapsulated %d IPIP and %d GUE packets", via.name, ipip, gue)
		switch via.lb {
		case lbA: // its own flows never leave it
			if ipip != 0 || gue != 0 {
				t.Errorf("via lbA: lbA decapsulated %d IPIP and %d GUE packets, want none", ipip, gue)
			}
		case lbB: // one datagram per UDP query; TCP flows of several packets each
			if gue != uint64(udpSeen["lbA"]) || ipip < 3*uint64(httpSeen["lbA"]) {
				t.Errorf("via lbB: lbA decapsulated %d GUE and %d IPIP packets, want %d and at least %d", gue, ipip, udpSeen["lbA"], 3*httpSeen["lbA"])
			}
		}
	}

	statsA, err := dpA.Stats()
	if err != nil {
		t.Fatal(err)
	}
	statsB, err := dpB.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]datapath.Stats{"lbA": statsA, "lbB": statsB} {
		if dns := s.Services[services[1].Key()]; dns.Packets != requests {
			t.Errorf("%s counted %d UDP packets, want %d", name, dns.Packets, requests)
		}
	}
	for name, d := range map[string]*Decap{"lbA": aDecap, "backend": beDecap} {
		c, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if c.Rejected != 0 {
			t.Errorf("%s rejected %d tunnelled packets", name, c.Rejected)
		}
	}
	if c, err := beDecap.Stats(); err != nil || c.GUE != uint64(toBackend) {
		t.Errorf("backend decapsulated %d GUE packets (%v), want %d", c.GUE, err, toBackend)
	}
}
