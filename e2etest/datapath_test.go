//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
)

// The datapath specs send their traffic through the ToR, which spreads flows over the LB
// nodes (ECMP); they need BGP.
var _ = Describe("Datapath", Label("datapath"), Ordered, func() {
	const ns = "e2e-datapath"
	ctx := context.Background()
	var svc *corev1.Service
	var vip string

	BeforeAll(func() {
		requireProtocol("bgp")
		svc, vip = createSpreadService(ctx, ns, "e2e-datapath", testCIDR(2))
	})

	It("returns the answers straight from the backend to the client (DSR)", Label("smoke"), func() {
		requireDatapath("ebpf")
		const requests, size = 20, 256 << 10
		forwarded := func() (float64, error) {
			return lbMetric(lbNames(), "maglb_datapath_service_bytes_total", "vip="+vip, "protocol=TCP", fmt.Sprintf("port=%d", env.HTTPPort))
		}
		before, err := forwarded()
		Expect(err).NotTo(HaveOccurred())
		received := 0
		for range requests {
			a, n, err := fetch(vip, env.HTTPPort, fmt.Sprintf("/?size=%d", size), 0)
			Expect(err).NotTo(HaveOccurred())
			Expect(a.Client).To(BeElementOf(clientsSeen(svc, vip)), "the pod sees the client's own address")
			received += n
		}
		after, err := forwarded()
		Expect(err).NotTo(HaveOccurred())
		through := after - before
		AddReportEntry("DSR", fmt.Sprintf("the client received %d bytes; the LB nodes forwarded %.0f bytes to the VIP", received, through))
		Expect(through).To(BeNumerically(">", 0), "the requests crossed the LB nodes")
		Expect(through).To(BeNumerically("<", float64(received)/20), "the answers bypassed the LB nodes")
	})

	It("spreads flows over the backends and the LB nodes", func() {
		const flows = 200
		newFlows := func() map[string]float64 {
			counts := map[string]float64{}
			for _, lb := range lbNames() {
				v, err := lbMetric([]string{lb}, "maglb_datapath_service_new_flows_total", "vip="+vip, "protocol=TCP")
				Expect(err).NotTo(HaveOccurred())
				counts[lb] = v
			}
			return counts
		}
		var before map[string]float64
		if env.Datapath == "ebpf" {
			before = newFlows()
		}
		perBackend := map[string]int{}
		for range flows {
			a, _, err := fetch(vip, env.HTTPPort, "/", 0)
			Expect(err).NotTo(HaveOccurred())
			perBackend[a.Backend]++
		}
		AddReportEntry("backends", perBackend)
		for _, be := range backendNames() {
			Expect(perBackend[be]).To(BeNumerically(">=", flows*3/10/len(backendNames())*2), "flows to %s of %v", be, perBackend)
		}
		if env.Datapath != "ebpf" {
			return
		}
		after := newFlows()
		for _, lb := range lbNames() {
			Expect(after[lb]-before[lb]).To(BeNumerically(">=", flows/len(lbNames())/3), "new flows at %s: ECMP spreads them", lb)
		}
	})

	It("serves through an LB node that hosts an endpoint itself, from its own flows and those other LB nodes tunnel to it", Label("smoke"), func() {
		requireDatapath("ebpf")
		lb := lbNames()[0]
		pods := podsOn(lb)
		if len(pods) == 0 {
			Skip("the environment lists no pod on " + lb)
		}
		svc := createBackedService(ctx, ns, "on-lb-node", map[string]string{"metallb.io/address-pool": "e2e-datapath"},
			[]string{lb, backendNames()[0]}, withLocalTraffic)
		onLB := vipOf(ctx, svc)
		Eventually(nexthops("tor", onLB)).Should(Equal(lbAddresses(lbNames()...)))
		everyNodeForwards(onLB)
		// ECMP spreads the flows over every LB node, and each node's ring sends about a third of
		// them to lb's pod: the ones through lb go up its own stack, the others arrive tunnelled
		// and lb decapsulates them behind its load balancer. Every flow must be answered.
		const flows = 90
		perPod := map[string]int{}
		for i := range flows {
			a, _, err := fetch(onLB, env.HTTPPort, "/", 0)
			Expect(err).NotTo(HaveOccurred(), "flow %d", i)
			Expect(a.Client).To(Equal(env.ClientAddress), "externalTrafficPolicy Local keeps the client's address")
			perPod[a.Pod]++
		}
		AddReportEntry("pods", perPod)
		for _, pod := range pods {
			Expect(perPod[pod]).To(BeNumerically(">=", flows/10), "flows answered by %s on LB node %s: %v", pod, lb, perPod)
		}
	})

	It("takes a flow to the same backend through whichever LB node ECMP picks", Label("smoke"), func() {
		requireDatapath("ebpf")
		// The flows' source ports lie above Linux's ephemeral range (32768-60999), where no
		// other connection of the client, nor one of its sockets in TIME_WAIT, can hold them.
		const flows, firstPort = 90, 61000
		backendsOf := func() []string {
			out := make([]string, flows)
			for i := range flows {
				a, _, err := fetch(vip, env.HTTPPort, "/", firstPort+i)
				Expect(err).NotTo(HaveOccurred(), "flow from port %d", firstPort+i)
				out[i] = a.Backend
			}
			return out
		}
		out := lbNames()[len(lbNames())-1]
		outFlows := func() float64 {
			v, err := lbMetric([]string{out}, "maglb_datapath_service_new_flows_total", "vip="+vip, "protocol=TCP")
			Expect(err).NotTo(HaveOccurred())
			return v
		}
		before := outFlows()
		first := backendsOf()
		Expect(outFlows()-before).To(BeNumerically(">", 0), "some flows went through %s", out)

		takeOut(out, vip)
		second := backendsOf()
		Expect(second).To(Equal(first), "every flow reaches the backend it reached before %s left", out)
	})

	It("keeps long-lived connections when an LB node leaves", Label("survival", "smoke"), func() {
		result := survival(vip, 200, func(node string) { takeOut(node, vip) })
		AddReportEntry("survival", result)
		writeReport("survival-"+env.Datapath, result)
		Expect(result.Established).To(Equal(200))
		if env.Datapath == "ebpf" {
			Expect(result.Percent).To(BeNumerically(">=", 99), "goal 99.9%%")
		}
	})
})

