// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/maglb/maglb/internal/netlab"
	"github.com/maglb/maglb/internal/shard"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
)

// scaleBFD is the BFD profile of the scale benchmark's sessions: upstream's defaults.
var scaleBFD = netlab.BFDProfile{Name: "scale", ReceiveInterval: 300, TransmitInterval: 300, DetectMultiplier: 3}

// BenchmarkToRScale is the scale simulation of the ToR's side: N LB nodes (MAGLB_SCALE_NODES,
// default 50), each a speaker process in its own namespace (no datapath), spread over S shards
// (MAGLB_SCALE_SHARDS, default 4), and V Services (MAGLB_SCALE_SERVICES, default 10,000), each
// in its shard's pool, announced to an FRR ToR in full mesh: every node peers with the ToR
// and announces a /32 per VIP of its shard, with BFD (300 ms x 3). It prints the ToR's
// sessions, BGP paths and prefixes, FIB routes and kernel next hops, FRR's memory, the time
// from the last Service having its IP until the ToR has every path and route, and the time
// from an LB node's uplink going down until the ToR has removed the node's paths (RIB) and
// next hops (kernel). Run it with -benchtime=1x: one pass takes minutes.
func BenchmarkToRScale(b *testing.B) {
	ctrllog.SetLogger(logr.Discard())
	nodes, shards, services := envInt("MAGLB_SCALE_NODES", 50), envInt("MAGLB_SCALE_SHARDS", 4), envInt("MAGLB_SCALE_SERVICES", 10000)
	if nodes < shards || nodes > 200 {
		b.Fatalf("%d nodes for %d shards: want at least one node per shard and at most 200 nodes", nodes, shards)
	}
	var results []scaleResult
	b.Run("full-mesh", func(b *testing.B) {
		for range b.N {
			r := benchFullMesh(b, nodes, shards, services)
			b.ReportMetric(float64(r.paths), "tor-paths")
			b.ReportMetric(r.converged.Seconds(), "converge-s")
			b.ReportMetric(r.nodeGoneFIB.Seconds()*1000, "node-death-ms")
			results = append(results, r)
		}
	})
	printScaleResults(nodes, shards, services, results)
}

// scaleResult is what the ToR holds and how fast it got there, for one mode.
type scaleResult struct {
	mode                      string
	sessions, paths           int
	fibRoutes, kernelNexthops int
	bgpdMemory, zebraMemory   string
	converged                 time.Duration // from the last IP written to everything at the ToR
	nodeGoneRIB, nodeGoneFIB  time.Duration // from the uplink down to the node's paths / next hops gone
}

