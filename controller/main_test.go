// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/lbservice"
	"github.com/maglb/maglb/internal/logging"
	"github.com/maglb/maglb/internal/testenv"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

const metallbNamespace = "metallb-system"

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m))
}

// startController runs the controller binary's wiring against the test API server until
// the returned stop is called (or the test ends).
func startController(t *testing.T, lbClass string) (stop func()) {
	t.Helper()
	env := testenv.Get(t)
	ensureNamespace(t, metallbNamespace, nil)
	o := options{
		Options:           k8s.Options{Namespace: metallbNamespace, LogLevel: "info", MetricsPort: 0, HealthProbePort: testenv.FreePort(t)},
		webhookMode:       webhookEnabled,
		webhookHost:       "127.0.0.1",
		webhookPort:       testenv.FreePort(t),
		certDir:           t.TempDir(),
		certServiceName:   "metallb-webhook-service",
		webhookSecret:     "metallb-webhook-cert",
		loadBalancerClass: lbClass,
	}
	logger := log.NewNopLogger()
	if testing.Verbose() {
		logger = log.NewLogfmtLogger(os.Stderr)
	}
	return runController(t, env, o, logger)
}

// runController runs the controller with options o against env until the returned stop is
// called (or the test ends), and waits until it reports ready.
func runController(t testing.TB, env *testenv.Env, o options, logger log.Logger) (stop func()) {
	t.Helper()
	ctrl.SetLogger(logging.Logr(logger))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, env.Config, o, logger) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	}
	t.Cleanup(stop)
	// Readiness checks come with the webhooks; without them, liveness is all there is.
	probe := "readyz"
	if o.webhookMode == webhookDisabled {
		probe = "healthz"
	}
	testenv.Eventually(t, "controller ready", func() error {
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/%s", o.HealthProbePort, probe))
	})
	return stop
}

// httpOK tells an error unless a GET of url answers 200 OK.
func httpOK(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func TestAllocation(t *testing.T) {
	startController(t, "")
	ensureNamespace(t, "team-a", map[string]string{"team": "a"})
	ensureNamespace(t, "team-b", nil)

	createPool(t, "general", []string{"10.10.0.0/29"}, nil)
	createPool(t, "manual", []string{"10.10.1.0/29"}, func(s *maglbv1beta1.IPAddressPoolSpec) { s.AutoAssign = ptr.To(false) })
	createPool(t, "team-a", []string{"10.10.2.0/29"}, func(s *maglbv1beta1.IPAddressPoolSpec) {
		s.AllocateTo = &metallbv1beta1.ServiceAllocation{Priority: 10, NamespaceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"team": "a"}}}}
	})
	createPool(t, "gold", []string{"10.10.3.0/29"}, func(s *maglbv1beta1.IPAddressPoolSpec) {
		s.Shard = "gold"
		s.AllocateTo = &metallbv1beta1.ServiceAllocation{Priority: 5, ServiceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "gold"}}}}
	})

	t.Run("first free address of the only auto-assign pool that fits", func(t *testing.T) {
		svc := createService(t, "team-b", "plain", nil)
		waitForIPs(t, svc, "10.10.0.0")
		waitForAnnotation(t, svc, lbservice.AnnotationIPAllocatedFromPool, "general")
		waitForEvent(t, svc, "IPAllocated", `Assigned IP ["10.10.0.0"]`)
	})
	t.Run("pool by annotation, including an autoAssign=false pool", func(t *testing.T) {
		svc := createService(t, "team-b", "bypool", func(s *corev1.Service) {
			s.Annotations = map[string]string{lbservice.AnnotationAddressPool: "manual"}
		})
		waitForIPs(t, svc, "10.10.1.0")
	})
	t.Run("requested IP through the annotation", func(t *testing.T) {
		svc := createService(t, "team-b", "requested", func(s *corev1.Service) {
			s.Annotations = map[string]string{lbservice.AnnotationLoadBalancerIPs: "10.10.1.5"}
		})
		waitForIPs(t, svc, "10.10.1.5")
	})
	t.Run("requested IP through spec.loadBalancerIP", func(t *testing.T) {
		svc := createService(t, "team-b", "specip", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "10.10.0.6" })
		waitForIPs(t, svc, "10.10.0.6")
	})
	t.Run("legacy annotation works and is reported deprecated", func(t *testing.T) {
		svc := createService(t, "team-b", "legacy", func(s *corev1.Service) {
			s.Annotations = map[string]string{lbservice.LegacyAnnotationAddressPool: "manual"}
		})
		waitForIPs(t, svc, "10.10.1.0") // the earlier subtests' Services are gone
		waitForEvent(t, svc, "deprecatedAnnotation", lbservice.LegacyAnnotationAddressPool)
	})
	t.Run("namespace selector with priority", func(t *testing.T) {
		svc := createService(t, "team-a", "ns", nil)
		waitForIPs(t, svc, "10.10.2.0")
	})
	t.Run("service selector with the best priority, in a shard", func(t *testing.T) {
		svc := createService(t, "team-a", "gold", func(s *corev1.Service) { s.Labels = map[string]string{"tier": "gold"} })
		waitForIPs(t, svc, "10.10.3.0")
		waitForEvent(t, svc, "IPAllocated", `shard "gold"`)
	})
	t.Run("a taken requested IP stays pending until freed", func(t *testing.T) {
		first := createService(t, "team-b", "holder", func(s *corev1.Service) {
			s.Annotations = map[string]string{lbservice.AnnotationLoadBalancerIPs: "10.10.0.7"}
		})
		waitForIPs(t, first, "10.10.0.7")
		second := createService(t, "team-b", "wanter", func(s *corev1.Service) {
			s.Annotations = map[string]string{lbservice.AnnotationLoadBalancerIPs: "10.10.0.7"}
		})
		waitForEvent(t, second, "AllocationFailed", "address also in use by team-b/holder")
		deleteObject(t, first)
		waitForIPs(t, second, "10.10.0.7")
	})
}

