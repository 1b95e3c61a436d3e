// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/maglb/maglb/internal/netlab"
	"github.com/maglb/maglb/internal/reflector"
	"github.com/maglb/maglb/internal/shard"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
)

// scaleBFD is the BFD profile of the scale benchmark's sessions: upstream's defaults.
var scaleBFD = netlab.BFDProfile{Name: "scale", ReceiveInterval: 300, TransmitInterval: 300, DetectMultiplier: 3}

// BenchmarkToRScale is the scale simulation of the ToR's side: N LB nodes (MAGLB_SCALE_NODES,
// default 50), each a speaker process in its own namespace (no datapath), spread over S shards
// (MAGLB_SCALE_SHARDS, default 4), and V Services (MAGLB_SCALE_SERVICES, default 10,000), each
// in its shard's pool, announced to an FRR ToR in two modes, one after the other:
//   - full-mesh: every node peers with the ToR and announces a /32 per VIP of its shard;
//   - reflector: every node peers over iBGP with two `speaker --role=reflector` processes,
//     which announce to the ToR each shard's pool prefix with one path per node (ADD-PATH).
//
// Every session runs BFD (300 ms x 3): the ToR's, and the nodes' with the reflectors. It prints the ToR's sessions, BGP paths and
// prefixes, FIB routes and kernel next hops, FRR's memory, the time from the last Service
// having its IP until the ToR has every path and route, and the time from an LB node's
// uplink going down until the ToR has removed the node's paths (RIB) and next hops (kernel),
// both modes side by side against the goals. Run it with -benchtime=1x: one pass takes minutes.
func BenchmarkToRScale(b *testing.B) {
	ctrllog.SetLogger(logr.Discard())
	size := scaleSize{nodes: envInt("MAGLB_SCALE_NODES", 50), shards: envInt("MAGLB_SCALE_SHARDS", 4), services: envInt("MAGLB_SCALE_SERVICES", 10000)}
	if size.nodes < size.shards || size.nodes > 200 || size.services < size.shards {
		b.Fatalf("%+v: want at least one node and one Service per shard and at most 200 nodes", size)
	}
	load := loadAverage(b)
	var results []scaleResult
	for _, mode := range []scaleMode{fullMesh, reflectorMode} {
		b.Run(mode.bench, func(b *testing.B) {
			for range b.N {
				r := benchToR(b, mode, size)
				b.ReportMetric(float64(r.sessions), "tor-sessions")
				b.ReportMetric(float64(r.paths), "tor-paths")
				b.ReportMetric(float64(r.distinctPaths), "tor-distinct-paths")
				b.ReportMetric(float64(r.fibRoutes), "fib-routes")
				b.ReportMetric(float64(r.kernelNexthops), "kernel-nexthops")
				b.ReportMetric(r.bgpdKiB, "bgpd-KiB")
				b.ReportMetric(r.zebraKiB, "zebra-KiB")
				b.ReportMetric(r.converged.Seconds(), "converge-s")
				b.ReportMetric(r.nodeGoneRIB.Seconds()*1000, "node-gone-rib-ms")
				b.ReportMetric(r.nodeGoneFIB.Seconds()*1000, "node-death-ms")
				results = append(results, r)
			}
		})
	}
	printScaleResults(size, load, loadAverage(b), results)
}

// scaleSize is what the simulation runs with.
type scaleSize struct{ nodes, shards, services int }

// perShard is the number of LB nodes of shard s: nodes s, s+shards, ...
func (z scaleSize) perShard(s int) int { return (z.nodes - s + z.shards - 1) / z.shards }

// hostPaths is the number of VIP host routes the LB nodes announce in all: one per VIP and
// node of its shard.
func (z scaleSize) hostPaths() int {
	n := 0
	for i := range z.services {
		n += z.perShard(i % z.shards)
	}
	return n
}

// scaleMode is how the LB nodes reach the ToR: directly, or through reflectors.
type scaleMode struct {
	bench, title string
	reflectors   int
}

var (
	fullMesh      = scaleMode{bench: "full-mesh", title: "full mesh"}
	reflectorMode = scaleMode{bench: "reflector", title: "2 reflectors", reflectors: 2}
)

