// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/datapath/internal/netnstest"
	"github.com/maglb/maglb/datapath/internal/privtest"
	"github.com/maglb/maglb/internal/testenv"
)

// packetRateTopology is gen (g0) → lb (l0 … l1) → sink (s0). The generator transmits with
// XDP live frames; the sink counts in XDP and drops.
type packetRateTopology struct {
	gen, lb, sink *netnstest.NS
	traffic       bpf.TrafficObjects
	frame         []byte
	g0            int
}

var (
	rateVIP    = netip.MustParseAddr("10.200.0.1")
	rateSource = netip.MustParseAddr("10.1.0.2")
	rateSink   = netip.MustParseAddr("10.2.0.2")
	g0MAC      = mac{0x02, 0, 0, 0, 0x0a, 0x01}
	l0MAC      = mac{0x02, 0, 0, 0, 0x0a, 0x02}
	l1MAC      = mac{0x02, 0, 0, 0, 0x0b, 0x01}
	s0MAC      = mac{0x02, 0, 0, 0, 0x0b, 0x02}
)

const generatedFlows = 64

func newPacketRateTopology(b *testing.B) *packetRateTopology {
	privtest.Require(b)
	p := &packetRateTopology{gen: netnstest.New(b, "gen"), lb: netnstest.New(b, "lb"), sink: netnstest.New(b, "sink")}
	p.gen.Run(b, "ip", "link", "add", "g0", "address", g0MAC.String(), "type", "veth", "peer", "name", "l0", "address", l0MAC.String(), "netns", p.lb.Name)
	p.lb.Run(b, "ip", "link", "add", "l1", "address", l1MAC.String(), "type", "veth", "peer", "name", "s0", "address", s0MAC.String(), "netns", p.sink.Name)
	for _, dev := range []struct {
		ns   *netnstest.NS
		name string
		addr string
	}{{p.gen, "g0", "10.1.0.2/24"}, {p.lb, "l0", "10.1.0.1/24"}, {p.lb, "l1", "10.2.0.1/24"}, {p.sink, "s0", "10.2.0.2/24"}} {
		dev.ns.Run(b, "ip", "addr", "add", dev.addr, "dev", dev.name)
		dev.ns.Run(b, "ip", "link", "set", dev.name, "up")
	}
	p.lb.Run(b, "ip", "neigh", "replace", rateSink.String(), "lladdr", s0MAC.String(), "dev", "l1", "nud", "permanent")
	p.lb.Run(b, "ip", "neigh", "replace", rateSource.String(), "lladdr", g0MAC.String(), "dev", "l0", "nud", "permanent")
	p.lb.Sysctl(b, "net.ipv4.ip_forward", "1")
	p.lb.Sysctl(b, "net.ipv4.conf.all.rp_filter", "0")
	p.lb.Sysctl(b, "net.ipv4.conf.l0.rp_filter", "0")
	p.g0 = ifindex(b, p.gen, "g0")

	p.frame = concat(ethernet(l0MAC, g0MAC, etherIPv4, -1),
		ipv4(ipv4Header{src: rateSource, dst: rateVIP, proto: protoUDP, ttl: 64}, udp(10000, 9000, make([]byte, 22))))
	spec, err := bpf.LoadTraffic()
	if err != nil {
		b.Fatal(err)
	}
	if err := spec.Variables[bpf.TrafficVarGeneratedFlows].Set(uint32(generatedFlows)); err != nil {
		b.Fatal(err)
	}
	if err := spec.Variables[bpf.TrafficVarFrameTemplate].Set([64]byte(p.frame)); err != nil {
		b.Fatal(err)
	}
	if err := spec.LoadAndAssign(&p.traffic, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.traffic.Close() })
	p.attachNative(b, p.sink, "s0", p.traffic.XdpCount)
	return p
}

// attachNative attaches prog to dev until the link is closed or the benchmark ends.
func (p *packetRateTopology) attachNative(b *testing.B, ns *netnstest.NS, dev string, prog *ebpf.Program) link.Link {
	index := ifindex(b, ns, dev)
	var l link.Link
	if err := ns.Do(func() (err error) {
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: index, Flags: link.XDPDriverMode})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	return l
}

func (p *packetRateTopology) received(b *testing.B) uint64 {
	var perCPU []uint64
	if err := p.traffic.Received.Lookup(uint32(0), &perCPU); err != nil {
		b.Fatal(err)
	}
	var sum uint64
	for _, n := range perCPU {
		sum += n
	}
	return sum
}

