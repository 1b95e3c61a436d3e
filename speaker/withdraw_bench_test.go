// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/maglb/maglb/internal/testenv"
)

// upstreamMetalLBVersion is the upstream speaker the withdrawal benchmark compares with.
const upstreamMetalLBVersion = "0.15.2"

// BenchmarkWithdraw measures, with N Services announced (MAGLB_BENCH_SERVICES, default
// 1,000), the time from the API server having the deletion of half of them, deleted at once,
// to the router having withdrawn each one's route: MagLB's speaker, then upstream MetalLB's
// in the same run. Run it with -benchtime=1x: one pass takes minutes.
func BenchmarkWithdraw(b *testing.B) {
	// The benchmark's clients log through controller-runtime's logger, which nothing sets:
	// without this, it prints a warning with a stack trace once the process is 30 s old.
	ctrllog.SetLogger(logr.Discard())
	n := benchServices()
	speakers := []struct {
		name  string
		start func(*testing.B, *bgpLab)
	}{
		{"maglb", func(b *testing.B, lab *bgpLab) { lab.startSpeaker(b, "lb1", "--log-level", "info") }},
		{"upstream-v" + upstreamMetalLBVersion, startUpstreamSpeaker},
	}
	results := map[string][]time.Duration{}
	for _, s := range speakers {
		b.Run(s.name, func(b *testing.B) {
			for range b.N {
				latencies := benchWithdraw(b, s.start, n)
				results[s.name] = append(results[s.name], latencies...)
				b.ReportMetric(latencies[len(latencies)/2].Seconds()*1000, "p50-ms")
				b.ReportMetric(latencies[len(latencies)-1].Seconds()*1000, "max-ms")
			}
		})
	}
	fmt.Printf("\n%d of %d Services deleted at once: API server has the deletion → route withdrawn at the router\n", n/2, n)
	fmt.Printf("%-20s %10s %10s\n", "speaker", "p50", "max")
	for _, s := range speakers {
		l := results[s.name]
		if len(l) == 0 {
			continue
		}
		slices.Sort(l)
		fmt.Printf("%-20s %10v %10v\n", s.name, l[len(l)/2].Round(time.Millisecond), l[len(l)-1].Round(time.Millisecond))
	}
}

// benchWithdraw announces n Services from lb1's speaker, deletes half of them at once as soon
// as the router has every route, and returns each deleted one's time to withdrawal, sorted.
func benchWithdraw(b *testing.B, start func(*testing.B, *bgpLab), n int) []time.Duration {
	lab, c := newBenchLab(b)
	start(b, lab)
	ctx := context.Background()
	services := make([]*corev1.Service, n)
	parallel(b, n, func(i int) error {
		var err error
		services[i], err = createBenchService(ctx, b, c, i, true)
		return err
	})
	waitForRoutes(b, lab, 5*time.Minute, func(routes map[string]any) bool { return len(routes) >= n })

	half := n / 2
	deleted := make([]time.Time, half)
	gone := map[string]time.Time{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(gone) < half {
			routes, err := routerPrefixes(lab)
			if err != nil {
				continue
			}
			now := time.Now()
			for i := range half {
				prefix := netip.PrefixFrom(benchIP(i), 32).String()
				if _, ok := routes[prefix]; !ok {
					if _, seen := gone[prefix]; !seen {
						gone[prefix] = now
					}
				}
			}
		}
	}()
	parallel(b, half, func(i int) error {
		err := c.Delete(ctx, services[i])
		deleted[i] = time.Now()
		return err
	})
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("only %d of %d routes withdrawn after 2 minutes", len(gone), half)
	}
	latencies := make([]time.Duration, half)
	for i := range half {
		latencies[i] = gone[netip.PrefixFrom(benchIP(i), 32).String()].Sub(deleted[i])
	}
	slices.Sort(latencies)
	return latencies
}

func waitForRoutes(b *testing.B, lab *bgpLab, timeout time.Duration, ok func(map[string]any) bool) {
	deadline := time.Now().Add(timeout)
	for {
		routes, err := routerPrefixes(lab)
		if err == nil && ok(routes) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("routes at the router after %v: %d (%v)", timeout, len(routes), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startUpstreamSpeaker runs upstream MetalLB's speaker for lb1, out of cluster: native BGP, no
// memberlist, and the Pod object it looks itself up by.
func startUpstreamSpeaker(b *testing.B, lab *bgpLab) {
	bin := upstreamSpeaker(b)
	create(b, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "speaker-lb1", Namespace: metallbNamespace},
		Spec:       corev1.PodSpec{NodeName: "lb1", Containers: []corev1.Container{{Name: "speaker", Image: "metallb-speaker"}}},
	})
	lab.startProgram(b, "lb1", bin, []string{
		"KUBECONFIG=" + lab.env.Kubeconfig, "METALLB_BGP_TYPE=native", "METALLB_POD_NAME=speaker-lb1",
	}, "--node-name", "lb1", "--namespace", metallbNamespace, "--log-level", "info")
}

// upstreamSpeaker locates upstream's speaker: beside $MAGLB_UPSTREAM_METALLB (its
// controller), else where `tasks.py` builds both in the per-user cache.
func upstreamSpeaker(tb testing.TB) string {
	tb.Helper()
	controller := os.Getenv("MAGLB_UPSTREAM_METALLB")
	if controller == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			tb.Fatalf("no user cache directory to find upstream MetalLB in: %v", err)
		}
		controller = filepath.Join(cache, "maglb", "upstream-metallb-v"+upstreamMetalLBVersion, "bin", "metallb-controller")
	}
	path := filepath.Join(filepath.Dir(controller), "metallb-speaker")
	if _, err := os.Stat(path); err != nil {
		testenv.Unavailable(tb, fmt.Sprintf("upstream MetalLB v%s speaker not found (build it with hack/build-upstream-metallb.sh): %v", upstreamMetalLBVersion, err))
	}
	return path
}