// createSpreadService creates pool poolName of cidr, advertised, and a Service web from it in
// namespace ns that every LB node announces, and waits until each of them forwards its VIP.
func createSpreadService(ctx context.Context, ns, poolName, cidr string) (*corev1.Service, string) {
	GinkgoHelper()
	ensureNamespace(ctx, ns)
	createAdvertisedPool(ctx, poolName, cidr)
	var options []func(*corev1.Service)
	if env.Datapath == "ebpf" {
		// Every LB node announces it and the pods see the client's own address; kube-proxy
		// on an LB node would forward it only to a pod on that node.
		options = append(options, withLocalTraffic)
	}
	svc := createBackedService(ctx, ns, "web", map[string]string{"metallb.io/address-pool": poolName}, nil, options...)
	vip := vipOf(ctx, svc)
	Eventually(nexthops("tor", vip)).Should(Equal(lbAddresses(lbNames()...)))
	everyNodeForwards(vip)
	return svc, vip
}

// takeOut takes an LB node out of service until the spec ends, and waits until the ToR
// no longer routes vip to it.
func takeOut(node, vip string) {
	GinkgoHelper()
	nodeDown(node)
	DeferCleanup(func() {
		nodeUp(node)
		Eventually(nexthops("tor", vip)).Should(Equal(lbAddresses(lbNames()...)))
	})
	rest := slices.DeleteFunc(lbNames(), func(n string) bool { return n == node })
	Eventually(nexthops("tor", vip)).Should(Equal(lbAddresses(rest...)))
	// The ToR's kernel follows its BGP table at once; give it a moment to settle.
	time.Sleep(500 * time.Millisecond)
}