// reflectorLabel marks the reflectors' nodes, which the BGPPeer of the ToR selects in
// reflector mode; lbLabel the LB nodes, which the BGPPeers of the reflectors select.
const (
	reflectorLabel = "maglb.io/reflector"
	lbLabel        = "maglb.io/lb-node"
)

// scaleResult is what the ToR holds and how fast it got there, for one mode.
type scaleResult struct {
	mode                      scaleMode
	sessions, paths           int
	distinctPaths             int // (prefix, next hop) pairs: each reflector sends every one
	fibRoutes, kernelNexthops int
	bgpdKiB, zebraKiB         float64
	converged                 time.Duration // from the last IP written to everything at the ToR
	reflected                 time.Duration // from the last IP written to every VIP route at the reflectors
	nodeGoneRIB, nodeGoneFIB  time.Duration // from the uplink down to the node's paths / next hops gone
}

// scaleLab is the bench lab with the LB nodes and, in reflector mode, the reflectors' nodes.
type scaleLab struct {
	*bgpLab
	mode       scaleMode
	reflectors []string
}

func benchToR(b *testing.B, mode scaleMode, size scaleSize) scaleResult {
	names, addresses := scaleNodes(size.nodes)
	var reflectors []string
	for r := range mode.reflectors {
		name := fmt.Sprintf("rr%d", r+1)
		reflectors = append(reflectors, name)
		addresses[name] = netip.AddrFrom4([4]byte{172, 30, 0, byte(240 + r)}).String()
	}
	torPeers := names
	if mode.reflectors > 0 {
		torPeers = reflectors
	}
	lab := scaleLab{mode: mode, reflectors: reflectors, bgpLab: newBGPLabWith(b, addresses, torSettings{
		router:   []string{"address-family ipv4 unicast", " maximum-paths 64", "exit-address-family"},
		neighbor: []string{"neighbor %[1]s bfd profile " + scaleBFD.Name},
		frr:      []netlab.FRROption{netlab.WithBFD(scaleBFD)},
		peers:    func(node string) bool { return slices.Contains(torPeers, node) },
	})}
	c := fastClient(b, lab.bgpLab)
	lab.configure(b, size, names, addresses)

	// The Services exist before the speakers start, as the Announce benchmark has them: the
	// API server creates Services (and their ClusterIPs) slowly under the load of many
	// speakers; the allocation measured is the controller's, the IP written in the status.
	fmt.Printf("%s: %d Services\n", mode.title, size.services)
	ctx := context.Background()
	services := make([]*corev1.Service, size.services)
	parallel(b, size.services, func(i int) error {
		var err error
		services[i], err = createPoolService(ctx, b, c, fmt.Sprintf("scale-%d", i), scalePool(i%size.shards), "be1", netip.Addr{})
		return err
	})

	var programs []*os.Process
	for _, name := range reflectors {
		cmd, _ := lab.startProcess(b, name, filepath.Join(b.TempDir(), name+".log"), binary(b), nil, "--role=reflector", "--node-name", name,
			"--kubeconfig", lab.env.Kubeconfig, "--namespace", metallbNamespace, "--log-level", "info", "--metrics-secure=false")
		programs = append(programs, cmd.Process)
	}
	programs = append(programs, lab.startSpeakers(b, mode, names)...)
	lab.waitAtToR(b, "every session established with BFD up", 15*time.Minute, func(s torState) bool {
		return s.established == len(torPeers) && s.bfdUp == len(torPeers)
	}, nil)

	fmt.Printf("%s: the %d Services get their IPs (speakers and reflectors at nice %d meanwhile)\n", mode.title, size.services, allocationNice)
	renice(b, programs, allocationNice)
	parallel(b, size.services, func(i int) error {
		svc := services[i]
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: scaleIP(i, size.shards).String()}}
		return c.Status().Update(ctx, svc)
	})
	lastWritten := time.Now()
	renice(b, programs, 0)
	// Full mesh: every host route of every node. Reflectors: each shard's prefix, with a path
	// per node of the shard from each reflector, once the reflectors have every host route.
	wantPaths, wantFIB := size.hostPaths(), size.services
	if mode.reflectors > 0 {
		wantPaths, wantFIB = mode.reflectors*size.nodes, size.shards
	}
	everything := func(s torState) bool { return s.paths == wantPaths && s.fibRoutes == wantFIB }
	var reflected func(torState) bool
	if mode.reflectors > 0 {
		reflected = func(s torState) bool { return s.reflected == size.hostPaths() }
	}
	settled, reflectedAt := lab.waitAtToR(b, fmt.Sprintf("%d paths and %d FIB routes", wantPaths, wantFIB), 20*time.Minute, everything, reflected)
	r := scaleResult{mode: mode, converged: settled.Sub(lastWritten)}
	if reflected != nil {
		r.reflected = reflectedAt.Sub(lastWritten)
	}
	r.fill(b, lab)

	// A node of shard 0 dies: its uplink goes down, as a failed NIC; BFD tells the ToR, or
	// the reflectors.
	victim := names[0]
	probe := netip.PrefixFrom(scaleIP(0, size.shards), 32)
	if mode.reflectors > 0 {
		probe = netip.MustParsePrefix(scalePoolCIDR(0))
	}
	if !slices.Contains(kernelNexthops(b, lab.bgpLab, probe), addresses[victim]) {
		b.Fatalf("the ToR's route to %s has no next hop %s before the failure", probe, addresses[victim])
	}
	// The machine's load at the failure sets FRR's and the reflectors' pace here.
	fmt.Printf("%s: %s's uplink goes down, load average %s (1/5/15 min)\n", mode.title, victim, loadAverage(b))
	down := time.Now()
	must(b)(lab.nodes[victim].Run("ip", "link", "set", "eth0", "down"))
	for r.nodeGoneRIB == 0 || r.nodeGoneFIB == 0 {
		if time.Since(down) > 2*time.Minute {
			b.Fatalf("the ToR still has %s's paths or next hops 2 minutes after its uplink went down", victim)
		}
		if r.nodeGoneRIB == 0 && !slices.Contains(lab.route(b, probe.String()).nextHops, addresses[victim]) {
			r.nodeGoneRIB = time.Since(down)
		}
		if r.nodeGoneFIB == 0 && !slices.Contains(kernelNexthops(b, lab.bgpLab, probe), addresses[victim]) {
			r.nodeGoneFIB = time.Since(down)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r
}

// speakerBatch is how many speakers start at once. Each first lists every Service and
// EndpointSlice: 50 listing 10,000 of each at once kept the API server of a 2-CPU machine
// from serving a dozen of them within the 10 minutes a speaker waits for its caches before
// it ends itself (a kubelet would restart it; nothing here does). The start-up is not
// measured: the Services get their IPs once every session is up.
const speakerBatch = 10

// startSpeakers starts the LB nodes' speakers, a batch at a time, each batch once the one
// before has a BGP session up on every node (its caches synced, its peers configured), and
// returns their processes.
func (l scaleLab) startSpeakers(b *testing.B, mode scaleMode, names []string) []*os.Process {
	b.Helper()
	var speakers []*os.Process
	for first := 0; first < len(names); first += speakerBatch {
		batch := names[first:min(first+speakerBatch, len(names))]
		for _, name := range batch {
			cmd, _ := l.startProcess(b, name, filepath.Join(b.TempDir(), name+".log"), binary(b), nil, l.speakerArgs(name, "--log-level", "info")...)
			speakers = append(speakers, cmd.Process)
		}
		deadline := time.Now().Add(15 * time.Minute)
		for _, name := range batch {
			for {
				up, err := speakerMetric(l.nodes[name], "metallb_bgp_session_up")
				if err == nil && up > 0 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("speaker %s has no BGP session up 15 minutes after its start (%v)", name, err)
				}
				time.Sleep(time.Second)
			}
		}
		fmt.Printf("%s: %d of %d speakers have a BGP session up\n", mode.title, first+len(batch), len(names))
	}
	return speakers
}