func TestSharing(t *testing.T) {
	startController(t, "")
	ensureNamespace(t, "shared", nil)
	createPool(t, "sharing", []string{"10.11.0.0/30"}, nil)
	share := func(s *corev1.Service, port int32) {
		s.Annotations = map[string]string{lbservice.AnnotationAllowSharedIP: "web", lbservice.AnnotationLoadBalancerIPs: "10.11.0.1"}
		s.Spec.Ports[0].Port = port
	}
	http := createService(t, "shared", "http", func(s *corev1.Service) { share(s, 80) })
	https := createService(t, "shared", "https", func(s *corev1.Service) { share(s, 443) })
	waitForIPs(t, http, "10.11.0.1")
	waitForIPs(t, https, "10.11.0.1")
	clash := createService(t, "shared", "clash", func(s *corev1.Service) { share(s, 443) })
	waitForEvent(t, clash, "AllocationFailed", "443")
	assertIPs(t, clash)
}

func TestDualStack(t *testing.T) {
	startController(t, "")
	ensureNamespace(t, "dual", nil)
	createPool(t, "dual", []string{"10.12.0.0/30", "fd00:12::/126"}, nil)
	svc := createService(t, "dual", "both", func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	})
	waitForIPs(t, svc, "10.12.0.0", "fd00:12::")
	v6 := createService(t, "dual", "v6", func(s *corev1.Service) {
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	})
	waitForIPs(t, v6, "fd00:12::1")
}

func TestLoadBalancerClass(t *testing.T) {
	startController(t, "maglb.io/gold")
	ensureNamespace(t, "classes", nil)
	createPool(t, "classes", []string{"10.13.0.0/30"}, nil)
	ours := createService(t, "classes", "ours", func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("maglb.io/gold") })
	others := createService(t, "classes", "others", func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/other") })
	none := createService(t, "classes", "none", nil)
	waitForIPs(t, ours, "10.13.0.0")
	time.Sleep(time.Second) // the other two were seen by now, and must stay untouched
	assertIPs(t, others)
	assertIPs(t, none)
}

