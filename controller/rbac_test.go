// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	maglbv1alpha1 "github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/badsettings"
	"github.com/maglb/maglb/internal/lbservice"
	"github.com/maglb/maglb/internal/projection"
	"github.com/maglb/maglb/internal/rbactest"
	"github.com/maglb/maglb/internal/testenv"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
	"github.com/maglb/maglb/upstream/webhooks"
)

var (
	// controllerRBAC is what the controller's manifest grants it in the LB cluster.
	controllerRBAC = []string{"config/rbac/service_accounts.yaml", "config/rbac/controller.yaml"}
	// projectionRBAC is what a workload cluster grants the controller's projection.
	projectionRBAC = []string{"config/workload-cluster/projection-access.yaml"}
)

const (
	projectionNamespace = "maglb-projection" // of the ServiceAccount a workload cluster grants
	rbacPod             = "controller-rbac"
	rbacPool            = "rbac"
	workloadNamespace   = "shop"
)

// rbacSetup is what every run of the controller's job shares.
type rbacSetup struct {
	lb, workload *testenv.Env
	bin          string
	kubeconfig   string // of the controller's ServiceAccount, in the LB cluster
	projection   []byte // kubeconfig of the projection's ServiceAccount, in the workload cluster
	reader       string // a token allowed to read metrics
	runs         atomic.Int32
}

// The controller, run as deployed (leader election, webhooks registered with a certificate
// of its own, metrics over HTTPS) with a token of its ServiceAccount bound to exactly the
// manifest's RBAC, and projecting a workload cluster through a token bound to exactly what
// config/workload-cluster grants, does its whole job (rbacSetup.job). With
// MAGLB_RBAC_TABLE=1, the minus-one-verb table of the LB cluster's RBAC: without any one
// (resource, verb), the controller's log shows the API server refusing it. (In a workload
// cluster, the projection asks for each verb it needs before it starts: its access probe,
// TestWorkloadClusterAccess, names what is missing.)
func TestControllerRBAC(t *testing.T) {
	s := &rbacSetup{lb: startAPIServer(t), workload: startAPIServer(t), bin: controllerBinary(t)}
	ctx := context.Background()
	rbac, _, kubeconfig := rbactest.Grant(t, s.lb, metallbNamespace, "controller", controllerRBAC...)
	s.kubeconfig = kubeconfig
	createNamespace(t, s.workload, projectionNamespace, nil)
	createNamespace(t, s.workload, workloadNamespace, nil)
	_, _, projectionKubeconfig := rbactest.Grant(t, s.workload, projectionNamespace, "maglb-projection", projectionRBAC...)
	var err error
	if s.projection, err = os.ReadFile(projectionKubeconfig); err != nil {
		t.Fatal(err)
	}
	if s.reader, err = s.lb.MetricsReaderToken(ctx, "prometheus"); err != nil {
		t.Fatal(err)
	}
	if err := s.lb.Client.Create(ctx, newPool(rbacPool, []string{"10.129.0.0/16"}, nil)); err != nil {
		t.Fatal(err)
	}
	testenv.Node(t, s.workload.Client, "w1", "192.0.2.11")
	testenv.Node(t, s.workload.Client, "w2", "192.0.2.12")

	rbactest.Check(t, s.lb.Client, rbac, rbactest.ServiceAccountUser(metallbNamespace, "controller"), s.job)
}

