// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/maglb/maglb/datapath/ebpf"
	"github.com/maglb/maglb/internal/netlab"
	"github.com/maglb/maglb/internal/nsexec"
	"github.com/maglb/maglb/internal/testenv"
)

// dsrReplySize makes each answer much larger than its request, so that byte counters show
// which way the answers went.
const dsrReplySize = 64 << 10

// TestEBPFDatapathThroughFRR: a client behind the ToR (FRR, zebra installing the BGP routes
// in the ToR's kernel) fetches http://VIP/. The ToR routes the VIP to the one LB node, whose
// speaker announces it and forwards with its XDP program (generic mode), IPIP-encapsulated,
// to the backend node be1 of the service's endpoint. be1 decapsulates with the decap program,
// holds the VIP on lo and answers the client directly: the client's address is kept, and the
// answers never cross the LB node.
func TestEBPFDatapathThroughFRR(t *testing.T) {
	netlab.Require(t, "curl")
	const (
		lbAddr      = "172.30.0.2"
		backendAddr = "172.30.0.10"
		clientAddr  = "10.10.0.2"
		torClient   = "10.10.0.1"
		service     = "dsr-web"
		requests    = 10
	)
	vip := netip.MustParseAddr("198.51.100.10")
	lab := newBGPLab(t, map[string]string{"lb1": lbAddr})
	lb := lab.nodes["lb1"]

	// The ToR routes between the client's link and the nodes' bridge.
	clientNS, err := netlab.NewNamespace(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlab.Connect(clientNS, "eth0", lab.tor, "client0"); err != nil {
		t.Fatal(err)
	}
	must(t)(lab.tor.Run("ip", "addr", "add", torClient+"/24", "dev", "client0"))
	setSysctls(t, lab.tor, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	must(t)(clientNS.Run("ip", "addr", "add", clientAddr+"/24", "dev", "eth0"))
	// The usual MTU 1500; on a wire every packet is at most that, so no segmentation offload.
	must(t)(clientNS.Run("ethtool", "-K", "eth0", "tso", "off", "gso", "off"))
	must(t)(clientNS.Run("ip", "route", "add", "default", "via", torClient))

	// The LB node forwards; the XDP program falls back to the FIB until next hops are cached.
	setSysctls(t, lb, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0")

	// The backend node: VIP on lo, not answering ARP for it, answers routed via the ToR.
	backend := lab.plug(t, "p-be1", backendAddr)
	createNode(t, "be1", backendAddr, nil)
	must(t)(backend.Run("ip", "addr", "add", vip.String()+"/32", "dev", "lo"))
	must(t)(backend.Run("ip", "route", "add", "default", "via", "172.30.0.1"))
	setSysctls(t, backend, "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0")
	// The load balancer tunnels from its own address, which the backend allows.
	decap := startDecap(t, backend, "eth0", netip.MustParseAddr(backendAddr), netip.MustParsePrefix(lbAddr+"/32"))
	served := serveDSR(t, backend, vip, "be1")

	announcePool(t, "dsr", "198.51.100.0/28")
	loadBalancer(t, service, vip.String(), "dsr", "be1")
	// The speaker pins into a bpffs of the test's own, which outlives the speaker's process
	// (and its private mounts, which `ip netns exec` gives it): what it leaves is visible.
	pins := filepath.Join(testBPFFS(t), "lb1")
	stop := lab.startSpeaker(t, "lb1", "--datapath=ebpf", "--xdp-mode=generic", "--datapath-interface=eth0",
		"--datapath-pin-path="+pins, "--keep-datapath-on-exit=false")

	testenv.Eventually(t, "the ToR's kernel routing the VIP to lb1", func() error {
		out, err := lab.tor.Run("ip", "route", "show", vip.String()+"/32")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "via "+lbAddr) || !strings.Contains(out, "proto bgp") {
			return fmt.Errorf("route %q", strings.TrimSpace(out))
		}
		return nil
	})
	if out, _ := lb.Run("ip", "link", "show", "dev", "eth0"); !strings.Contains(out, "xdpgeneric") {
		t.Fatalf("no generic XDP program on lb1's eth0:\n%s", out)
	}
	get := func() (string, error) {
		return clientNS.Run("curl", "-sS", "--max-time", "3", "http://"+vip.String()+"/")
	}
	// The first packets may precede the speaker's programming of the VIP and backend.
	testenv.Eventually(t, "a first answer through the VIP", func() error { _, err := get(); return err })

	type counters struct {
		lbRx, lbTx, backendTx, lbPackets, lbNewFlows, decapsulated uint64
	}
	read := func() (c counters, err error) {
		c.lbRx, c.lbTx = linkStat(t, lb, "eth0", "rx_bytes"), linkStat(t, lb, "eth0", "tx_bytes")
		c.backendTx = linkStat(t, backend, "eth0", "tx_bytes")
		labels := []string{"vip=" + vip.String(), "protocol=TCP", "port=80"}
		packets, err := speakerMetric(lb, "maglb_datapath_service_packets_total", labels...)
		if err != nil {
			return c, err
		}
		flows, err := speakerMetric(lb, "maglb_datapath_service_new_flows_total", labels...)
		if err != nil {
			return c, err
		}
		c.lbPackets, c.lbNewFlows = uint64(packets), uint64(flows)
		stats, err := decap.Stats()
		c.decapsulated = stats.IPIP
		return c, err
	}
	// settled waits until every packet the LB forwarded has been decapsulated (the last
	// ACKs of closing connections may still be on their way).
	settled := func() counters {
		var c counters
		testenv.Eventually(t, "the LB's and the backend's counters to agree", func() (err error) {
			if c, err = read(); err != nil {
				return err
			}
			if c.lbPackets != c.decapsulated {
				return fmt.Errorf("the LB forwarded %d packets to the VIP, the backend decapsulated %d", c.lbPackets, c.decapsulated)
			}
			return nil
		})
		return c
	}
	before := settled()
	servedBefore := served.Load()

	var replyBytes uint64
	for i := range requests {
		out, err := get()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		replyBytes += uint64(len(out))
		first, _, _ := strings.Cut(out, "\n")
		seen, ok := strings.CutPrefix(first, "be1 saw ")
		host, _, splitErr := net.SplitHostPort(seen)
		if !ok || splitErr != nil || host != clientAddr {
			t.Fatalf("request %d: answer %q, want be1 seeing the client's own address %s", i, first, clientAddr)
		}
		if len(out) < dsrReplySize {
			t.Fatalf("request %d: %d bytes, want at least %d", i, len(out), dsrReplySize)
		}
	}
	after := settled()
	if n := served.Load() - servedBefore; n != requests {
		t.Errorf("the backend served %d requests, want %d", n, requests)
	}

	d := counters{
		lbRx: after.lbRx - before.lbRx, lbTx: after.lbTx - before.lbTx, backendTx: after.backendTx - before.backendTx,
		lbPackets: after.lbPackets - before.lbPackets, lbNewFlows: after.lbNewFlows - before.lbNewFlows,
		decapsulated: after.decapsulated - before.decapsulated,
	}
	t.Logf("%d requests: the client received %d bytes; the backend's eth0 sent %d bytes; lb1's eth0 received %d and sent %d bytes; "+
		"lb1's XDP forwarded %d packets (%d new flows), the backend decapsulated %d",
		requests, replyBytes, d.backendTx, d.lbRx, d.lbTx, d.lbPackets, d.lbNewFlows, d.decapsulated)
	if d.lbNewFlows != requests {
		t.Errorf("lb1's datapath counted %d new flows to %s:80, want one per request, %d", d.lbNewFlows, vip, requests)
	}
	if d.lbPackets == 0 || d.lbPackets != d.decapsulated {
		t.Errorf("lb1's datapath forwarded %d packets, the backend decapsulated %d: want the same, more than 0", d.lbPackets, d.decapsulated)
	}
	// Direct server return: the answers left the backend straight to the ToR; lb1 only saw
	// the client's side of the connections.
	if d.backendTx < replyBytes {
		t.Errorf("the backend's eth0 sent %d bytes, less than the %d the client received", d.backendTx, replyBytes)
	}
	if d.lbRx > replyBytes/10 || d.lbTx > replyBytes/10 {
		t.Errorf("answers crossed lb1: its eth0 received %d and sent %d bytes while the client received %d", d.lbRx, d.lbTx, replyBytes)
	}

	// Stopped with --keep-datapath-on-exit=false, the speaker takes its program off the uplink
	// and removes its pins.
	if entries, err := os.ReadDir(pins); err != nil || len(entries) == 0 {
		t.Errorf("nothing pinned under %s while the speaker runs (%v)", pins, err)
	}
	stop()
	if out, _ := lb.Run("ip", "link", "show", "dev", "eth0"); strings.Contains(out, "xdp") {
		t.Errorf("an XDP program is still attached to lb1's eth0 after the speaker stopped:\n%s", out)
	}
	if entries, err := os.ReadDir(pins); !os.IsNotExist(err) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("pins left under %s after the speaker stopped: %v (%v)", pins, names, err)
	}
}

// testBPFFS mounts a bpffs of the test's own on a temporary directory, unmounted at cleanup
// (which drops whatever is still pinned there).
func testBPFFS(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mounting a bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// startDecap attaches the decapsulation program (generic XDP) to dev in ns for packets
// tunnelled to addr from the allowed sources, from a thread in ns, with its pins in a
// directory of the test's own.
func startDecap(t *testing.T, ns *netlab.Namespace, dev string, addr netip.Addr, allowed ...netip.Prefix) *ebpf.Decap {
	t.Helper()
	pins := filepath.Join("/sys/fs/bpf", fmt.Sprintf("maglb-speaker-test-%d-%s", os.Getpid(), ns.Name))
	t.Cleanup(func() { _ = os.RemoveAll(pins) })
	var d *ebpf.Decap
	if err := nsexec.Do(ns.Name, func() (err error) {
		d, err = ebpf.NewDecap(ebpf.DecapOptions{
			Interfaces: []string{dev}, XDPMode: ebpf.XDPGeneric, PinPath: pins, Addresses: []netip.Addr{addr}, AllowedSources: allowed,
		})
		return err
	}); err != nil {
		t.Fatalf("starting the decapsulation program in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("closing the decapsulation program: %v", err)
		}
	})
	return d
}

// serveDSR answers HTTP on vip:80 in ns with "<name> saw <client address:port>", then
// dsrReplySize bytes of padding. It returns the count of requests served.
func serveDSR(t *testing.T, ns *netlab.Namespace, vip netip.Addr, name string) *atomic.Uint64 {
	t.Helper()
	var l net.Listener
	// Bound to the VIP, so that answers leave from it.
	if err := nsexec.Do(ns.Name, func() (err error) {
		l, err = net.Listen("tcp", netip.AddrPortFrom(vip, 80).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var served atomic.Uint64
	padding := bytes.Repeat([]byte("x"), dsrReplySize)
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			served.Add(1)
			fmt.Fprintf(w, "%s saw %s\n", name, r.RemoteAddr)
			_, _ = w.Write(padding)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = server.Serve(l) }()
	t.Cleanup(func() { _ = server.Close() })
	return &served
}

// TestDatapathCapacityWithdrawsOnlyTheExcess: with room for two services, the speaker
// programs and announces two of three; the third alone is withdrawn, with an event naming
// the limit, and the metrics show the ids used and the capacity.
func TestDatapathCapacityWithdrawsOnlyTheExcess(t *testing.T) {
	lab := newBGPLab(t, map[string]string{"lb1": "172.30.0.2"})
	announcePool(t, "capacity", "198.51.100.16/28")
	// The datapath fills its ids in address order: .23 is the one left without.
	loadBalancer(t, "first", "198.51.100.21", "capacity", "lb1")
	loadBalancer(t, "second", "198.51.100.22", "capacity", "lb1")
	excess := loadBalancer(t, "excess", "198.51.100.23", "capacity", "lb1")
	lab.startSpeaker(t, "lb1", "--datapath=ebpf", "--xdp-mode=generic", "--datapath-interface=eth0",
		"--datapath-pin-path="+filepath.Join(testBPFFS(t), "lb1"), "--keep-datapath-on-exit=false", "--datapath-max-services=2")

	testenv.Eventually(t, "the two services that fit announced", func() error {
		for _, prefix := range []string{"198.51.100.21/32", "198.51.100.22/32"} {
			if got := lab.route(t, prefix); len(got.nextHops) == 0 {
				return fmt.Errorf("%s not at the router", prefix)
			}
		}
		return nil
	})
	waitForEvent(t, excess, "DatapathFailed", "all 2 service ids are in use")
	if got := lab.route(t, "198.51.100.23/32"); len(got.nextHops) != 0 {
		t.Errorf("the service past the capacity is announced via %v", got.nextHops)
	}
	for name, want := range map[string]float64{"maglb_datapath_service_ids_used": 2, "maglb_datapath_service_ids_capacity": 2} {
		testenv.Eventually(t, name, func() error {
			got, err := speakerMetric(lab.nodes["lb1"], name)
			if err == nil && got != want {
				err = fmt.Errorf("%s = %v, want %v", name, got, want)
			}
			return err
		})
	}
}