func TestPoolChanges(t *testing.T) {
	startController(t, "")
	ensureNamespace(t, "moves", nil)
	shrinking := createPool(t, "shrinking", []string{"10.14.0.0/30", "10.14.1.0/30"}, nil)
	createPool(t, "fallback", []string{"10.14.9.0/30"}, func(s *maglbv1beta1.IPAddressPoolSpec) { s.AutoAssign = ptr.To(true) })
	svc := createService(t, "moves", "mover", func(s *corev1.Service) {
		s.Annotations = map[string]string{lbservice.AnnotationLoadBalancerIPs: "10.14.1.1"}
	})
	waitForIPs(t, svc, "10.14.1.1")

	t.Run("pool shrink moves the service", func(t *testing.T) {
		svc := createService(t, "moves", "auto", func(s *corev1.Service) {
			s.Annotations = map[string]string{lbservice.AnnotationAddressPool: "shrinking"}
		})
		waitForIPs(t, svc, "10.14.0.0")
		update(t, shrinking, func() { shrinking.Spec.Addresses = []string{"10.14.1.0/30"} })
		waitForEvent(t, svc, "ClearAssignment", "")
		waitForIPs(t, svc, "10.14.1.0")
		waitForPoolStatus(t, "shrinking", 2, 2)
	})
	t.Run("pool deletion clears the service", func(t *testing.T) {
		deleteObject(t, shrinking)
		waitForIPs(t, svc)
		waitForEvent(t, svc, "AllocationFailed", "")
	})
}

func TestRestartKeepsIPs(t *testing.T) {
	stop := startController(t, "")
	ensureNamespace(t, "restart", nil)
	createPool(t, "restart", []string{"10.15.0.0/28"}, nil)
	want := map[string]string{}
	var services []*corev1.Service
	for i := range 8 {
		svc := createService(t, "restart", fmt.Sprintf("svc-%d", i), nil)
		services = append(services, svc)
		want[svc.Name] = fmt.Sprintf("10.15.0.%d", i)
		waitForIPs(t, svc, want[svc.Name])
	}
	stop()

	// While the controller is down: one Service goes away, freeing its address, and a new
	// one arrives. On restart the new one must not take an address another Service holds.
	deleteObject(t, services[0])
	newcomer := createService(t, "restart", "newcomer", nil)
	startController(t, "")
	waitForIPs(t, newcomer, "10.15.0.0")
	for _, svc := range services[1:] {
		assertIPs(t, svc, want[svc.Name])
	}
}

func createPool(t *testing.T, name string, addresses []string, mutate func(*maglbv1beta1.IPAddressPoolSpec)) *maglbv1beta1.IPAddressPool {
	t.Helper()
	pool := newPool(name, addresses, mutate)
	create(t, pool)
	return pool
}

// newPool returns an IPAddressPool of addresses, changed by mutate (when not nil).
func newPool(name string, addresses []string, mutate func(*maglbv1beta1.IPAddressPoolSpec)) *maglbv1beta1.IPAddressPool {
	pool := &maglbv1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metallbNamespace}}
	pool.Spec.Addresses = addresses
	if mutate != nil {
		mutate(&pool.Spec)
	}
	return pool
}

func createService(t *testing.T, namespace, name string, mutate func(*corev1.Service)) *corev1.Service {
	t.Helper()
	svc := newService(namespace, name, mutate)
	create(t, svc)
	return svc
}

