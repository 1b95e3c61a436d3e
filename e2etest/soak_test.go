//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/promtext"
)

var (
	soakDuration = flag.Duration("soak-duration", 10*time.Minute, "how long the churn soak (label soak) churns after creating its Services")
	soakServices = flag.Int("soak-services", 10000, "how many Services the churn soak keeps")
	soakBatch    = flag.Int("soak-batch", 500, "how many Services get other endpoints, and how many are replaced by new ones, in each round of the churn soak")
	soakDelete   = flag.Bool("soak-delete-all", true, "end the churn soak by deleting every soak Service and checking that each node's maps hold what they held before (the API server deletes a few Services a second)")
)

const (
	soakNamespace = "soak"
	soakPool      = "soak"
	// soakRange holds 16,384 addresses: every soak Service gets its own.
	soakRange   = "100.64.0.0/18"
	soakWorkers = 16
	// soakMemoryGrowth is how much the RSS of a component may grow from the end of the
	// warm-up (every Service created once and programmed everywhere) to the end of the churn.
	soakMemoryGrowth = 1.25
)

// soakProxyLabel keeps the lab's kube-proxies (one per node, nine on one machine) from
// rewriting their iptables for every soak Service: the soak measures MagLB, and no traffic is
// sent to those Services. Kubernetes' own label; MagLB, like upstream, ignores it.
const soakProxyLabel = "service.kubernetes.io/service-proxy-name"

// The churn soak keeps soakServices Services in a pool of their own, unsharded (so every LB
// node programs every one), and churns them for soakDuration: each round moves the endpoints
// of --soak-batch Services to other pods and replaces as many others by new ones, while HTTP
// requests run through the demo VIPs, which nothing touches. At the end every Service has its
// own IP of the pool, every LB node programs exactly the wanted services, and after every
// soak Service is deleted, each node's kernel maps hold what they held before: nothing leaked.
var _ = Describe("Churn soak", Label("soak"), func() {
	It("keeps IPs and programmed maps equal to what is wanted, leaks nothing, drops no request, holds memory flat", func(ctx SpecContext) {
		requireProtocol("bgp")
		ensureNamespace(ctx, soakNamespace)
		createAdvertisedPool(ctx, soakPool, soakRange)
		c := unthrottledClient()
		var left corev1.ServiceList
		Expect(c.List(ctx, &left, client.InNamespace(soakNamespace))).To(Succeed())
		Expect(left.Items).To(BeEmpty(), "Services an earlier, interrupted soak left in namespace %s: start from a fresh lab (python3 tasks.py dev-env-cleanup)", soakNamespace)
		before, err := observeDatapaths()
		Expect(err).NotTo(HaveOccurred())
		demo := demoVIPs(ctx)
		Expect(demo).NotTo(BeEmpty(), "the demo Services' VIPs")

		traffic := startRequests(demo)
		memory := startMemorySampler(15 * time.Second)
		s := &soak{client: c, services: map[string]*corev1.Service{}}
		if *soakDelete {
			DeferCleanup(func(ctx SpecContext) { s.deleteAll(ctx) })
		}

		started := time.Now()
		soakProgress("creating %d Services in pool %s (%s), %d at a time", *soakServices, soakPool, soakRange, soakWorkers)
		s.create(ctx, *soakServices)
		Eventually(s.withoutIP(ctx), 10*time.Minute, 2*time.Second).Should(BeZero(), "soak Services without an IP")
		soakProgress("every Service has its IP after %s", time.Since(started).Round(time.Second))
		// The maps at the end of the warm-up: after the churn the same number of Services, of
		// the same shape, must fill them exactly as much (a replaced Service leaves nothing).
		Eventually(observeDatapaths, 10*time.Minute, 5*time.Second).Should(before.withServices(slices.Collect(maps.Keys(s.ips(ctx)))).matcher(),
			"each LB node programs the demo and every soak Service")
		warm, err := observeDatapaths()
		Expect(err).NotTo(HaveOccurred())
		memory.markWarm()

		churnStarted := time.Now()
		for round := 1; time.Since(churnStarted) < *soakDuration; round++ {
			s.churn(ctx, round)
			soakProgress("round %d: %d Services moved to other pods, %d replaced (%d created so far); requests %d ok, %d failed",
				round, *soakBatch, *soakBatch, s.created, traffic.ok.Load(), traffic.failed.Load())
		}
		churned := time.Since(churnStarted)

		Eventually(s.withoutIP(ctx), 5*time.Minute, 2*time.Second).Should(BeZero(), "soak Services without an IP after the churn")
		ips := s.ips(ctx)
		Expect(ips).To(HaveLen(len(s.services)), "every soak Service has an IP of its own")
		for ip := range ips {
			Expect(netip.MustParsePrefix(soakRange).Contains(netip.MustParseAddr(ip))).To(BeTrue(), "%s is in %s", ip, soakRange)
		}
		wanted := before.withServices(slices.Collect(maps.Keys(ips))).withMapEntriesOf(warm)
		Eventually(observeDatapaths, 5*time.Minute, 5*time.Second).Should(wanted.matcher(),
			"each LB node programs the demo and every soak Service, nothing else, its maps filled as at the end of the warm-up")
		soakProgress("converged: every node programs %d services, its maps as at the end of the warm-up: %v", len(wanted.anyNode().services), wanted.anyNode().mapEntries)

		traffic.stop()
		memory.stop()
		if *soakDelete {
			s.deleteAll(ctx)
			Eventually(observeDatapaths, 5*time.Minute, 5*time.Second).Should(before.matcher(), "with the soak Services deleted, each node's maps hold what they held before")
			Eventually(func() ([]string, error) { return torRoutesIn(soakRange) }, 2*time.Minute).Should(BeEmpty(), "the ToR's routes into the soak range")
		}

		report := soakReport{
			Services: *soakServices, Batch: *soakBatch, Created: s.created, Rounds: s.rounds, ChurnSeconds: churned.Seconds(),
			Requests: traffic.ok.Load() + traffic.failed.Load(), FailedRequests: traffic.failed.Load(),
			Memory: memory.figures(),
		}
		writeReport("soak-"+env.Datapath, report)
		Expect(report.FailedRequests).To(BeZero(), "failed requests through the untouched demo VIPs")
		for _, m := range report.Memory {
			Expect(float64(m.EndBytes)).To(BeNumerically("<=", soakMemoryGrowth*float64(m.WarmBytes)),
				"%s's RSS after the churn (%d MiB) against the end of the warm-up (%d MiB)", m.Component, m.EndBytes>>20, m.WarmBytes>>20)
		}
	})
})