// job runs the controller through its job: a Service of the LB cluster gets its IP and
// IPAllocated; the webhooks and the BGPPeer conversion get its CA, its Secret a certificate;
// its ConfigurationState and the pool's status are written; a reader scrapes its metrics.
// A workload cluster registered, its Service is projected (namespace, Service, EndpointSlice),
// gets the VIP back, and a Service asking for an IP no pool has gets the AllocationFailed
// warning mirrored, repeated (patched) in both clusters. The workload Service's endpoints and
// port change: the projection follows. The controller is restarted: it holds the Lease again,
// renews a Secret that holds no certificate, puts its CA back into the webhooks and its labels
// on its ConfigurationState. Then the workload Service is deleted (its projection goes, its
// finalizer is taken off) and the WorkloadCluster too (its namespace goes, its finalizer
// is taken off).
func (s *rbacSetup) job(t *testing.T, row rbactest.Row) (string, error) {
	ctx := context.Background()
	c, w := s.lb.Client, s.workload.Client
	id := fmt.Sprintf("r%d", s.runs.Add(1))
	resetControllerState(t, c)

	svc := newService(metallbNamespace, "rbac-"+id, nil)
	wsvc := workloadService(t, w, "web-"+id, nil)
	testenv.SetEndpoints(t, w, wsvc, testenv.Pod{Name: "a", Node: "w1", Addr: "10.0.1.1"})
	wfail := workloadService(t, w, "nope-"+id, map[string]string{lbservice.AnnotationLoadBalancerIPs: "203.0.113.99"})
	cluster := &maglbv1alpha1.WorkloadCluster{ObjectMeta: metav1.ObjectMeta{Name: id}, Spec: maglbv1alpha1.WorkloadClusterSpec{KubeconfigSecret: maglbv1alpha1.SecretKeyRef{Name: "kubeconfig-" + id}}}
	for _, obj := range []client.Object{svc,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: "kubeconfig-" + id}, Data: map[string][]byte{maglbv1alpha1.DefaultKubeconfigKey: s.projection}},
		cluster.DeepCopy(),
	} {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	lbNamespace := maglbv1alpha1.DefaultNamespacePrefix + id
	projected := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: lbNamespace, Name: projection.Name(id, workloadNamespace, wsvc.Name)}}
	failed := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: lbNamespace, Name: projection.Name(id, workloadNamespace, wfail.Name)}}
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: lbNamespace, Name: projected.Name + "-ipv4"}}
	state := &metallbv1beta1.ConfigurationState{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: "controller"}}
	pool := &maglbv1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: rbacPool}}
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: leaderElectionID}}

	logPath := filepath.Join(t.TempDir(), "controller.log")
	metricsPort := testenv.FreePort(t)
	stop := s.start(t, logPath, metricsPort, row.Env())
	defer func() { stop() }()
	steps := rbactest.Steps{LogPath: logPath, Refused: row.Refused, Timeout: 30 * time.Second}
	done := func(err error) (string, error) {
		stop()
		return rbactest.ReadLog(logPath), err
	}
	wait := func(checks ...check) error {
		for _, ch := range checks {
			if err := steps.Wait(ch.what, ch.done); err != nil {
				return err
			}
		}
		return nil
	}

	if err := wait(
		check{"the Service's IP", func() error { return hasIngress(c, svc) }},
		check{"IPAllocated", func() error { return eventCount(c, svc, "IPAllocated", 1) }},
		check{"the webhooks' CA", func() error { return webhooksHaveCA(c) }},
		check{"the ConfigurationState", holds(c, state, func(state *metallbv1beta1.ConfigurationState) error {
			if state.Status.Result != metallbv1beta1.ConfigurationResultValid {
				return fmt.Errorf("result %q", state.Status.Result)
			}
			return nil
		})},
		check{"the pool's status", holds(c, pool, func(pool *maglbv1beta1.IPAddressPool) error {
			if pool.Status.AssignedIPv4 == 0 {
				return errors.New("no address assigned in the status")
			}
			return nil
		})},
		check{"metrics over HTTPS", func() error { return scrape(metricsPort, s.reader) }},
		check{"the WorkloadCluster connected", holds(c, cluster, func(wc *maglbv1alpha1.WorkloadCluster) error {
			if !meta.IsStatusConditionTrue(wc.Status.Conditions, maglbv1alpha1.ConditionConnected) {
				return fmt.Errorf("conditions %v", wc.Status.Conditions)
			}
			return nil
		})},
		check{"the projected Service's IP", func() error { return hasIngress(c, projected) }},
		check{"the projected EndpointSlice", holds(c, slice, weights("192.0.2.11=1"))},
		check{"the VIP written back", func() error { return hasIngress(w, wsvc) }},
		check{"AllocationFailed mirrored", func() error { return eventCount(w, wfail, "AllocationFailed", 1) }},
	); err != nil {
		return done(err)
	}

	// Changes the projection follows, and a warning repeated in both clusters.
	testenv.SetEndpoints(t, w, wsvc, testenv.Pod{Name: "b", Node: "w2", Addr: "10.0.2.1"})
	mutate(t, w, wsvc, func() { wsvc.Spec.Ports[0].Port = 8080 })
	mutate(t, w, wfail, func() { wfail.Labels = map[string]string{"tier": "front"} })
	if err := wait(
		check{"the projected EndpointSlice updated", holds(c, slice, weights("192.0.2.12=1"))},
		check{"the projected Service updated", holds(c, projected, func(svc *corev1.Service) error {
			if len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].Port != 8080 {
				return fmt.Errorf("ports %v", svc.Spec.Ports)
			}
			return nil
		})},
		check{"AllocationFailed repeated", func() error { return eventCount(c, failed, "AllocationFailed", 2) }},
		check{"AllocationFailed repeated in the workload cluster", func() error { return eventCount(w, wfail, "AllocationFailed", 2) }},
	); err != nil {
		return done(err)
	}

	// Restarted, the controller finds its state partly lost.
	stop()
	mutate(t, c, state, func() { state.Labels = nil })
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: "metallb-webhook-cert"}}
	mutate(t, c, secret, func() { secret.Data = nil })
	clearWebhookCA(t, c)
	stop = s.start(t, logPath, metricsPort, row.Env())
	if err := wait(
		check{"the Lease held again", holds(c, lease, func(lease *coordinationv1.Lease) error {
			if holder := ptr.Deref(lease.Spec.HolderIdentity, ""); holder != rbacPod {
				return fmt.Errorf("held by %q", holder)
			}
			if lease.Spec.RenewTime == nil || time.Since(lease.Spec.RenewTime.Time) > 5*time.Second {
				return errors.New("not renewed")
			}
			return nil
		})},
		check{"the webhooks' CA put back", func() error { return webhooksHaveCA(c) }},
		check{"the webhook certificate renewed", holds(c, secret, func(secret *corev1.Secret) error {
			if len(secret.Data[corev1.TLSCertKey]) == 0 {
				return fmt.Errorf("keys %v", slices.Collect(maps.Keys(secret.Data)))
			}
			return nil
		})},
		check{"the ConfigurationState's labels put back", holds(c, state, func(state *metallbv1beta1.ConfigurationState) error {
			if len(state.Labels) == 0 {
				return errors.New("no labels")
			}
			return nil
		})},
	); err != nil {
		return done(err)
	}

	// Deletions: of a workload Service, then of the whole WorkloadCluster.
	if err := w.Delete(ctx, wsvc); err != nil {
		t.Fatal(err)
	}
	if err := wait(
		check{"the projection of a deleted Service removed", func() error { return gone(c, projected) }},
		check{"its finalizer taken off", func() error { return gone(w, wsvc) }},
	); err != nil {
		return done(err)
	}
	if err := c.Delete(ctx, cluster); err != nil {
		t.Fatal(err)
	}
	if err := wait(
		// A namespace stays Terminating here: no controller empties it.
		check{"the WorkloadCluster's namespace deleted", holds(c, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: lbNamespace}}, func(ns *corev1.Namespace) error {
			if ns.DeletionTimestamp == nil {
				return errors.New("not deleted")
			}
			return nil
		})},
		check{"the WorkloadCluster's finalizer taken off", func() error { return gone(c, cluster) }},
		check{"the workload Service's finalizer taken off", holds(w, wfail, func(svc *corev1.Service) error {
			if slices.Contains(svc.Finalizers, projection.Finalizer) {
				return fmt.Errorf("finalizers %v", svc.Finalizers)
			}
			return nil
		})},
	); err != nil {
		return done(err)
	}
	return done(nil)
}

