// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/testenv"
)

const (
	benchNamespace = "bench"
	// benchServicesEnv overrides how many Services the end-to-end and projection benchmarks create.
	benchServicesEnv = "MAGLB_BENCH_SERVICES"
)

// BenchmarkEndToEnd5000Services measures, for upstream MetalLB's controller and for ours, each
// on a fresh API server holding 5,000 pre-created LoadBalancer Services and one /16 pool,
// the time from starting the controller until every Service has an IP. Setup is not timed.
//
//	go test -run '^$' -bench EndToEnd -benchtime 1x ./controller/
//
// MAGLB_BENCH_SERVICES=500 makes a quick run. Upstream's client is limited to 20 requests/s,
// so a full run takes about five minutes.
func BenchmarkEndToEnd5000Services(b *testing.B) {
	n := benchServiceCount(b, 5000)
	results := map[string]endToEnd{}
	for _, impl := range implementations(b) {
		b.Run(impl.name, func(b *testing.B) {
			var r endToEnd
			for range b.N {
				r = measureEndToEnd(b, impl, n)
			}
			b.ReportMetric(r.servicesPerSecond(), "services/s")
			b.ReportMetric(r.firstIP.Seconds(), "s-to-first-IP")
			b.ReportMetric(r.writesPerService(), "writes/service")
			b.ReportMetric(r.controllerCPU.Seconds(), "controller-CPU-s")
			b.ReportMetric(r.eventsPerService(), "events/service")
			results[impl.name] = r
		})
	}
	// The parent of sub-benchmarks has no result line to carry a log: print the table.
	fmt.Print(endToEndTable(n, results))
}

// benchServiceCount is MAGLB_BENCH_SERVICES, else def.
func benchServiceCount(b *testing.B, def int) int {
	b.Helper()
	v := os.Getenv(benchServicesEnv)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number", benchServicesEnv, v)
	}
	return n
}

// endToEnd is one measured run.
type endToEnd struct {
	services int
	firstIP  time.Duration // controller start to the first Service with an IP
	all      time.Duration // controller start to every Service with an IP
	// writes counts the API server's write requests (POST, PUT, PATCH, DELETE) during the
	// measured window, by resource[/subresource].
	writes map[string]int
	// controllerCPU is the CPU time the controller used until every Service had an IP;
	// busyCores is how many of the machine's cores were busy on average meanwhile (the API
	// server, etcd and the controller share them).
	controllerCPU time.Duration
	busyCores     float64
	// events counts the IPAllocated events each Service has once the controller has written
	// them all (repeats folded into one Event by its count are counted each).
	events map[string]int
}

func (r endToEnd) servicesPerSecond() float64 { return float64(r.services) / r.all.Seconds() }

func (r endToEnd) eventsPerService() float64 {
	total := 0
	for _, n := range r.events {
		total += n
	}
	return float64(total) / float64(r.services)
}

func (r endToEnd) writesPerService() float64 {
	total := 0
	for _, n := range r.writes {
		total += n
	}
	return float64(total) / float64(r.services)
}