type soakReport struct {
	Services       int             `json:"services"`
	Batch          int             `json:"batch"`
	Created        int             `json:"created"`
	Rounds         int             `json:"rounds"`
	ChurnSeconds   float64         `json:"churn_seconds"`
	Requests       int64           `json:"requests"`
	FailedRequests int64           `json:"failed_requests"`
	Memory         []memoryFigures `json:"memory"`
}

func soakProgress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "soak %s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// unthrottledClient is the suite's client without its client-side rate limit, for the soak's
// thousands of writes: the API server's own limits apply.
func unthrottledClient() client.Client {
	GinkgoHelper()
	cfg, err := ctrl.GetConfig()
	Expect(err).NotTo(HaveOccurred())
	cfg.QPS, cfg.Burst = -1, 0
	c, err := client.New(cfg, client.Options{Scheme: k8s.NewScheme()})
	Expect(err).NotTo(HaveOccurred())
	return c
}

// soak is the set of soak Services, by name, as last written.
type soak struct {
	client   client.Client
	services map[string]*corev1.Service
	created  int
	rounds   int
}

// create creates n new Services, each with endpoints on one of the backend nodes in turn.
func (s *soak) create(ctx context.Context, n int) {
	GinkgoHelper()
	svcs := make([]*corev1.Service, n)
	for i := range svcs {
		s.created++
		svcs[i] = loadBalancerService(soakNamespace, fmt.Sprintf("soak-%06d", s.created),
			map[string]string{"metallb.io/address-pool": soakPool}, env.HTTPPort, func(svc *corev1.Service) {
				svc.Spec.Selector = nil
				svc.Labels = map[string]string{soakProxyLabel: "maglb-soak"}
			})
	}
	s.parallel(svcs, func(svc *corev1.Service, i int) error {
		if err := s.client.Create(ctx, svc); err != nil {
			return err
		}
		for _, slice := range endpointSlices(svc, s.endpointNodes(i)) {
			if err := s.client.Create(ctx, slice); err != nil {
				return err
			}
		}
		return nil
	})
	for _, svc := range svcs {
		s.services[svc.Name] = svc
	}
}