// rate generates traffic for d and returns the packets per second the sink received.
func (p *packetRateTopology) rate(b *testing.B, d time.Duration) float64 {
	before := p.received(b)
	start := time.Now()
	err := p.gen.Do(func() error {
		for time.Since(start) < d {
			_, err := p.traffic.XdpGenerate.Run(&ebpf.RunOptions{
				Data:    p.frame,
				Repeat:  1 << 18,
				Flags:   unix.BPF_F_TEST_XDP_LIVE_FRAMES,
				Context: xdpContext{DataEnd: uint32(len(p.frame)), IngressIfindex: uint32(p.g0)},
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return float64(p.received(b)-before) / time.Since(start).Seconds()
}

// xdpRate programs services on the load balancer's l0, attached in mode, and returns the rate
// the sink receives.
func (p *packetRateTopology) xdpRate(b *testing.B, mode XDPMode, services []datapath.Service, d time.Duration) float64 {
	var dp *Datapath
	if err := p.lb.Do(func() (err error) {
		dp, err = New(Options{Interface: "l0", XDPMode: mode, PinPath: testPinPath(b)})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	if err := p.lb.Do(func() error { return dp.Sync(b.Context(), services) }); err != nil {
		b.Fatal(err)
	}
	rate := p.rate(b, d)
	if err := dp.Close(); err != nil {
		b.Fatal(err)
	}
	return rate
}

// rateServices returns n UDP services to the sink, the measured one (rateVIP) last.
func rateServices(n int) []datapath.Service {
	services := make([]datapath.Service, n)
	for i := range services[:n-1] {
		vip := netip.AddrFrom4([4]byte{10, 201, byte(i >> 8), byte(i)})
		services[i] = datapath.Service{VIP: vip, Protocol: datapath.UDP, Port: 9000, Backends: one(rateSink)}
	}
	services[n-1] = datapath.Service{VIP: rateVIP, Protocol: datapath.UDP, Port: 9000, Backends: one(rateSink)}
	return services
}

// dnat installs one iptables DNAT rule per service in the load balancer's PREROUTING chain, in
// order: like kube-proxy's service chain, a packet walks the rules before its own.
func (p *packetRateTopology) dnat(b *testing.B, services []datapath.Service) {
	var rules strings.Builder
	rules.WriteString("*nat\n:PREROUTING ACCEPT [0:0]\n")
	for _, s := range services {
		fmt.Fprintf(&rules, "-A PREROUTING -d %s/32 -p udp --dport %d -j DNAT --to-destination %s:%d\n", s.VIP, s.Port, rateSink, s.Port)
	}
	rules.WriteString("COMMIT\n")
	file := filepath.Join(b.TempDir(), "rules")
	if err := os.WriteFile(file, []byte(rules.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	p.lb.Run(b, "iptables-restore", file)
}

// BenchmarkLivePacketRate sends UDP through one load-balancer namespace on veth to the XDP load
// balancer in native and in generic mode and to iptables DNAT (kube-proxy's path), with 10, 100,
// 1,000 and 10,000 services, the measured one last, and reports the rates and their ratios.
// Goals: native XDP at least 3× DNAT with 10 services, 10× with 10,000. Run it with -benchtime=1x.
//
// Generator, load balancer and sink share one CPU (the generator's softirq), so each rate
// includes the generator's cost. A first run without a load balancer (l0 counts and drops)
// measures that floor; cost-ratio compares the per-packet costs above it.
func BenchmarkLivePacketRate(b *testing.B) {
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		testenv.Unavailable(b, "iptables-restore is missing")
	}
	if _, err := exec.LookPath("ethtool"); err != nil {
		testenv.Unavailable(b, "ethtool is missing")
	}
	const duration = 3 * time.Second
	goals := map[int]float64{10: 3, 10000: 10}
	for _, n := range []int{10, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			services := rateServices(n)
			var floorRate, nativeRate, genericRate, dnatRate float64
			for b.Loop() {
				p := newPacketRateTopology(b)
				// native redirect loses the sender's checksum offload
				p.gen.Run(b, "ethtool", "-K", "g0", "tx", "off")
				floor := p.attachNative(b, p.lb, "l0", p.traffic.XdpCount)
				floorRate = p.rate(b, duration)
				if err := floor.Close(); err != nil {
					b.Fatal(err)
				}
				nativeRate = p.xdpRate(b, XDPNative, services, duration)
				// Frames sent with XDP need NAPI on l0; a native program there would rule out the
				// generic one, GRO gives it too.
				p.lb.Run(b, "ethtool", "-K", "l0", "gro", "on")
				genericRate = p.xdpRate(b, XDPGeneric, services, duration)
				p.attachNative(b, p.lb, "l0", p.traffic.XdpPass)
				p.dnat(b, services)
				dnatRate = p.rate(b, duration)
			}
			for name, rate := range map[string]float64{"floor": floorRate, "native": nativeRate, "generic": genericRate, "dnat": dnatRate} {
				if rate == 0 {
					b.Fatalf("%s: no packet reached the sink", name)
				}
			}
			b.ReportMetric(floorRate/1e6, "floor-Mpps")
			b.ReportMetric(nativeRate/1e6, "xdp-native-Mpps")
			b.ReportMetric(genericRate/1e6, "xdp-generic-Mpps")
			b.ReportMetric(dnatRate/1e6, "dnat-Mpps")
			b.ReportMetric(nativeRate/dnatRate, "native/dnat")
			b.ReportMetric(genericRate/dnatRate, "generic/dnat")
			b.ReportMetric((1/dnatRate-1/floorRate)/(1/nativeRate-1/floorRate), "native-cost-ratio")
			summary := fmt.Sprintf("%d services: XDP native %.2f Mpps, generic %.2f, iptables DNAT %.2f: native/DNAT %.1f×",
				n, nativeRate/1e6, genericRate/1e6, dnatRate/1e6, nativeRate/dnatRate)
			if goal, ok := goals[n]; ok {
				summary += fmt.Sprintf(" (goal ≥ %.0f×: %s)", goal, verdict(nativeRate/dnatRate >= goal))
			}
			b.Log(summary)
		})
	}
}
