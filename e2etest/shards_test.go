//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// The shard specs use the environment's own pools (the lab's gold and silver), which its
// configuration advertises.
var _ = Describe("Shards", Label("shards"), Ordered, func() {
	const ns = "e2e-shards"
	ctx := context.Background()
	vips := map[string]string{}    // pool → VIP
	shardOf := map[string]string{} // pool → shard
	var pools []string

	BeforeAll(func() {
		requireProtocol("bgp")
		ensureNamespace(ctx, ns)
		for name := range env.Pools {
			var p maglbv1beta1.IPAddressPool
			Expect(cs.Get(ctx, client.ObjectKey{Namespace: env.Namespace, Name: name}, &p)).To(Succeed())
			Expect(p.Spec.Shard).NotTo(BeEmpty(), "pool %s has no shard", name)
			shardOf[name] = p.Spec.Shard
			pools = append(pools, name)
		}
		sort.Strings(pools)
		Expect(len(pools)).To(BeNumerically(">=", 2), "two sharded pools")
		for _, pool := range pools {
			svc := createBackedService(ctx, ns, pool+"-web", map[string]string{"metallb.io/address-pool": pool}, nil, withFloodPort)
			vips[pool] = vipOf(ctx, svc)
			everyNodeForwards(vips[pool])
		}
	})

	It("announces a shard's VIPs only from the shard's nodes", func() {
		var nodeSets [][]string
		for _, pool := range pools {
			var members []string
			for _, lb := range lbNames() {
				if slices.Contains(env.LBNodes[lb].Shards, shardOf[pool]) {
					members = append(members, lb)
				}
			}
			Expect(members).NotTo(BeEmpty(), "nodes of shard %s", shardOf[pool])
			Eventually(nexthops("tor", vips[pool])).Should(Equal(lbAddresses(members...)), "shard %s", shardOf[pool])
			nodeSets = append(nodeSets, members)
		}
		if len(env.LBNodes) > 1 {
			Expect(nodeSets[0]).NotTo(Equal(nodeSets[1]), "the shards have nodes of their own")
		}
	})

	It("holds shard B's throughput while shard A's VIP is flooded", func() {
		flooded, measured := pools[0], pools[1]
		const window = 3 * time.Second
		// The same flood towards an address the ToR has no route for costs what the lab's
		// shared parts (the client, the ToR, the CPUs) pay for any flood; the flood of shard
		// A's VIP adds only what shard A's nodes and the backends spend on it.
		unrouted := lastAddress(testCIDR(7))
		Eventually(nexthops("tor", unrouted)).Should(BeEmpty())
		figures := shardFigures{Datapath: env.Datapath, FloodedShard: shardOf[flooded], MeasuredShard: shardOf[measured]}
		figures.BaselineRequestsPerSecond = requestRate(vips[measured], window)
		figures.ControlFloodPacketsPerSecond, figures.DuringControlFloodRequestsPerSecond = whileFlooding(unrouted, func() float64 {
			return requestRate(vips[measured], window)
		})
		figures.FloodPacketsPerSecond, figures.DuringFloodRequestsPerSecond = whileFlooding(vips[flooded], func() float64 {
			return requestRate(vips[measured], window)
		})
		figures.HeldPercent = 100 * figures.DuringFloodRequestsPerSecond / figures.BaselineRequestsPerSecond
		figures.HeldOfControlPercent = 100 * figures.DuringFloodRequestsPerSecond / figures.DuringControlFloodRequestsPerSecond
		AddReportEntry("shard isolation", figures)
		writeReport("shards-"+env.Datapath, figures)
		Expect(figures.BaselineRequestsPerSecond).To(BeNumerically(">", 0))
		Expect(figures.FloodPacketsPerSecond).To(BeNumerically(">", figures.BaselineRequestsPerSecond), "the flood outweighs the measured traffic")
		Expect(figures.HeldOfControlPercent).To(BeNumerically(">=", shardHoldFloor),
			"shard %s's request rate while shard %s is flooded, against the same flood dropped at the ToR", shardOf[measured], shardOf[flooded])
	})
})

// floodPort is a UDP port of the services that no backend listens on: the flood loads the
// path to the backends (the ToR, the flooded shard's LB nodes, the backends' kernels) but no
// echo server, which the lab's two backends share between the shards.
const floodPort = 9

func withFloodPort(svc *corev1.Service) {
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "flood", Protocol: corev1.ProtocolUDP, Port: floodPort, TargetPort: intstr.FromInt32(floodPort)})
}

// shardHoldFloor is the share of its request rate the measured shard must keep, against the
// control flood. In the lab every node, the ToR and the client share the machine's CPUs, so
// the flooded shard's work still takes some from everyone.
const shardHoldFloor = 60

type shardFigures struct {
	Datapath                     string  `json:"datapath"`
	FloodedShard                 string  `json:"flooded_shard"`
	MeasuredShard                string  `json:"measured_shard"`
	FloodPacketsPerSecond        float64 `json:"flood_packets_per_second"`
	BaselineRequestsPerSecond    float64 `json:"baseline_requests_per_second"`
	DuringFloodRequestsPerSecond float64 `json:"during_flood_requests_per_second"`
	HeldPercent                  float64 `json:"held_percent"`
	// The control: the same flood, dropped at the ToR.
	ControlFloodPacketsPerSecond        float64 `json:"control_flood_packets_per_second"`
	DuringControlFloodRequestsPerSecond float64 `json:"during_control_flood_requests_per_second"`
	HeldOfControlPercent                float64 `json:"held_of_control_percent"`
}

// whileFlooding floods target's floodPort and returns the flood's rate and what measure
// returns meanwhile.
func whileFlooding(target string, measure func() float64) (floodRate, measured float64) {
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { flood(target, floodPort, stop, &sent) })
	time.Sleep(500 * time.Millisecond)
	start, startSent := time.Now(), sent.Load()
	measured = measure()
	floodRate = float64(sent.Load()-startSent) / time.Since(start).Seconds()
	close(stop)
	wg.Wait()
	return floodRate, measured
}

func lastAddress(cidr string) string {
	p := netip.MustParsePrefix(cidr)
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
}

// requestRate is how many HTTP requests per second (a new connection each) four clients get
// answered through vip in window.
func requestRate(vip string, window time.Duration) float64 {
	var done atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(window)
	for range 4 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if _, _, err := fetch(vip, env.HTTPPort, "/", 0); err == nil {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return float64(done.Load()) / window.Seconds()
}

// flood sends small UDP datagrams to vip:port as fast as one socket can until stop closes.
func flood(vip string, port int32, stop <-chan struct{}, sent *atomic.Int64) {
	defer GinkgoRecover()
	c, err := dial("udp", fmt.Sprintf("%s:%d", vip, port), 0)
	Expect(err).NotTo(HaveOccurred())
	defer c.Close()
	payload := make([]byte, 64)
	for {
		select {
		case <-stop:
			return
		default:
		}
		for range 256 {
			if _, err := c.Write(payload); err == nil {
				sent.Add(1)
			}
		}
	}
}