// measureEndToEnd runs impl once against a fresh API server with n Services.
func measureEndToEnd(b *testing.B, impl controllerImpl, n int) endToEnd {
	b.StopTimer()
	env := startAPIServer(b)
	createNamespace(b, env, benchNamespace, nil)
	if err := env.Client.Create(context.Background(), newPool("bench", []string{"10.128.0.0/16"}, nil)); err != nil {
		b.Fatal(err)
	}
	createServices(b, env, n)

	clientset, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	allocated := watchAllocations(b, ctx, clientset, n)
	before := apiWrites(b, clientset)
	selfBefore := processCPU(b, os.Getpid())
	machineBefore := machineBusy(b)

	b.StartTimer()
	start := time.Now()
	ctrl := impl.start(b, env, filepath.Join(b.TempDir(), impl.name+".log"))
	var r endToEnd
	r.services = n
	timeout := 2*time.Minute + time.Duration(n)*150*time.Millisecond // upstream: ~50 ms a Service
	select {
	case <-allocated.first:
		r.firstIP = time.Since(start)
	case <-time.After(timeout):
		b.Fatalf("%s: no Service got an IP within %s", impl.name, timeout)
	}
	select {
	case <-allocated.all:
		r.all = time.Since(start)
	case <-time.After(timeout - time.Since(start)):
		b.Fatalf("%s: %d of %d Services have an IP after %s", impl.name, allocated.count.Load(), n, timeout)
	}
	b.StopTimer()
	r.busyCores = (machineBusy(b) - machineBefore).Seconds() / r.all.Seconds()
	r.controllerCPU = processCPU(b, ctrl.pid)
	if ctrl.pid == os.Getpid() {
		r.controllerCPU -= selfBefore
	}
	r.writes = subtract(apiWrites(b, clientset), before)
	// Events are written after the IP: count them once their number stops growing, before
	// the controller stops.
	r.events = testenv.SettledEvents(b, env.Client, benchNamespace, "IPAllocated")
	ctrl.stop()

	// The watch said so; a List must agree.
	var list corev1.ServiceList
	if err := env.Client.List(context.Background(), &list, client.InNamespace(benchNamespace)); err != nil {
		b.Fatal(err)
	}
	withIP := 0
	for _, svc := range list.Items {
		if len(svc.Status.LoadBalancer.Ingress) > 0 {
			withIP++
		}
	}
	if withIP != n {
		b.Fatalf("%s: a List shows %d of %d Services with an IP", impl.name, withIP, n)
	}
	return r
}

// createServices creates n LoadBalancer Services in parallel with a client allowed many
// requests per second, so that setup stays short.
func createServices(b testing.TB, env *testenv.Env, n int) {
	b.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 5000, 10000
	c, err := client.New(cfg, client.Options{Scheme: k8s.NewScheme()})
	if err != nil {
		b.Fatal(err)
	}
	names := make(chan string)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for name := range names {
				if err := c.Create(context.Background(), newService(benchNamespace, name, nil)); err != nil {
					select {
					case errs <- fmt.Errorf("creating Service %s: %w", name, err):
					default:
					}
				}
			}
		})
	}
	for i := range n {
		names <- fmt.Sprintf("svc-%05d", i)
	}
	close(names)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// allocations reports, from a watch, when the first Service got an IP and when all had one.
type allocations struct {
	first, all chan struct{}
	count      atomic.Int64
}

// watchAllocations follows the bench namespace's Services until n have an IP. The watch is
// set up before the controller starts, so nothing is missed; it is re-listed if the API
// server closes it.
func watchAllocations(b testing.TB, ctx context.Context, cs kubernetes.Interface, n int) *allocations {
	b.Helper()
	a := &allocations{first: make(chan struct{}), all: make(chan struct{})}
	services := cs.CoreV1().Services(benchNamespace)
	list := func() (string, map[string]bool, error) {
		l, err := services.List(ctx, metav1.ListOptions{})
		if err != nil {
			return "", nil, err
		}
		withIP := map[string]bool{}
		for _, svc := range l.Items {
			withIP[svc.Name] = len(svc.Status.LoadBalancer.Ingress) > 0
		}
		return l.ResourceVersion, withIP, nil
	}
	rv, withIP, err := list()
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		var firstOnce, allOnce sync.Once
		for ctx.Err() == nil {
			count := 0
			for _, ok := range withIP {
				if ok {
					count++
				}
			}
			a.count.Store(int64(count))
			if count > 0 {
				firstOnce.Do(func() { close(a.first) })
			}
			if count >= n {
				allOnce.Do(func() { close(a.all) })
				return
			}
			w, err := services.Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
			if err == nil {
				rv = followWatch(w, withIP, func(count int) {
					a.count.Store(int64(count))
					if count > 0 {
						firstOnce.Do(func() { close(a.first) })
					}
					if count >= n {
						allOnce.Do(func() { close(a.all) })
					}
				})
				w.Stop()
			}
			if ctx.Err() != nil {
				return
			}
			// The watch ended or failed: start over from a fresh List.
			if rv, withIP, err = list(); err != nil {
				time.Sleep(time.Second)
				rv, withIP = "", map[string]bool{}
			}
		}
	}()
	return a
}