// newService returns a LoadBalancer Service for one TCP port, without node ports, changed by
// mutate (when not nil).
func newService(namespace, name string, mutate func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			AllocateLoadBalancerNodePorts: ptr.To(false),
			Selector:                      map[string]string{"app": name},
			Ports:                         []corev1.ServicePort{{Name: "port", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if mutate != nil {
		mutate(svc)
	}
	return svc
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	c := testenv.Get(t).Client
	if err := c.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
	t.Cleanup(func() { deleteObject(t, obj) })
}

func update(t *testing.T, obj client.Object, mutate func()) {
	t.Helper()
	c := testenv.Get(t).Client
	testenv.Eventually(t, "update "+obj.GetName(), func() error {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate()
		return c.Update(context.Background(), obj)
	})
}

func deleteObject(t *testing.T, obj client.Object) {
	t.Helper()
	err := testenv.Get(t).Client.Delete(context.Background(), obj)
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("deleting %s: %v", obj.GetName(), err)
	}
}

func ensureNamespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := testenv.Get(t).Client.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func ingressIPs(t *testing.T, svc *corev1.Service) ([]string, error) {
	var got corev1.Service
	if err := testenv.Get(t).Client.Get(context.Background(), client.ObjectKeyFromObject(svc), &got); err != nil {
		return nil, err
	}
	var ips []string
	for _, in := range got.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP)
	}
	return ips, nil
}

// waitForIPs waits until svc's ingress lists exactly want (none when want is empty).
func waitForIPs(t *testing.T, svc *corev1.Service, want ...string) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("%s/%s to have IPs %v", svc.Namespace, svc.Name, want), func() error {
		got, err := ingressIPs(t, svc)
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("has %v", got)
		}
		return nil
	})
}

// assertIPs checks svc's ingress now.
func assertIPs(t *testing.T, svc *corev1.Service, want ...string) {
	t.Helper()
	got, err := ingressIPs(t, svc)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s/%s has IPs %v, want %v", svc.Namespace, svc.Name, got, want)
	}
}

func waitForAnnotation(t *testing.T, svc *corev1.Service, key, want string) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("annotation %s=%s", key, want), func() error {
		var got corev1.Service
		if err := testenv.Get(t).Client.Get(context.Background(), client.ObjectKeyFromObject(svc), &got); err != nil {
			return err
		}
		if got.Annotations[key] != want {
			return fmt.Errorf("is %q", got.Annotations[key])
		}
		return nil
	})
}

// waitForEvent waits for an event on svc with reason and a message containing text.
func waitForEvent(t *testing.T, svc *corev1.Service, reason, text string) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("event %s %q on %s", reason, text, svc.Name), func() error {
		var events corev1.EventList
		if err := testenv.Get(t).Client.List(context.Background(), &events, client.InNamespace(svc.Namespace)); err != nil {
			return err
		}
		var seen []string
		for _, e := range events.Items {
			if e.InvolvedObject.Name != svc.Name || e.InvolvedObject.Kind != "Service" {
				continue
			}
			if e.Reason == reason && strings.Contains(e.Message, text) && e.Source.Component == "metallb-controller" {
				return nil
			}
			seen = append(seen, e.Reason+": "+e.Message)
		}
		return fmt.Errorf("events: %q", seen)
	})
}

// A restart leaves alone the status of a pool whose allocations did not change: no write
// with counters that miss the Services holding IPs, which an upgrade from upstream (or any
// restart) would see as a changed pool.
func TestRestartLeavesPoolStatus(t *testing.T) {
	stop := startController(t, "")
	ensureNamespace(t, "pool-status", nil)
	inPool := func(pool string) func(*corev1.Service) {
		return func(s *corev1.Service) { s.Annotations = map[string]string{lbservice.AnnotationAddressPool: pool} }
	}
	kept := createPool(t, "kept-status", []string{"10.16.0.0/28"}, nil)
	createPool(t, "marker", []string{"10.16.1.0/28"}, nil)
	waitForIPs(t, createService(t, "pool-status", "web", inPool("kept-status")), "10.16.0.0")
	waitForPoolStatus(t, "kept-status", 1, 15)
	stop()
	c := testenv.Get(t).Client
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(kept), kept); err != nil {
		t.Fatal(err)
	}
	before := kept.ResourceVersion

	startController(t, "")
	// Once the restarted controller has allocated and written another pool's status, it
	// has written any status it was going to.
	waitForIPs(t, createService(t, "pool-status", "marker", inPool("marker")), "10.16.1.0")
	waitForPoolStatus(t, "marker", 1, 15)
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(kept), kept); err != nil {
		t.Fatal(err)
	}
	if kept.ResourceVersion != before {
		t.Errorf("pool kept-status rewritten by the restart: resourceVersion %s -> %s, status %+v", before, kept.ResourceVersion, kept.Status)
	}
}