// allocationNice is the CPU priority of the LB nodes' speakers and of the reflectors while
// the benchmark writes the 10,000 IPs. Each would have CPUs of its own, as would the API
// server; here they share two. At the same priority, the 50 speakers' passes (one per
// batch of new IPs, each over every Service) took 1.7 of the 2 CPUs and left the API server
// so little that it took 3 IPs a second. Niced, they let the API server take the writes as
// it would on its own machines. From the last IP written on, what is measured, they run at normal priority:
// niced, the API server's work on the status objects of 125,000 announcements starved their
// BFD. Even so, at 50 nodes and 10,000 VIPs their BFD sessions flap towards the end of the
// writes (load average 130), and the measured convergence includes their recovery. The two
// reflectors, each taking 125,000 host routes, slowed the writes to 7 a second.
const allocationNice = 15

// renice sets the CPU priority of every thread of the processes: Linux sets it per thread,
// and the threads a process starts later take that of the thread that starts them.
func renice(b *testing.B, processes []*os.Process, nice int) {
	b.Helper()
	for _, p := range processes {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", p.Pid))
		if err != nil {
			b.Fatalf("renicing process %d: %v", p.Pid, err)
		}
		for _, task := range tasks {
			tid, err := strconv.Atoi(task.Name())
			if err != nil {
				continue
			}
			// A thread may end between the listing and here.
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, syscall.ESRCH) {
				b.Fatalf("renicing thread %d of process %d: %v", tid, p.Pid, err)
			}
		}
	}
}