// followWatch applies w's events to withIP, calling progress with the number of Services with
// an IP after each, until the watch ends. It returns the last resourceVersion seen.
func followWatch(w watch.Interface, withIP map[string]bool, progress func(int)) string {
	var rv string
	count := 0
	for _, ok := range withIP {
		if ok {
			count++
		}
	}
	for ev := range w.ResultChan() {
		svc, ok := ev.Object.(*corev1.Service)
		if !ok { // an error: the caller re-lists
			return rv
		}
		rv = svc.ResourceVersion
		had := withIP[svc.Name]
		has := ev.Type != watch.Deleted && len(svc.Status.LoadBalancer.Ingress) > 0
		withIP[svc.Name] = has
		switch {
		case has && !had:
			count++
		case had && !has:
			count--
		}
		progress(count)
	}
	return rv
}

// apiWrites reads the API server's apiserver_request_total counters of write verbs, by
// resource[/subresource].
func apiWrites(b *testing.B, cs kubernetes.Interface) map[string]int {
	b.Helper()
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		b.Fatalf("reading the API server's metrics: %v", err)
	}
	writes := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		end := strings.LastIndexByte(line, '}')
		labels := metricLabels(line[len("apiserver_request_total{"):end])
		switch labels["verb"] {
		case "POST", "PUT", "PATCH", "DELETE", "APPLY":
		default:
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err != nil {
			continue
		}
		resource := labels["resource"]
		if labels["subresource"] != "" {
			resource += "/" + labels["subresource"]
		}
		writes[resource] += int(v)
	}
	return writes
}

// metricLabels parses the a="x",b="y" part of a Prometheus text sample.
func metricLabels(s string) map[string]string {
	labels := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			break
		}
		key := s[:eq]
		rest := s[eq+2:]
		end := strings.IndexByte(rest, '"')
		for end > 0 && rest[end-1] == '\\' {
			next := strings.IndexByte(rest[end+1:], '"')
			if next < 0 {
				end = -1
				break
			}
			end += 1 + next
		}
		if end < 0 {
			break
		}
		labels[key] = rest[:end]
		s = strings.TrimPrefix(rest[end+1:], ",")
	}
	return labels
}

func subtract(after, before map[string]int) map[string]int {
	d := map[string]int{}
	for k, v := range after {
		if v-before[k] != 0 {
			d[k] = v - before[k]
		}
	}
	return d
}

// clockTick is the unit of /proc's CPU times (USER_HZ, 100 on Linux everywhere).
const clockTick = 10 * time.Millisecond

// processCPU is the CPU time (user + system) process pid has used so far.
func processCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are the 14th and 15th.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * clockTick
}

// machineBusy is the CPU time all cores have spent not idle so far.
func machineBusy(b *testing.B) time.Duration {
	b.Helper()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	// cpu  user nice system idle iowait irq softirq steal ...
	fields := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])[1:]
	var busy int64
	for i, f := range fields {
		v, _ := strconv.ParseInt(f, 10, 64)
		if i != 3 && i != 4 && i < 8 { // not idle, not iowait; guest time is counted in user
			busy += v
		}
	}
	return time.Duration(busy) * clockTick
}

// endToEndTable formats both runs side by side, with ours/upstream.
func endToEndTable(n int, results map[string]endToEnd) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nend to end, %d pre-created LoadBalancer Services, one /16 pool:\n", n)
	fmt.Fprintf(&b, "  %-10s %11s %11s %13s %12s %15s %13s %11s  %s\n", "controller", "services/s", "events/svc", "first IP (s)", "all IPs (s)", "controller CPU", "busy cores", "writes/svc", "writes/svc by resource")
	names := []string{"upstream", "maglb"}
	for _, name := range names {
		r, ok := results[name]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "  %-10s %11.1f %11.2f %13.2f %12.2f %14.1fs %13.2f %11.2f  %s\n", name, r.servicesPerSecond(), r.eventsPerService(), r.firstIP.Seconds(), r.all.Seconds(),
			r.controllerCPU.Seconds(), r.busyCores, r.writesPerService(), perService(r.writes, r.services))
	}
	up, okUp := results["upstream"]
	ours, okOurs := results["maglb"]
	if okUp && okOurs {
		fmt.Fprintf(&b, "  ratio maglb/upstream: %.1fx services/s\n", ours.servicesPerSecond()/up.servicesPerSecond())
	}
	return b.String()
}