func benchFullMesh(b *testing.B, nodes, shards, services int) scaleResult {
	names, addresses := scaleNodes(nodes)
	lab := newBGPLabWith(b, addresses, torSettings{
		router:   []string{"address-family ipv4 unicast", " maximum-paths 64", "exit-address-family"},
		neighbor: []string{"neighbor %[1]s bfd profile " + scaleBFD.Name},
		frr:      []netlab.FRROption{netlab.WithBFD(scaleBFD)},
	})
	c := fastClient(b, lab)
	ensureNamespace(b, metallbNamespace)
	create(b, &metallbv1beta1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: scaleBFD.Name, Namespace: metallbNamespace},
		Spec: metallbv1beta1.BFDProfileSpec{ReceiveInterval: ptr.To(scaleBFD.ReceiveInterval), TransmitInterval: ptr.To(scaleBFD.TransmitInterval),
			DetectMultiplier: ptr.To(scaleBFD.DetectMultiplier)}})
	create(b, &metallbv1beta2.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor", Namespace: metallbNamespace},
		Spec: metallbv1beta2.BGPPeerSpec{MyASN: nodeASN, ASN: torASN, Address: "172.30.0.1", BFDProfile: scaleBFD.Name,
			HoldTime: &metav1.Duration{Duration: 9 * time.Second}}})
	create(b, &metallbv1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "scale", Namespace: metallbNamespace}})
	for s := range shards {
		create(b, pool(scalePool(s), scalePoolCIDR(s), scalePool(s)))
	}
	for i, name := range names {
		labelNode(b, name, map[string]string{shard.Label(scalePool(i % shards)): ""})
	}
	// The Services' endpoints are on a node that is no LB node.
	createNode(b, "be1", "172.30.0.250", nil)

	fmt.Printf("full mesh: %d speakers starting\n", nodes)
	for _, name := range names {
		lab.startSpeaker(b, name, "--log-level", "info")
	}
	waitAtToR(b, lab, "every session established with BFD up", 5*time.Minute, func(s torState) bool {
		return s.established == nodes && s.bfdUp == nodes
	})

	fmt.Printf("full mesh: %d Services with their IPs\n", services)
	ctx := context.Background()
	parallel(b, services, func(i int) error {
		_, err := createPoolService(ctx, b, c, fmt.Sprintf("scale-%d", i), scalePool(i%shards), "be1", scaleIP(i, shards))
		return err
	})
	lastWritten := time.Now()
	perShard := func(s int) int { return (nodes - s + shards - 1) / shards } // nodes s, s+shards, ...
	expected := 0
	for i := range services {
		expected += perShard(i % shards)
	}
	waitAtToR(b, lab, fmt.Sprintf("%d paths and %d FIB routes", expected, services), 20*time.Minute, func(s torState) bool {
		return s.paths == expected && s.fibRoutes == services
	})
	r := scaleResult{mode: "full mesh", converged: time.Since(lastWritten)}
	r.fill(b, lab)

	// A node of shard 0 dies: its uplink goes down, as a failed NIC; BFD tells the ToR.
	victim := names[0]
	vip := netip.PrefixFrom(scaleIP(0, shards), 32)
	if !slices.Contains(kernelNexthops(b, lab, vip), addresses[victim]) {
		b.Fatalf("the ToR's route to %s has no next hop %s before the failure", vip, addresses[victim])
	}
	down := time.Now()
	must(b)(lab.nodes[victim].Run("ip", "link", "set", "eth0", "down"))
	for r.nodeGoneRIB == 0 || r.nodeGoneFIB == 0 {
		if time.Since(down) > 2*time.Minute {
			b.Fatalf("the ToR still has %s's paths or next hops 2 minutes after its uplink went down", victim)
		}
		if r.nodeGoneRIB == 0 && !peerEstablished(lab, addresses[victim]) {
			r.nodeGoneRIB = time.Since(down)
		}
		if r.nodeGoneFIB == 0 && !slices.Contains(kernelNexthops(b, lab, vip), addresses[victim]) {
			r.nodeGoneFIB = time.Since(down)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r
}

// torState is what the ToR's FRR and kernel hold.
type torState struct {
	established, bfdUp, paths, fibRoutes int
}

func readToR(lab *bgpLab) (torState, error) {
	var s torState
	var summary struct {
		IPv4 struct {
			Peers map[string]struct {
				State  string `json:"state"`
				PfxRcd int    `json:"pfxRcd"`
			} `json:"peers"`
		} `json:"ipv4Unicast"`
	}
	if err := lab.router.VtyshJSON("show bgp summary json", &summary); err != nil {
		return s, err
	}
	for _, p := range summary.IPv4.Peers {
		if p.State == "Established" {
			s.established++
			s.paths += p.PfxRcd
		}
	}
	bfd, err := lab.router.BFDPeers()
	if err != nil {
		return s, err
	}
	for _, p := range bfd {
		if p.Status == "up" {
			s.bfdUp++
		}
	}
	var routes struct {
		Routes []struct {
			Type string `json:"type"`
			FIB  int    `json:"fib"`
		} `json:"routes"`
	}
	if err := lab.router.VtyshJSON("show ip route summary json", &routes); err != nil {
		return s, err
	}
	for _, r := range routes.Routes {
		if r.Type == "ebgp" || r.Type == "bgp" {
			s.fibRoutes += r.FIB
		}
	}
	return s, nil
}

// waitAtToR polls the ToR until done says it holds what is wanted, printing progress.
func waitAtToR(b *testing.B, lab *bgpLab, what string, timeout time.Duration, done func(torState) bool) {
	b.Helper()
	start, lastPrint := time.Now(), time.Now()
	for {
		s, err := readToR(lab)
		if err == nil && done(s) {
			return
		}
		if time.Since(start) > timeout {
			b.Fatalf("the ToR after %v: %+v (%v); want %s", timeout, s, err, what)
		}
		if time.Since(lastPrint) > 10*time.Second {
			fmt.Printf("  waiting %v for %s: sessions %d, BFD up %d, paths %d, FIB routes %d\n",
				time.Since(start).Round(time.Second), what, s.established, s.bfdUp, s.paths, s.fibRoutes)
			lastPrint = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fill records what the ToR holds once converged.
func (r *scaleResult) fill(b *testing.B, lab *bgpLab) {
	s, err := readToR(lab)
	if err != nil {
		b.Fatal(err)
	}
	r.sessions, r.paths, r.fibRoutes = s.established, s.paths, s.fibRoutes
	var kernel []struct {
		Nexthops []any `json:"nexthops"`
	}
	out, err := lab.tor.Run("ip", "-j", "route", "show", "proto", "bgp")
	if err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), &kernel); err != nil {
		b.Fatalf("decoding the ToR's kernel routes: %v", err)
	}
	for _, route := range kernel {
		r.kernelNexthops += max(1, len(route.Nexthops))
	}
	memory, err := lab.router.Vtysh("show memory")
	if err != nil {
		b.Fatal(err)
	}
	heap := frrHeap(memory)
	r.bgpdMemory, r.zebraMemory = heap["bgpd"], heap["zebra"]
}

var (
	frrMemoryOf = regexp.MustCompile(`^Memory statistics for (\S+):`)
	frrHeapLine = regexp.MustCompile(`^\s*Total heap allocated:\s*(.+)$`)
)

// frrHeap returns each daemon's "Total heap allocated" from FRR's `show memory`.
func frrHeap(showMemory string) map[string]string {
	heap := map[string]string{}
	daemon := ""
	for _, line := range strings.Split(showMemory, "\n") {
		if m := frrMemoryOf.FindStringSubmatch(line); m != nil {
			daemon = m[1]
		} else if m := frrHeapLine.FindStringSubmatch(line); m != nil && daemon != "" {
			if _, seen := heap[daemon]; !seen {
				heap[daemon] = strings.TrimSpace(m[1])
			}
		}
	}
	return heap
}

func peerEstablished(lab *bgpLab, address string) bool {
	var neighbor map[string]struct {
		State string `json:"bgpState"`
	}
	if err := lab.router.VtyshJSON("show bgp neighbors "+address+" json", &neighbor); err != nil {
		return true // unknown: not yet gone
	}
	return neighbor[address].State == "Established"
}

// kernelNexthops returns the gateways of the ToR's kernel route to vip.
func kernelNexthops(b *testing.B, lab *bgpLab, vip netip.Prefix) []string {
	gateways, err := lab.tor.Nexthops(vip)
	if err != nil {
		b.Fatal(err)
	}
	return gateways
}

func printScaleResults(nodes, shards, services int, results []scaleResult) {
	if len(results) == 0 {
		return
	}
	fmt.Printf("\nToR scale: %d LB nodes in %d shards, %d VIPs (IPv4), BFD %d ms x %d\n", nodes, shards, services,
		scaleBFD.TransmitInterval, scaleBFD.DetectMultiplier)
	row := func(label string, value func(scaleResult) string) {
		fmt.Printf("%-46s", label)
		for _, r := range results {
			fmt.Printf(" %16s", value(r))
		}
		fmt.Println()
	}
	row("", func(r scaleResult) string { return r.mode })
	row("ToR BGP sessions", func(r scaleResult) string { return strconv.Itoa(r.sessions) })
	row("ToR BGP paths (RIB)", func(r scaleResult) string { return strconv.Itoa(r.paths) })
	row("ToR FIB routes (BGP)", func(r scaleResult) string { return strconv.Itoa(r.fibRoutes) })
	row("ToR kernel next hops", func(r scaleResult) string { return strconv.Itoa(r.kernelNexthops) })
	row("ToR memory: bgpd heap", func(r scaleResult) string { return r.bgpdMemory })
	row("ToR memory: zebra heap", func(r scaleResult) string { return r.zebraMemory })
	row("last IP written → ToR has everything", func(r scaleResult) string { return r.converged.Round(time.Millisecond).String() })
	row("node uplink down → its paths gone (RIB)", func(r scaleResult) string { return r.nodeGoneRIB.Round(time.Millisecond).String() })
	row("node uplink down → its next hop gone (kernel)", func(r scaleResult) string { return r.nodeGoneFIB.Round(time.Millisecond).String() })
}

// scaleNodes names the LB nodes lb01.. and gives each an address on the lab's bridge.
func scaleNodes(n int) ([]string, map[string]string) {
	names := make([]string, n)
	addresses := map[string]string{}
	for i := range n {
		names[i] = fmt.Sprintf("lb%02d", i+1)
		addresses[names[i]] = netip.AddrFrom4([4]byte{172, 30, 0, byte(10 + i)}).String()
	}
	return names, addresses
}

// scalePool is the pool, and the shard, of shard index s; its VIPs are in scalePoolCIDR(s).
func scalePool(s int) string     { return fmt.Sprintf("shard%d", s) }
func scalePoolCIDR(s int) string { return fmt.Sprintf("10.%d.0.0/16", 100+s) }
func scaleIP(i, shards int) netip.Addr {
	j := i/shards + 1
	return netip.AddrFrom4([4]byte{10, byte(100 + i%shards), byte(j >> 8), byte(j)})
}