// survivalResult is the connection-survival figure of one run.
type survivalResult struct {
	Datapath    string  `json:"datapath"`
	Established int     `json:"established"`
	Survived    int     `json:"survived"`
	Percent     float64 `json:"percent"`
	LBNode      string  `json:"lb_node_taken_out"`
	Requests    int64   `json:"requests"`
	// MovedFlows (ebpf) counts the mid-flow packets the remaining LB nodes' connection tables
	// did not know: about one per connection ECMP moved to them.
	MovedFlows float64 `json:"moved_flows,omitempty"`
}

// survival opens conns keep-alive connections through vip (holdConnections), has fail take
// the last LB node out of ECMP (it returns once the ToR no longer sends to it), keeps asking
// for 3 s more, and counts the connections that never failed.
func survival(vip string, conns int, fail func(node string)) survivalResult {
	GinkgoHelper()
	out := lbNames()[len(lbNames())-1]
	result := survivalResult{Datapath: env.Datapath, LBNode: out}
	held := holdConnections([]string{vip}, conns, 5*time.Second)
	result.Established = len(held.conns)
	time.Sleep(2 * time.Second)
	rest := slices.DeleteFunc(lbNames(), func(n string) bool { return n == out })
	misses := func() float64 {
		if env.Datapath != "ebpf" {
			return 0
		}
		v, err := lbMetric(rest, "maglb_datapath_service_lru_misses_total", "vip="+vip, "protocol=TCP")
		Expect(err).NotTo(HaveOccurred())
		return v
	}
	missesBefore := misses()
	fail(out)
	time.Sleep(3 * time.Second)
	result.Survived = result.Established - held.finish()
	result.Requests = held.requests.Load()
	result.MovedFlows = misses() - missesBefore
	result.Percent = 100 * float64(result.Survived) / float64(result.Established)
	return result
}

// heldConnections are keep-alive HTTP connections through VIPs, each asking every 100 ms until
// finish; one that fails once (an error, or no answer within its timeout) is lost.
type heldConnections struct {
	conns    []*httpConn
	lost     []bool
	requests atomic.Int64
	stop     chan struct{}
	stopOnce sync.Once
	asking   sync.WaitGroup
}

// holdConnections opens n connections, over vips in turn, and starts asking on each; the
// spec's end finishes them if the spec does not.
func holdConnections(vips []string, n int, timeout time.Duration) *heldConnections {
	GinkgoHelper()
	h := &heldConnections{lost: make([]bool, n), stop: make(chan struct{})}
	DeferCleanup(h.finish)
	for i := range n {
		c, err := dialHTTP(vips[i%len(vips)], env.HTTPPort, 0)
		Expect(err).NotTo(HaveOccurred(), "connection %d through %s", i, vips[i%len(vips)])
		h.conns = append(h.conns, c)
	}
	for i, c := range h.conns {
		h.asking.Add(1)
		go func() {
			defer h.asking.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				if _, _, err := c.get("/", timeout); err != nil {
					h.lost[i] = true
					return
				}
				h.requests.Add(1)
				select {
				case <-h.stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	return h
}

// finish stops asking (a request under way gets its answer or its timeout), closes the
// connections and returns how many were lost.
func (h *heldConnections) finish() (lost int) {
	h.stopOnce.Do(func() { close(h.stop) })
	h.asking.Wait()
	for i, c := range h.conns {
		c.closeNow()
		if h.lost[i] {
			lost++
		}
	}
	return lost
}

// writeReport writes v as name.json under --report-dir, when set.
func writeReport(name string, v any) {
	GinkgoHelper()
	if *reportDir == "" {
		return
	}
	data, err := json.MarshalIndent(v, "", "  ")
	Expect(err).NotTo(HaveOccurred())
	Expect(os.MkdirAll(*reportDir, 0o755)).To(Succeed())
	Expect(os.WriteFile(filepath.Join(*reportDir, name+".json"), data, 0o644)).To(Succeed())
}
