// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	maglbv1alpha1 "github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/testenv"
)

// projectionGoal is the rate, in Services per second, at which workload Services should get
// their VIPs written back when many are created at once.
const projectionGoal = 200

// BenchmarkProjection1000Services measures projection at scale: two API servers, the LB
// cluster (our controller in process: allocation and projection, as the controller binary
// runs them) and a workload cluster registered by a WorkloadCluster. N LoadBalancer Services
// (MAGLB_BENCH_SERVICES, default 1,000) are created at once in the workload cluster; for each,
// the time from its create request until its VIP is in its status there (seen by a watch),
// p50/p99, and the Services per second from the first create to the last VIP.
//
//	go test -run '^$' -bench Projection1000Services -benchtime 1x ./controller/
func BenchmarkProjection1000Services(b *testing.B) {
	n := benchServiceCount(b, 1000)
	var r projectionRun
	for range b.N {
		r = measureProjection(b, n)
	}
	b.ReportMetric(r.percentile(50).Seconds()*1000, "p50-ms")
	b.ReportMetric(r.percentile(99).Seconds()*1000, "p99-ms")
	b.ReportMetric(r.servicesPerSecond(), "services/s")
	verdict := "met"
	if r.servicesPerSecond() < projectionGoal {
		verdict = "MISSED"
	}
	fmt.Printf("\nprojection, %d LoadBalancer Services created at once in a workload cluster, one /16 pool in the LB cluster:\n"+
		"  create request → VIP in the workload Service's status: p50 %v, p99 %v, max %v\n"+
		"  %.1f Services/s from the first create to the last VIP (goal ≥ %d/s: %s)\n"+
		"  the %d create requests (32 clients) took %v; %d Services had their VIP by then\n"+
		"  controller CPU %.1fs; %.2f of the machine's cores busy on average\n"+
		"  API writes per Service: LB cluster %s; workload cluster %s\n",
		n, r.percentile(50).Round(time.Millisecond), r.percentile(99).Round(time.Millisecond), r.percentile(100).Round(time.Millisecond),
		r.servicesPerSecond(), projectionGoal, verdict, n, r.createsDone.Sub(r.first).Round(time.Millisecond), r.withVIPThen,
		r.controllerCPU.Seconds(), r.busyCores, perService(r.lbWrites, n), perService(r.workloadWrites, n))
}

// projectionRun is one measured run: per Service, when its create request was sent and when
// its VIP was seen in the workload cluster.
type projectionRun struct {
	latencies   []time.Duration // sorted
	first, last time.Time       // the first create request sent, the last VIP seen
	// createsDone is when the last create request returned; withVIPThen, how many Services had
	// their VIP by then. On a busy machine the creates themselves take a while.
	createsDone time.Time
	withVIPThen int
	// controllerCPU is the CPU time this process (allocation and projection; the benchmark's
	// own clients are light) used meanwhile; busyCores, how many of the machine's cores were
	// busy on average (two API servers, etcds, the controller and whatever else runs here).
	controllerCPU time.Duration
	busyCores     float64
	// lbWrites and workloadWrites count each API server's write requests meanwhile, by
	// resource[/subresource] (the benchmark's own creates included in the workload's).
	lbWrites, workloadWrites map[string]int
}

func (r projectionRun) percentile(p int) time.Duration {
	i := min(len(r.latencies)*p/100, len(r.latencies)-1)
	return r.latencies[i]
}

func (r projectionRun) servicesPerSecond() float64 {
	return float64(len(r.latencies)) / r.last.Sub(r.first).Seconds()
}