// endpointNodes are the backend nodes a Service's endpoints are on in a round.
func (s *soak) endpointNodes(round int) []string {
	nodes := backendNames()
	return []string{nodes[round%len(nodes)]}
}

// churn moves the endpoints of --soak-batch Services to other pods and replaces as many others.
func (s *soak) churn(ctx context.Context, round int) {
	GinkgoHelper()
	s.rounds = round
	names := slices.Sorted(maps.Keys(s.services))
	moved := make([]*corev1.Service, 0, *soakBatch)
	for i := 0; i < *soakBatch && i < len(names); i++ {
		moved = append(moved, s.services[names[(round*(*soakBatch)+i)%len(names)]])
	}
	s.parallel(moved, func(svc *corev1.Service, _ int) error {
		for _, slice := range endpointSlices(svc, s.endpointNodes(round+1)) {
			var existing discoveryv1.EndpointSlice
			if err := s.client.Get(ctx, client.ObjectKeyFromObject(slice), &existing); err != nil {
				return err
			}
			existing.Endpoints = slice.Endpoints
			if err := s.client.Update(ctx, &existing); err != nil {
				return err
			}
		}
		return nil
	})
	// The oldest Services go, as many new ones come.
	replaced := make([]*corev1.Service, 0, *soakBatch)
	for _, name := range names[:min(*soakBatch, len(names))] {
		replaced = append(replaced, s.services[name])
	}
	s.delete(ctx, replaced)
	s.create(ctx, len(replaced))
}

// delete deletes svcs and their EndpointSlices.
func (s *soak) delete(ctx context.Context, svcs []*corev1.Service) {
	GinkgoHelper()
	s.parallel(svcs, func(svc *corev1.Service, _ int) error {
		for _, slice := range endpointSlices(svc, nil) {
			if err := s.client.Delete(ctx, slice); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
		}
		return client.IgnoreNotFound(s.client.Delete(ctx, svc))
	})
	for _, svc := range svcs {
		delete(s.services, svc.Name)
	}
}

func (s *soak) deleteAll(ctx context.Context) {
	s.delete(ctx, slices.Collect(maps.Values(s.services)))
}