func waitForPoolStatus(t *testing.T, name string, assigned, available int64) {
	t.Helper()
	testenv.Eventually(t, "pool status of "+name, func() error {
		var pool maglbv1beta1.IPAddressPool
		if err := testenv.Get(t).Client.Get(context.Background(), client.ObjectKey{Namespace: metallbNamespace, Name: name}, &pool); err != nil {
			return err
		}
		if pool.Status.AssignedIPv4 != assigned || pool.Status.AvailableIPv4 != available {
			return fmt.Errorf("status %+v", pool.Status)
		}
		return nil
	})
}

// The samples a user starts from work as they are: every Service gets its address.
func TestConfigSamples(t *testing.T) {
	startController(t, "")
	env := testenv.Get(t)
	samples := filepath.Join(testenv.RepoRoot(), "configsamples")
	if out, err := env.Kubectl("apply", "-f", samples); err != nil {
		t.Fatalf("kubectl apply -f configsamples: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := env.Kubectl("delete", "--ignore-not-found", "-f", samples); err != nil {
			t.Errorf("deleting the samples: %v\n%s", err, out)
		}
	})
	for name, want := range map[string]struct{ ip, pool string }{
		"web":          {"192.168.10.0", "default"},
		"gold-web":     {"198.51.100.0", "gold"},
		"silver-dns":   {"198.51.100.64", "silver"},
		"shared-http":  {"192.168.10.100", "default"},
		"shared-https": {"192.168.10.100", "default"},
	} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
		waitForIPs(t, svc, want.ip)
		waitForAnnotation(t, svc, lbservice.AnnotationIPAllocatedFromPool, want.pool)
	}
}

// A pool whose shard no node serves is a warning in ConfigurationState and an event on the
// pool, until a node joins the shard.
func TestUnservedShardWarning(t *testing.T) {
	startController(t, "")
	c := testenv.Get(t).Client
	pool := createPool(t, "bronze", []string{"10.16.0.0/30"}, func(s *maglbv1beta1.IPAddressPoolSpec) { s.Shard = "bronze" })
	shardCondition := func() (metav1.Condition, error) {
		var state metallbv1beta1.ConfigurationState
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: metallbNamespace, Name: "controller"}, &state); err != nil {
			return metav1.Condition{}, err
		}
		for _, cond := range state.Status.Conditions {
			if cond.Type == "shardsServed" {
				return cond, nil
			}
		}
		return metav1.Condition{}, fmt.Errorf("no shardsServed condition in %+v", state.Status)
	}
	testenv.Eventually(t, "shardsServed=False naming bronze", func() error {
		cond, err := shardCondition()
		if err == nil && (cond.Status != metav1.ConditionFalse || !strings.Contains(cond.Message, "bronze")) {
			err = fmt.Errorf("condition %+v", cond)
		}
		return err
	})
	testenv.Eventually(t, "a ShardUnserved event on the pool", func() error {
		var events corev1.EventList
		if err := c.List(context.Background(), &events, client.InNamespace(metallbNamespace)); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Name == pool.Name && e.Reason == "ShardUnserved" && strings.Contains(e.Message, "maglb.io/shard-bronze") {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(events.Items))
	})

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "lb-bronze", Labels: map[string]string{"maglb.io/shard-bronze": ""}}}
	create(t, node)
	testenv.Eventually(t, "shardsServed=True", func() error {
		cond, err := shardCondition()
		if err == nil && cond.Status != metav1.ConditionTrue {
			err = fmt.Errorf("condition %+v", cond)
		}
		return err
	})
}

type metallbAllocateTo = metallbv1beta1.ServiceAllocation
