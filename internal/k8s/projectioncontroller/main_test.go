// SPDX-License-Identifier: Apache-2.0

package projectioncontroller_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-kit/log"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/k8s/configstate"
	"github.com/maglb/maglb/internal/k8s/projectioncontroller"
	"github.com/maglb/maglb/internal/k8s/servicecontroller"
	"github.com/maglb/maglb/internal/logging"
	"github.com/maglb/maglb/internal/projection"
	"github.com/maglb/maglb/internal/testenv"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// maglbNamespace is MagLB's namespace in the LB cluster: its pools and the kubeconfig Secrets.
const maglbNamespace = "metallb-system"

// The LB cluster's pool: its VIPs, and the shard named in IPAllocated events.
const (
	poolName  = "lb-pool"
	poolShard = "gold"
	poolRange = "198.51.100.0/24"
)

var workloads struct {
	mu      sync.Mutex
	started []*testenv.Env
}

func TestMain(m *testing.M) {
	code := testenv.Run(m)
	workloads.mu.Lock()
	for _, e := range workloads.started {
		_ = e.Stop()
	}
	workloads.mu.Unlock()
	os.Exit(code)
}

// startWorkloadCluster runs one more API server, a workload cluster, for the rest of the package
// (stopping it is the test's choice).
func startWorkloadCluster(t *testing.T) *testenv.Env {
	t.Helper()
	testenv.Get(t) // skips or fails as the LB cluster's server would
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	workloads.mu.Lock()
	workloads.started = append(workloads.started, env)
	workloads.mu.Unlock()
	return env
}

// sharedWorkload is the workload cluster most tests use.
var sharedWorkload struct {
	once sync.Once
	env  *testenv.Env
}

func workloadCluster(t *testing.T) *testenv.Env {
	t.Helper()
	sharedWorkload.once.Do(func() { sharedWorkload.env = startWorkloadCluster(t) })
	if sharedWorkload.env == nil {
		t.Fatal("the shared workload cluster did not start")
	}
	return sharedWorkload.env
}

// startController runs, in the LB cluster, the allocation controller with its configuration
// and the projection controller, until the test ends.
func startController(t *testing.T) {
	t.Helper()
	lb := testenv.Get(t)
	ensureNamespace(t, lb.Client, maglbNamespace)
	ensurePool(t, lb.Client)
	logger := log.NewNopLogger()
	if testing.Verbose() {
		logger = log.NewLogfmtLogger(os.Stderr)
	}
	ctrl.SetLogger(logging.Logr(logger))
	mgr, err := k8s.NewManager(lb.Config, manager.Options{
		Scheme:                 k8s.NewScheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	services := &servicecontroller.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("metallb-controller"), Namespace: maglbNamespace, Logger: logger}
	if err := services.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	configs := &configstate.Reconciler{
		Client: mgr.GetClient(), Namespace: maglbNamespace, Validate: config.DontValidate,
		StateName: "controller", StateLabels: configstate.NewStateLabels("controller", ""),
		Apply: services.SetConfig, Logger: logger,
	}
	if err := configs.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	projections := &projectioncontroller.Reconciler{Client: mgr.GetClient(), Namespace: maglbNamespace, Logger: logger}
	if err := projections.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
}

func ensureNamespace(t *testing.T, c client.Client, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func ensurePool(t *testing.T, c client.Client) {
	t.Helper()
	pool := &maglbv1beta1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Namespace: maglbNamespace, Name: poolName},
		Spec:       maglbv1beta1.IPAddressPoolSpec{IPAddressPoolSpec: metallbv1beta1.IPAddressPoolSpec{Addresses: []string{poolRange}}, Shard: poolShard},
	}
	if err := c.Create(context.Background(), pool); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// registerCluster stores kubeconfig in a Secret and creates a WorkloadCluster named name for it;
// at the end of the test, it is deleted and waited for.
func registerCluster(t *testing.T, name string, kubeconfig []byte, mutate func(*v1alpha1.WorkloadCluster)) {
	t.Helper()
	lb := testenv.Get(t).Client
	setSecret(t, name, kubeconfig)
	wc := &v1alpha1.WorkloadCluster{ObjectMeta: metav1.ObjectMeta{Name: name}}
	wc.Spec.KubeconfigSecret.Name = secretName(name)
	if mutate != nil {
		mutate(wc)
	}
	if err := lb.Create(context.Background(), wc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteCluster(t, name) })
}