// configure writes the cluster's configuration in upstream's kinds: the shards' pools, one
// advertisement, the ToR's BGPPeer (from the LB nodes, or from the reflectors' nodes), the
// reflectors' BGPPeers (from the LB nodes), the nodes' labels, and a node, not an LB node,
// where the Services' endpoints are.
func (l scaleLab) configure(b *testing.B, size scaleSize, names []string, addresses map[string]string) {
	ensureNamespace(b, metallbNamespace)
	create(b, &metallbv1beta1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: scaleBFD.Name, Namespace: metallbNamespace},
		Spec: metallbv1beta1.BFDProfileSpec{ReceiveInterval: ptr.To(scaleBFD.ReceiveInterval), TransmitInterval: ptr.To(scaleBFD.TransmitInterval),
			DetectMultiplier: ptr.To(scaleBFD.DetectMultiplier)}})
	tor := &metallbv1beta2.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor", Namespace: metallbNamespace},
		Spec: metallbv1beta2.BGPPeerSpec{MyASN: nodeASN, ASN: torASN, Address: "172.30.0.1", BFDProfile: scaleBFD.Name,
			HoldTime: &metav1.Duration{Duration: 9 * time.Second}}}
	if len(l.reflectors) > 0 {
		tor.Spec.NodeSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{reflectorLabel: ""}}}
	}
	create(b, tor)
	for _, name := range l.reflectors {
		create(b, &metallbv1beta2.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metallbNamespace},
			Spec: metallbv1beta2.BGPPeerSpec{MyASN: nodeASN, ASN: nodeASN, Address: addresses[name], BFDProfile: scaleBFD.Name,
				HoldTime:      &metav1.Duration{Duration: 9 * time.Second},
				NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{lbLabel: ""}}}}})
		labelNode(b, name, map[string]string{reflectorLabel: ""})
	}
	create(b, &metallbv1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "scale", Namespace: metallbNamespace}})
	for s := range size.shards {
		create(b, pool(scalePool(s), scalePoolCIDR(s), scalePool(s)))
	}
	for i, name := range names {
		labelNode(b, name, map[string]string{shard.Label(scalePool(i % size.shards)): "", lbLabel: ""})
	}
	createNode(b, "be1", "172.30.0.250", nil)
}

// torState is what the ToR's FRR and kernel hold, and how many VIP routes the reflector
// that has the fewest has received.
type torState struct {
	established, bfdUp, paths, fibRoutes int
	reflected                            int
}

func (l scaleLab) read() (torState, error) {
	var s torState
	var summary struct {
		IPv4 struct {
			Peers map[string]struct {
				State  string `json:"state"`
				PfxRcd int    `json:"pfxRcd"`
			} `json:"peers"`
		} `json:"ipv4Unicast"`
	}
	if err := l.router.VtyshJSON("show bgp summary json", &summary); err != nil {
		return s, err
	}
	for _, p := range summary.IPv4.Peers {
		if p.State == "Established" {
			s.established++
			s.paths += p.PfxRcd
		}
	}
	bfd, err := l.router.BFDPeers()
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
	if err := l.router.VtyshJSON("show ip route summary json", &routes); err != nil {
		return s, err
	}
	for _, r := range routes.Routes {
		if r.Type == "ebgp" || r.Type == "bgp" {
			s.fibRoutes += r.FIB
		}
	}
	for i, name := range l.reflectors {
		n, err := metricOn(l.nodes[name], reflector.DefaultPort, "maglb_reflector_received_routes")
		if err != nil {
			return s, err
		}
		if i == 0 || int(n) < s.reflected {
			s.reflected = int(n)
		}
	}
	return s, nil
}