type check struct {
	what string
	done func() error
}

// holds reads obj (its name and namespace set) and checks it with ok.
func holds[O client.Object](c client.Client, obj O, ok func(O) error) func() error {
	return func() error {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		return ok(obj)
	}
}

// weights checks the endpoint weights of a projected EndpointSlice.
func weights(want string) func(*discoveryv1.EndpointSlice) error {
	return func(slice *discoveryv1.EndpointSlice) error {
		if got := slice.Annotations[maglbv1alpha1.AnnotationEndpointWeights]; got != want {
			return fmt.Errorf("weights %q", got)
		}
		return nil
	}
}

// start runs the controller binary with the ServiceAccount's kubeconfig, its output into
// logPath (appended), and returns what stops it.
func (s *rbacSetup) start(t *testing.T, logPath string, metricsPort int, env []string) (stop func()) {
	t.Helper()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(s.bin, "--kubeconfig", s.kubeconfig, "--namespace", metallbNamespace,
		fmt.Sprintf("--port=%d", metricsPort), fmt.Sprintf("--health-probe-port=%d", testenv.FreePort(t)),
		"--webhook-host=127.0.0.1", fmt.Sprintf("--webhook-port=%d", testenv.FreePort(t)), "--cert-dir="+t.TempDir())
	cmd.Env = append(append(badsettings.CleanEnv(), "METALLB_POD_NAME="+rbacPod), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	var stopped atomic.Bool
	return func() {
		if stopped.Swap(true) {
			return
		}
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
}

// workloadService creates a LoadBalancer Service in the workload cluster's namespace.
func workloadService(t *testing.T, c client.Client, name string, annotations map[string]string) *corev1.Service {
	t.Helper()
	svc := newService(workloadNamespace, name, func(svc *corev1.Service) {
		svc.Annotations = annotations
		svc.Spec.Selector = map[string]string{"app": name}
	})
	if err := c.Create(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	return svc
}

// mutate reads obj, changes it and writes it back (as an administrator).
func mutate(t *testing.T, c client.Client, obj client.Object, change func()) {
	t.Helper()
	if _, err := testenv.CreateOrUpdate(c, obj, change); err != nil {
		t.Fatal(err)
	}
}

// resetControllerState removes what an earlier run left that the next must make again: the
// webhook certificate and registration, the CA of the conversion, the leader's Lease, the
// ConfigurationState. A WorkloadCluster a refused run left keeps no finalizer.
func resetControllerState(t *testing.T, c client.Client) {
	t.Helper()
	ctx := context.Background()
	for _, obj := range []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: "metallb-webhook-cert"}},
		&admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: webhooks.ConfigurationName}},
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: leaderElectionID}},
		&metallbv1beta1.ConfigurationState{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: "controller"}},
	} {
		if err := client.IgnoreNotFound(c.Delete(ctx, obj)); err != nil {
			t.Fatal(err)
		}
	}
	clearWebhookCA(t, c)
	var clusters maglbv1alpha1.WorkloadClusterList
	if err := c.List(ctx, &clusters); err != nil {
		t.Fatal(err)
	}
	for i := range clusters.Items {
		wc := &clusters.Items[i]
		if len(wc.Finalizers) > 0 {
			wc.Finalizers = nil
			if err := c.Update(ctx, wc); client.IgnoreNotFound(err) != nil {
				t.Fatal(err)
			}
		}
		if err := client.IgnoreNotFound(c.Delete(ctx, wc)); err != nil {
			t.Fatal(err)
		}
	}
}

