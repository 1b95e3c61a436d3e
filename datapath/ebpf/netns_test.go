// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/datapath/internal/netnstest"
	"github.com/maglb/maglb/datapath/internal/privtest"
)

// replySize makes replies much larger than requests, so that counters show which way they went.
const replySize = 64 << 10

// TestEndToEnd: client → load balancer (generic XDP) → two backends that decapsulate with
// XDP and hold the VIP on lo. All four namespaces hang off a bridge in a fifth; the client
// routes the VIP via the load balancer, and the backends answer the client directly.
func TestEndToEnd(t *testing.T) {
	privtest.Require(t)
	var (
		vip         = netip.MustParseAddr("10.200.0.1")
		lbAddr      = netip.MustParseAddr("10.100.0.1")
		clientAddr  = netip.MustParseAddr("10.100.0.10")
		backendAddr = []netip.Addr{netip.MustParseAddr("10.100.0.11"), netip.MustParseAddr("10.100.0.12")}
	)
	sw := netnstest.New(t, "switch")
	sw.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	sw.Run(t, "ip", "link", "set", "br0", "up")
	attach := func(ns *netnstest.NS, port string, addr netip.Addr) {
		netnstest.Veth(t, sw, port, ns, "eth0")
		sw.Run(t, "ip", "link", "set", port, "master", "br0")
		ns.Run(t, "ip", "addr", "add", addr.String()+"/24", "dev", "eth0")
		ns.Sysctl(t, "net.ipv4.conf.all.rp_filter", "0")
		ns.Sysctl(t, "net.ipv4.conf.eth0.rp_filter", "0")
	}

	client := netnstest.New(t, "client")
	attach(client, "sw-client", clientAddr)
	client.Run(t, "ip", "route", "add", vip.String()+"/32", "via", lbAddr.String())
	// A veth hands its peer whole TCP segmentation batches (up to 64 KiB in one packet); on a
	// wire every packet is at most the MTU, which is what the load balancer checks against.
	client.Run(t, "ethtool", "-K", "eth0", "tso", "off", "gso", "off")

	lb := netnstest.New(t, "lb")
	attach(lb, "sw-lb", lbAddr)
	lb.Sysctl(t, "net.ipv4.ip_forward", "1")

	var decaps []*Decap
	for i, addr := range backendAddr {
		be := netnstest.New(t, fmt.Sprintf("backend%d", i))
		attach(be, fmt.Sprintf("sw-backend%d", i), addr)
		be.Run(t, "ip", "addr", "add", vip.String()+"/32", "dev", "lo")
		be.Sysctl(t, "net.ipv4.conf.all.arp_ignore", "1")
		be.Sysctl(t, "net.ipv4.conf.all.arp_announce", "2")
		var d *Decap
		if err := be.Do(func() (err error) {
			// The load balancer tunnels from its own address.
			d, err = NewDecap(DecapOptions{
				Interfaces: []string{"eth0"}, XDPMode: XDPGeneric, PinPath: testPinPath(t),
				Addresses: []netip.Addr{addr}, AllowedSources: []netip.Prefix{netip.PrefixFrom(lbAddr, 32)},
			})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		decaps = append(decaps, d)
		serve(t, be, vip, fmt.Sprintf("backend%d", i))
	}

	backends := []datapath.Backend{{Addr: backendAddr[0], Weight: 1}, {Addr: backendAddr[1], Weight: 1}}
	services := []datapath.Service{
		{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: backends},
		{VIP: vip, Protocol: datapath.UDP, Port: 5353, Backends: backends, Encap: datapath.EncapGUE},
	}
	dp := startBalancer(t, lb, services)

	// The client's link has the usual MTU of 1500: an upload fills its segments, the load
	// balancer answers those that no longer fit with the outer header with "fragmentation
	// needed", and the client's TCP sends smaller ones.
	const uploadSize = 1 << 20
	upload := client.Run(t, "sh", "-c", fmt.Sprintf("head -c %d /dev/zero | curl -sS --max-time 10 --data-binary @- http://%s/", uploadSize, vip))
	if want := fmt.Sprintf("read %d bytes", uploadSize); !strings.Contains(upload, want) {
		t.Errorf("upload answered %q, want %q", upload, want)
	}

	lbReceived := func() int { return counter(t, lb, "eth0", "rx_bytes") }
	lbBefore := lbReceived()

	const requests = 24
	httpSeen := map[string]int{}
	var replyBytes int
	for range requests {
		out := client.Run(t, "curl", "-sS", "--max-time", "5", "http://"+vip.String()+"/")
		replyBytes += len(out)
		httpSeen[strings.SplitN(out, "\n", 2)[0]]++
	}
	udpSeen := map[string]int{}
	for range requests {
		udpSeen[udpQuery(t, client, netip.AddrPortFrom(vip, 5353))]++
	}
	t.Logf("HTTP replies per backend %v, UDP replies per backend %v", httpSeen, udpSeen)
	for _, seen := range []map[string]int{httpSeen, udpSeen} {
		if len(seen) != 2 || seen["backend0"] == 0 || seen["backend1"] == 0 {
			t.Errorf("replies came from %v, want both backends", seen)
		}
	}

	lbDelta := lbReceived() - lbBefore
	t.Logf("client got %d reply bytes over HTTP; the load balancer received %d bytes in all", replyBytes, lbDelta)
	if replyBytes < requests*replySize || lbDelta > replyBytes/10 {
		t.Errorf("replies must bypass the load balancer: it received %d bytes while the client got %d", lbDelta, replyBytes)
	}

	stats, err := dp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	web, dns := stats.Services[services[0].Key()], stats.Services[services[1].Key()]
	if web.NewFlows != requests+1 || dns.NewFlows != requests || dns.Packets != requests {
		t.Errorf("load balancer counted %d TCP and %d UDP new flows, %d UDP packets; want %d, %d and %d", web.NewFlows, dns.NewFlows, dns.Packets, requests+1, requests, requests)
	}
	answered := web.Drops["fragmentation_needed"]
	if answered == 0 {
		t.Error("no full-size segment of the upload was answered with fragmentation needed")
	}
	var ipip, gue uint64
	for i, d := range decaps {
		c, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("backend%d decapsulated %d IPIP and %d GUE packets", i, c.IPIP, c.GUE)
		ipip += c.IPIP
		gue += c.GUE
	}
	if ipip != web.Packets-answered || gue != dns.Packets {
		t.Errorf("backends decapsulated %d IPIP and %d GUE packets; the load balancer sent %d and %d", ipip, gue, web.Packets-answered, dns.Packets)
	}
}

// serve answers HTTP on vip:80 and UDP on vip:5353 inside ns with name first.
func serve(t *testing.T, ns *netnstest.NS, vip netip.Addr, name string) {
	var (
		web net.Listener
		dns net.PacketConn
	)
	if err := ns.Do(func() (err error) {
		if web, err = net.Listen("tcp", netip.AddrPortFrom(vip, 80).String()); err != nil {
			return err
		}
		// Bound to the VIP, so that replies leave from it.
		dns, err = net.ListenPacket("udp", netip.AddrPortFrom(vip, 5353).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	body := append([]byte(name+"\n"), bytes.Repeat([]byte("x"), replySize)...)
	server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 {
			_, _ = w.Write(body)
			return
		}
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s\nread %d bytes (%v)\n", name, n, err)
	})}
	go func() { _ = server.Serve(web) }()
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := dns.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = dns.WriteTo([]byte(name), from)
		}
	}()
	t.Cleanup(func() {
		_ = server.Close()
		_ = dns.Close()
	})
}