// waitAtToR polls the ToR until atToR says it holds what is wanted and also (when not nil)
// says the rest is there, printing progress. It returns since when atToR has held without
// a break, and when also first held.
func (l scaleLab) waitAtToR(b *testing.B, what string, timeout time.Duration, atToR, also func(torState) bool) (settled, alsoAt time.Time) {
	b.Helper()
	start, lastPrint := time.Now(), time.Now()
	for {
		s, err := l.read()
		now := time.Now()
		switch {
		case err != nil || !atToR(s):
			settled = time.Time{}
		case settled.IsZero():
			settled = now
		}
		if err == nil && also != nil && alsoAt.IsZero() && also(s) {
			alsoAt = now
		}
		if !settled.IsZero() && (also == nil || !alsoAt.IsZero()) {
			return settled, alsoAt
		}
		if time.Since(start) > timeout {
			b.Fatalf("the ToR after %v: %+v (%v); want %s", timeout, s, err, what)
		}
		if time.Since(lastPrint) > 10*time.Second {
			fmt.Printf("  waiting %v for %s: sessions %d, BFD up %d, paths %d, FIB routes %d, routes at the reflectors %d\n",
				time.Since(start).Round(time.Second), what, s.established, s.bfdUp, s.paths, s.fibRoutes, s.reflected)
			lastPrint = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fill records what the ToR holds once converged.
func (r *scaleResult) fill(b *testing.B, lab scaleLab) {
	s, err := lab.read()
	if err != nil {
		b.Fatal(err)
	}
	r.sessions, r.paths, r.fibRoutes = s.established, s.paths, s.fibRoutes
	// Full mesh: every path comes from its own node's session, so no two share a prefix and
	// a next hop. Reflectors: each sends every path; the table is small enough to count.
	r.distinctPaths = s.paths
	if len(lab.reflectors) > 0 {
		var table struct {
			Routes map[string][]netlab.Path `json:"routes"`
		}
		if err := lab.router.VtyshJSON("show bgp ipv4 unicast json", &table); err != nil {
			b.Fatal(err)
		}
		distinct := map[string]bool{}
		for prefix, paths := range table.Routes {
			for _, p := range paths {
				for _, nh := range p.Nexthops {
					distinct[prefix+" "+nh.IP] = true
				}
			}
		}
		r.distinctPaths = len(distinct)
	}
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
	r.bgpdKiB, r.zebraKiB = heap["bgpd"], heap["zebra"]
}

var (
	frrMemoryOf = regexp.MustCompile(`^Memory statistics for (\S+):`)
	frrHeapLine = regexp.MustCompile(`^\s*Total heap allocated:\s*(\d+) (bytes?|KiB|MiB|GiB)\s*$`)
	frrUnits    = map[string]float64{"byte": 1.0 / 1024, "bytes": 1.0 / 1024, "KiB": 1, "MiB": 1024, "GiB": 1024 * 1024}
)

// frrHeap returns each daemon's "Total heap allocated" from FRR's `show memory`, in KiB.
func frrHeap(showMemory string) map[string]float64 {
	heap := map[string]float64{}
	daemon := ""
	for _, line := range strings.Split(showMemory, "\n") {
		if m := frrMemoryOf.FindStringSubmatch(line); m != nil {
			daemon = m[1]
		} else if m := frrHeapLine.FindStringSubmatch(line); m != nil && daemon != "" {
			if _, seen := heap[daemon]; !seen {
				n, _ := strconv.ParseFloat(m[1], 64)
				heap[daemon] = n * frrUnits[m[2]]
			}
		}
	}
	return heap
}

// kernelNexthops returns the gateways of the ToR's kernel route to prefix.
func kernelNexthops(b *testing.B, lab *bgpLab, prefix netip.Prefix) []string {
	gateways, err := lab.tor.Nexthops(prefix)
	if err != nil {
		b.Fatal(err)
	}
	return gateways
}

// loadAverage returns the machine's load average over 1, 5 and 15 minutes.
func loadAverage(b *testing.B) string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		b.Fatal(err)
	}
	return strings.Join(strings.Fields(string(data))[:3], " / ")
}

// Goals of the reflector mode: node death out of the ToR's forwarding within this, and at
// least this many times fewer ToR paths than the full mesh.
const (
	nodeDeathGoal   = time.Second
	pathsFactorGoal = 100
	scaleFamilies   = 1 // the simulation announces IPv4 VIPs only
)

func printScaleResults(size scaleSize, loadBefore, loadAfter string, results []scaleResult) {
	if len(results) == 0 {
		return
	}
	fmt.Printf("\nToR scale: %d LB nodes in %d shards, %d VIPs (IPv4); BFD %d ms x %d on every session; load average %s before, %s after (1/5/15 min)\n",
		size.nodes, size.shards, size.services, scaleBFD.TransmitInterval, scaleBFD.DetectMultiplier, loadBefore, loadAfter)
	row := func(label string, value func(scaleResult) string) {
		fmt.Printf("%-50s", label)
		for _, r := range results {
			fmt.Printf(" %14s", value(r))
		}
		fmt.Println()
	}
	count := func(n func(scaleResult) int) func(scaleResult) string {
		return func(r scaleResult) string { return strconv.Itoa(n(r)) }
	}
	duration := func(d func(scaleResult) time.Duration) func(scaleResult) string {
		return func(r scaleResult) string {
			if d(r) == 0 {
				return "-"
			}
			return d(r).Round(time.Millisecond).String()
		}
	}
	row("", func(r scaleResult) string { return r.mode.title })
	row("ToR BGP sessions", count(func(r scaleResult) int { return r.sessions }))
	row("ToR BGP paths (RIB)", count(func(r scaleResult) int { return r.paths }))
	row("ToR distinct paths (prefix, next hop)", count(func(r scaleResult) int { return r.distinctPaths }))
	row("ToR FIB routes (BGP)", count(func(r scaleResult) int { return r.fibRoutes }))
	row("ToR kernel next hops", count(func(r scaleResult) int { return r.kernelNexthops }))
	row("ToR memory: bgpd heap (KiB)", func(r scaleResult) string { return strconv.FormatFloat(r.bgpdKiB, 'f', 0, 64) })
	row("ToR memory: zebra heap (KiB)", func(r scaleResult) string { return strconv.FormatFloat(r.zebraKiB, 'f', 0, 64) })
	row("last IP written → ToR has everything", duration(func(r scaleResult) time.Duration { return r.converged }))
	row("last IP written → reflectors have every /32", duration(func(r scaleResult) time.Duration { return r.reflected }))
	row("node uplink down → its paths gone (RIB)", duration(func(r scaleResult) time.Duration { return r.nodeGoneRIB }))
	row("node uplink down → its next hop gone (kernel)", duration(func(r scaleResult) time.Duration { return r.nodeGoneFIB }))

	perShard := size.perShard(0)
	pathsGoal := size.shards * scaleFamilies * perShard
	fmt.Printf("\ngoals\n")
	goal := func(label string, value func(scaleResult) (string, bool)) {
		fmt.Printf("%-50s", label)
		for _, r := range results {
			v, met := value(r)
			fmt.Printf(" %14s", v+" "+verdict(met))
		}
		fmt.Println()
	}
	goal(fmt.Sprintf("ToR paths ≤ %d shards × %d × %d nodes = %d", size.shards, scaleFamilies, perShard, pathsGoal),
		func(r scaleResult) (string, bool) { return strconv.Itoa(r.distinctPaths), r.distinctPaths <= pathsGoal })
	var meshPaths int
	for _, r := range results {
		if r.mode.reflectors == 0 {
			meshPaths = r.paths
		}
	}
	goal(fmt.Sprintf("ToR RIB paths ≥ %d× fewer than full mesh", pathsFactorGoal), func(r scaleResult) (string, bool) {
		factor := float64(meshPaths) / float64(max(r.paths, 1))
		return strconv.FormatFloat(factor, 'f', 0, 64) + "×", factor >= pathsFactorGoal
	})
	goal(fmt.Sprintf("node death out of the ToR's kernel ≤ %v", nodeDeathGoal), func(r scaleResult) (string, bool) {
		return r.nodeGoneFIB.Round(time.Millisecond).String(), r.nodeGoneFIB <= nodeDeathGoal
	})
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "MISSED"
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