// clearWebhookCA takes the CA out of the BGPPeer conversion (and of the webhook
// configuration, if there is one).
func clearWebhookCA(t *testing.T, c client.Client) {
	t.Helper()
	ctx := context.Background()
	var crd apiextensionsv1.CustomResourceDefinition
	if err := c.Get(ctx, client.ObjectKey{Name: "bgppeers.metallb.io"}, &crd); err != nil {
		t.Fatal(err)
	}
	if conv := crd.Spec.Conversion; conv != nil && conv.Webhook != nil && conv.Webhook.ClientConfig != nil {
		conv.Webhook.ClientConfig.CABundle = nil
		if err := c.Update(ctx, &crd); err != nil {
			t.Fatal(err)
		}
	}
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	err := c.Get(ctx, client.ObjectKey{Name: webhooks.ConfigurationName}, &vwc)
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	for i := range vwc.Webhooks {
		vwc.Webhooks[i].ClientConfig.CABundle = nil
	}
	if err := c.Update(ctx, &vwc); err != nil {
		t.Fatal(err)
	}
}

func hasIngress(c client.Client, svc *corev1.Service) error {
	var got corev1.Service
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(svc), &got); err != nil {
		return err
	}
	if len(got.Status.LoadBalancer.Ingress) == 0 {
		return errors.New("no IP")
	}
	return nil
}

// eventCount checks that svc has an event of reason that happened at least want times.
func eventCount(c client.Client, svc *corev1.Service, reason string, want int32) error {
	var events corev1.EventList
	if err := c.List(context.Background(), &events, client.InNamespace(svc.Namespace)); err != nil {
		return err
	}
	var got int32
	for _, e := range events.Items {
		if e.InvolvedObject.Kind == "Service" && e.InvolvedObject.Name == svc.Name && e.Reason == reason {
			got = max(got, e.Count, 1)
		}
	}
	if got < want {
		return fmt.Errorf("%s %d times", reason, got)
	}
	return nil
}

func webhooksHaveCA(c client.Client) error {
	ctx := context.Background()
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: webhooks.ConfigurationName}, &vwc); err != nil {
		return fmt.Errorf("webhook configuration: %w", err)
	}
	if len(vwc.Webhooks) == 0 || len(vwc.Webhooks[0].ClientConfig.CABundle) == 0 {
		return errors.New("webhooks without a CA")
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := c.Get(ctx, client.ObjectKey{Name: "bgppeers.metallb.io"}, &crd); err != nil {
		return err
	}
	if conv := crd.Spec.Conversion; conv == nil || conv.Webhook == nil || conv.Webhook.ClientConfig == nil || len(conv.Webhook.ClientConfig.CABundle) == 0 {
		return errors.New("BGPPeer conversion without a CA")
	}
	return nil
}

func gone(c client.Client, obj client.Object) error {
	err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("still there (finalizers %v)", obj.GetFinalizers())
}

// scrape GETs the metrics over HTTPS with token.
func scrape(port int, token string) error {
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/metrics", port), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("metrics: %s", resp.Status)
	}
	return nil
}