// udpQuery sends one datagram from a fresh socket in ns and returns the answer.
func udpQuery(t *testing.T, ns *netnstest.NS, to netip.AddrPort) string {
	var conn *net.UDPConn
	if err := ns.Do(func() (err error) {
		conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 64)
	for range 3 {
		if _, err := conn.Write([]byte("who")); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := conn.Read(buf)
		if err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("no UDP answer from %s", to)
	return ""
}

func counter(t *testing.T, ns *netnstest.NS, dev, name string) int {
	out := ns.Run(t, "cat", "/sys/class/net/"+dev+"/statistics/"+name)
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// startBalancer runs the load balancer (generic XDP) on eth0 of ns and programs services,
// syncing until every backend's next hop is cached (or the backend is the node itself): the
// first Sync asks the kernel to resolve the backends' neighbours, a later one caches them.
func startBalancer(t *testing.T, ns *netnstest.NS, services []datapath.Service) *Datapath {
	var dp *Datapath
	if err := ns.Do(func() (err error) {
		dp, err = New(Options{Interface: "eth0", XDPMode: XDPGeneric, PinPath: testPinPath(t)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dp.Close() })
	resolved := func() bool {
		for _, b := range dp.backends {
			if b.entry.Ifindex == 0 && b.entry.Local == 0 {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if err := ns.Do(func() error { return dp.Sync(t.Context(), services) }); err != nil {
			t.Fatal(err)
		}
		if resolved() {
			return dp
		}
		if time.Now().After(deadline) {
			t.Fatal("the backends' next hops were never resolved")
		}
	}
}