func secretName(cluster string) string { return "kubeconfig-" + cluster }

func setSecret(t *testing.T, cluster string, kubeconfig []byte) {
	t.Helper()
	lb := testenv.Get(t).Client
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: maglbNamespace, Name: secretName(cluster)}}
	secret.Data = map[string][]byte{"kubeconfig": kubeconfig}
	err := lb.Create(context.Background(), secret)
	if apierrors.IsAlreadyExists(err) {
		err = lb.Update(context.Background(), secret)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func kubeconfigOf(t *testing.T, env *testenv.Env) []byte {
	t.Helper()
	data, err := os.ReadFile(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func deleteCluster(t *testing.T, name string) {
	t.Helper()
	lb := testenv.Get(t).Client
	wc := &v1alpha1.WorkloadCluster{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := lb.Delete(context.Background(), wc); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "WorkloadCluster "+name+" gone", func() error {
		err := lb.Get(context.Background(), client.ObjectKeyFromObject(wc), wc)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (finalizers %v): %v", wc.Finalizers, err)
	})
}

// condition returns the WorkloadCluster's condition of type typ.
func condition(t *testing.T, name, typ string) (metav1.Condition, *v1alpha1.WorkloadCluster) {
	t.Helper()
	var wc v1alpha1.WorkloadCluster
	if err := testenv.Get(t).Client.Get(context.Background(), client.ObjectKey{Name: name}, &wc); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(wc.Status.Conditions, typ); c != nil {
		return *c, &wc
	}
	return metav1.Condition{}, &wc
}

func waitCondition(t *testing.T, name, typ string, status metav1.ConditionStatus, reason string) metav1.Condition {
	t.Helper()
	var last metav1.Condition
	testenv.Eventually(t, fmt.Sprintf("%s %s=%s (%s)", name, typ, status, reason), func() error {
		last, _ = condition(t, name, typ)
		if last.Status != status || last.Reason != reason {
			return fmt.Errorf("%s is %s (%s): %s", typ, last.Status, last.Reason, last.Message)
		}
		return nil
	})
	return last
}

// loadBalancer creates a LoadBalancer Service in the workload cluster.
func loadBalancer(t *testing.T, c client.Client, namespace, name string, annotations map[string]string) *corev1.Service {
	t.Helper()
	ensureNamespace(t, c, namespace)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Annotations: annotations, Labels: map[string]string{"app": name}},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			Selector:              map[string]string{"app": name},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports:                 []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
		},
	}
	if err := c.Create(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	return svc
}

// projected returns the projection of the workload Service namespace/name of cluster.
func projected(t *testing.T, namespace, cluster, wns, wname string) (*corev1.Service, error) {
	t.Helper()
	var svc corev1.Service
	err := testenv.Get(t).Client.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: projection.Name(cluster, wns, wname)}, &svc)
	return &svc, err
}

// slicesOf returns the projected EndpointSlices of the projected Service name.
func slicesOf(t *testing.T, namespace, name string) []discoveryv1.EndpointSlice {
	t.Helper()
	var list discoveryv1.EndpointSliceList
	if err := testenv.Get(t).Client.List(context.Background(), &list, client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: name}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(list.Items, func(a, b discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	return list.Items
}

// ingressOf returns the workload Service's ingress IPs.
func ingressOf(t *testing.T, c client.Client, svc *corev1.Service) []string {
	t.Helper()
	var cur corev1.Service
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(svc), &cur); err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, i := range cur.Status.LoadBalancer.Ingress {
		ips = append(ips, i.IP)
	}
	return ips
}

// events returns the events of the workload Service, as "type reason: message".
func events(t *testing.T, c client.Client, svc *corev1.Service) []string {
	t.Helper()
	var list corev1.EventList
	if err := c.List(context.Background(), &list, client.InNamespace(svc.Namespace)); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == "Service" && e.InvolvedObject.Name == svc.Name {
			out = append(out, e.Type+" "+e.Reason+": "+e.Message)
		}
	}
	return out
}

func hasEvent(list []string, prefix string) bool {
	return slices.ContainsFunc(list, func(e string) bool { return strings.HasPrefix(e, prefix) })
}

var errNotYet = errors.New("not yet")