// parallel runs write for every Service with soakWorkers at once, and fails on the first error.
func (s *soak) parallel(svcs []*corev1.Service, write func(svc *corev1.Service, i int) error) {
	GinkgoHelper()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range soakWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(svcs); i = int(next.Add(1) - 1) {
				if err := write(svcs[i], i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("%s/%s: %w", svcs[i].Namespace, svcs[i].Name, err)
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	Expect(firstErr).NotTo(HaveOccurred())
}

// withoutIP counts the soak Services that have no IP yet.
func (s *soak) withoutIP(ctx context.Context) func() (int, error) {
	return func() (int, error) {
		var list corev1.ServiceList
		if err := s.client.List(ctx, &list, client.InNamespace(soakNamespace)); err != nil {
			return 0, err
		}
		n := 0
		for _, svc := range list.Items {
			if _, ok := s.services[svc.Name]; ok && len(svc.Status.LoadBalancer.Ingress) == 0 {
				n++
			}
		}
		return n, nil
	}
}

// ips are the soak Services' IPs, each with the Services holding it.
func (s *soak) ips(ctx context.Context) map[string][]string {
	GinkgoHelper()
	var list corev1.ServiceList
	Expect(s.client.List(ctx, &list, client.InNamespace(soakNamespace))).To(Succeed())
	ips := map[string][]string{}
	for _, svc := range list.Items {
		for _, ingress := range svc.Status.LoadBalancer.Ingress {
			ips[ingress.IP] = append(ips[ingress.IP], svc.Name)
		}
	}
	for ip, holders := range ips {
		Expect(holders).To(HaveLen(1), "%s is held by %v", ip, holders)
	}
	return ips
}

// requests is a steady stream of HTTP requests, each on a new connection, through vips in turn.
type requests struct {
	ok, failed atomic.Int64
	done       chan struct{}
	stopped    sync.WaitGroup
}

func startRequests(vips []string) *requests {
	r := &requests{done: make(chan struct{})}
	r.stopped.Add(1)
	go func() {
		defer GinkgoRecover()
		defer r.stopped.Done()
		for i := 0; ; i++ {
			select {
			case <-r.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, _, err := fetch(vips[i%len(vips)], env.HTTPPort, "/", 0); err != nil {
				r.failed.Add(1)
				soakProgress("request through %s failed: %v", vips[i%len(vips)], err)
				continue
			}
			r.ok.Add(1)
		}
	}()
	return r
}

func (r *requests) stop() {
	close(r.done)
	r.stopped.Wait()
}

// memorySampler samples the RSS of the controller and each speaker from their metrics.
type memorySampler struct {
	urls    map[string]string
	started time.Time
	mu      sync.Mutex
	samples map[string][]memorySample
	warm    map[string]int64
	end     map[string]int64
	done    chan struct{}
	stopped sync.WaitGroup
}

type memorySample struct {
	At    time.Duration `json:"at_seconds"`
	Bytes int64         `json:"bytes"`
}

type memoryFigures struct {
	Component string         `json:"component"`
	WarmBytes int64          `json:"warm_bytes"`
	EndBytes  int64          `json:"end_bytes"`
	Samples   []memorySample `json:"samples"`
}

// memoryScrapeTimeout is long: at 10,000 Services a busy speaker may take seconds to serve
// its metrics, and a sample lost there would leave a stale one standing for the warm-up.
const memoryScrapeTimeout = 30 * time.Second

func startMemorySampler(every time.Duration) *memorySampler {
	m := &memorySampler{urls: map[string]string{"controller": env.ControllerMetrics}, started: time.Now(),
		samples: map[string][]memorySample{}, done: make(chan struct{})}
	for name, node := range env.LBNodes {
		m.urls["speaker-"+name] = node.Metrics
	}
	m.stopped.Add(1)
	go func() {
		defer GinkgoRecover()
		defer m.stopped.Done()
		for {
			m.sample()
			select {
			case <-m.done:
				return
			case <-time.After(every):
			}
		}
	}()
	return m
}

// sample records each component's RSS now and returns those it could read.
func (m *memorySampler) sample() map[string]int64 {
	now := map[string]int64{}
	for component, url := range m.urls {
		text, err := scrapeWithin(url, memoryScrapeTimeout)
		if err != nil {
			continue
		}
		if rss, err := promtext.Value(text, "process_resident_memory_bytes"); err == nil {
			now[component] = int64(rss)
			m.mu.Lock()
			m.samples[component] = append(m.samples[component], memorySample{At: time.Since(m.started), Bytes: int64(rss)})
			m.mu.Unlock()
		}
	}
	return now
}

// settled is each component's median RSS over a minute of samples, every component
// answering each time: the warm-up's and the end's figures are read the same way, then, and
// a Go heap's swing between two collections weighs on neither.
func (m *memorySampler) settled() map[string]int64 {
	const passes = 12
	seen := map[string][]int64{}
	for range passes {
		var now map[string]int64
		Eventually(func() map[string]int64 { now = m.sample(); return now }, 5*time.Minute, time.Second).Should(HaveLen(len(m.urls)),
			"the RSS of the controller and every speaker")
		for component, bytes := range now {
			seen[component] = append(seen[component], bytes)
		}
		time.Sleep(5 * time.Second)
	}
	median := map[string]int64{}
	for component, values := range seen {
		slices.Sort(values)
		median[component] = values[len(values)/2]
	}
	return median
}

// markWarm takes each component's settled memory as its memory at the end of the warm-up.
func (m *memorySampler) markWarm() {
	warm := m.settled()
	m.mu.Lock()
	m.warm = warm
	m.mu.Unlock()
}

// stop ends the periodic sampling and takes each component's settled memory as its memory
// at the end.
func (m *memorySampler) stop() {
	close(m.done)
	m.stopped.Wait()
	end := m.settled()
	m.mu.Lock()
	m.end = end
	m.mu.Unlock()
}

func (m *memorySampler) figures() []memoryFigures {
	m.mu.Lock()
	defer m.mu.Unlock()
	var figures []memoryFigures
	for _, component := range slices.Sorted(maps.Keys(m.samples)) {
		figures = append(figures, memoryFigures{Component: component, WarmBytes: m.warm[component],
			EndBytes: m.end[component], Samples: m.samples[component]})
	}
	return figures
}

// datapathState is what each LB node's speaker programs: its services (the labels of their
// maglb_datapath_service_* series) and what its kernel maps hold, from its metrics.
type datapathState map[string]nodeDatapath

type nodeDatapath struct {
	services   []string
	mapEntries map[string]float64
}

func observeDatapaths() (datapathState, error) {
	state := datapathState{}
	for _, name := range lbNames() {
		text, err := scrape(env.LBNodes[name].Metrics)
		if err != nil {
			return nil, err
		}
		node := nodeDatapath{mapEntries: map[string]float64{}}
		services, err := promtext.Samples(text, "maglb_datapath_service_packets_total")
		if err != nil {
			return nil, err
		}
		node.services = slices.Sorted(maps.Keys(services))
		for _, mapName := range []string{"vips", "vip_addresses", "backends", "rings"} {
			if node.mapEntries[mapName], err = promtext.Value(text, "maglb_datapath_map_entries", "map="+mapName); err != nil {
				return nil, err
			}
		}
		state[name] = node
	}
	return state, nil
}

// withServices is the state with TCP services on the HTTP port of vips added on every node;
// their map entries are not known in advance, only the services.
func (d datapathState) withServices(vips []string) datapathState {
	want := datapathState{}
	for name, node := range d {
		services := slices.Clone(node.services)
		for _, vip := range vips {
			services = append(services, fmt.Sprintf(`port="%d",protocol="TCP",vip="%s"`, env.HTTPPort, vip))
		}
		slices.Sort(services)
		want[name] = nodeDatapath{services: services}
	}
	return want
}

// withMapEntriesOf is d with the map entries other holds, node by node.
func (d datapathState) withMapEntriesOf(other datapathState) datapathState {
	want := datapathState{}
	for name, node := range d {
		want[name] = nodeDatapath{services: node.services, mapEntries: other[name].mapEntries}
	}
	return want
}

func (d datapathState) anyNode() nodeDatapath {
	for _, node := range d {
		return node
	}
	return nodeDatapath{}
}

// matcher matches a state with the same services on each node and, where d knows them, the
// same map entries.
func (d datapathState) matcher() OmegaMatcher {
	return WithTransform(func(got datapathState) string {
		for name, want := range d {
			have := got[name]
			if !slices.Equal(have.services, want.services) {
				return fmt.Sprintf("%s programs %d services, want %d", name, len(have.services), len(want.services))
			}
			if want.mapEntries != nil && !maps.Equal(have.mapEntries, want.mapEntries) {
				return fmt.Sprintf("%s's maps hold %v, want %v", name, have.mapEntries, want.mapEntries)
			}
		}
		return ""
	}, BeEmpty())
}

// torRoutesIn lists the ToR's kernel routes inside cidr.
func torRoutesIn(cidr string) ([]string, error) {
	routes, err := kernelRoutes("tor")
	if err != nil {
		return nil, err
	}
	within := netip.MustParsePrefix(cidr)
	var in []string
	for dst := range routes {
		if p, err := netip.ParsePrefix(dst); err == nil && within.Overlaps(p) {
			in = append(in, dst)
		} else if a, err := netip.ParseAddr(dst); err == nil && within.Contains(a) {
			in = append(in, dst)
		}
	}
	return in, nil
}