func measureProjection(b *testing.B, n int) projectionRun {
	b.StopTimer()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lb, workload := startAPIServer(b), startAPIServer(b)
	if err := lb.Client.Create(ctx, newPool("bench", []string{"10.128.0.0/16"}, nil)); err != nil {
		b.Fatal(err)
	}
	if err := lb.RegisterWorkloadCluster(context.Background(), workload, metallbNamespace, "wc1"); err != nil {
		b.Fatal(err)
	}
	createNamespace(b, workload, benchNamespace, nil)
	startMagLBController(b, lb, filepath.Join(b.TempDir(), "controller.log"))
	waitConnected(b, lb, "wc1")

	seen := watchIngress(b, ctx, workload, n)
	c := fastClient(b, workload)
	created := make([]time.Time, n)
	errs := make(chan error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	lbClientset, workloadClientset := clientset(b, lb), clientset(b, workload)
	lbBefore, workloadBefore := apiWrites(b, lbClientset), apiWrites(b, workloadClientset)
	cpuBefore, busyBefore := processCPU(b, os.Getpid()), machineBusy(b)
	b.StartTimer()
	for range 32 {
		wg.Go(func() {
			for i := range next {
				svc := newService(benchNamespace, benchServiceName(i), func(s *corev1.Service) {
					s.Spec.AllocateLoadBalancerNodePorts = nil // node ports, as in any workload cluster
				})
				created[i] = time.Now()
				if err := c.Create(ctx, svc); err != nil {
					errs <- fmt.Errorf("creating Service %s: %w", svc.Name, err)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	createsDone, withVIPThen := time.Now(), seen.count()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	const timeout = 5 * time.Minute
	select {
	case <-seen.all:
	case <-time.After(timeout):
		b.Fatalf("%d of %d workload Services have their VIP after %s", seen.count(), n, timeout)
	}
	b.StopTimer()

	r := projectionRun{first: slices.MinFunc(created, func(x, y time.Time) int { return x.Compare(y) }), createsDone: createsDone, withVIPThen: withVIPThen,
		controllerCPU: processCPU(b, os.Getpid()) - cpuBefore}
	for i := range n {
		at := seen.at(benchServiceName(i))
		r.latencies = append(r.latencies, at.Sub(created[i]))
		if at.After(r.last) {
			r.last = at
		}
	}
	slices.Sort(r.latencies)
	r.busyCores = (machineBusy(b) - busyBefore).Seconds() / r.last.Sub(r.first).Seconds()
	r.lbWrites = subtract(apiWrites(b, lbClientset), lbBefore)
	r.workloadWrites = subtract(apiWrites(b, workloadClientset), workloadBefore)
	return r
}

func benchServiceName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// waitConnected waits until the projection controller reports the WorkloadCluster Connected.
func waitConnected(b *testing.B, lb *testenv.Env, name string) {
	b.Helper()
	testenv.Eventually(b, "WorkloadCluster "+name+" Connected=True (is the projection controller wired into the controller's run?)", func() error {
		var wc maglbv1alpha1.WorkloadCluster
		if err := lb.Client.Get(context.Background(), client.ObjectKey{Name: name}, &wc); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(wc.Status.Conditions, maglbv1alpha1.ConditionConnected) {
			return fmt.Errorf("conditions %v", wc.Status.Conditions)
		}
		return nil
	})
}

// fastClient is a client of env allowed many requests per second: the load the benchmark
// makes, not a client's rate limit, is measured.
func fastClient(b *testing.B, env *testenv.Env) client.Client {
	b.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 5000, 10000
	c, err := client.New(cfg, client.Options{Scheme: env.Client.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func clientset(b *testing.B, env *testenv.Env) kubernetes.Interface {
	b.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	return cs
}

// perService formats write counts per Service, by resource.
func perService(writes map[string]int, n int) string {
	var parts []string
	for _, res := range slices.Sorted(maps.Keys(writes)) {
		parts = append(parts, fmt.Sprintf("%s %.2f", res, float64(writes[res])/float64(n)))
	}
	return strings.Join(parts, ", ")
}

// ingressSeen records when each Service of the bench namespace first had an ingress IP, and
// closes all once want of them had one.
type ingressSeen struct {
	mu    sync.Mutex
	times map[string]time.Time
	want  int
	all   chan struct{}
}

// watchIngress follows the workload cluster's bench namespace from before the Services exist
// (an informer: it re-lists by itself when its watch breaks), until want have an IP.
func watchIngress(b *testing.B, ctx context.Context, env *testenv.Env, want int) *ingressSeen {
	b.Helper()
	cs := clientset(b, env)
	s := &ingressSeen{times: map[string]time.Time{}, want: want, all: make(chan struct{})}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(benchNamespace))
	record := func(obj any) {
		svc, ok := obj.(*corev1.Service)
		if ok && len(svc.Status.LoadBalancer.Ingress) > 0 {
			s.saw(svc.Name, time.Now())
		}
	}
	if _, err := factory.Core().V1().Services().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    record,
		UpdateFunc: func(_, obj any) { record(obj) },
	}); err != nil {
		b.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	b.Cleanup(factory.Shutdown)
	return s
}

func (s *ingressSeen) saw(name string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.times[name]; ok {
		return
	}
	s.times[name] = at
	if len(s.times) == s.want {
		close(s.all)
	}
}

func (s *ingressSeen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.times)
}

func (s *ingressSeen) at(name string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.times[name]
}
