// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-kit/log"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/logging"
	"github.com/maglb/maglb/internal/rbactest"
	"github.com/maglb/maglb/internal/testenv"
	"github.com/maglb/maglb/upstream/webhooks"
)

// controllerRBAC is what the controller's manifest grants it.
var controllerRBAC = []string{"config/rbac/service_accounts.yaml", "config/rbac/controller.yaml"}

// The controller, run as deployed (leader election, webhooks registered with a certificate
// of its own, metrics over HTTPS) with a token of its ServiceAccount bound to exactly the
// manifest's RBAC, does its job: a Service gets an IP and its IPAllocated event, the webhooks
// and the BGPPeer conversion carry its CA, its metrics answer a reader.
func TestControllerRBAC(t *testing.T) {
	env := startAPIServer(t)
	ctx := context.Background()
	rbac, cfg, _ := rbactest.Grant(t, env, metallbNamespace, "controller", controllerRBAC...)
	if err := env.Client.Create(ctx, newPool("rbac", []string{"10.129.0.0/16"}, nil)); err != nil {
		t.Fatal(err)
	}
	reader, err := env.MetricsReaderToken(ctx, "prometheus")
	if err != nil {
		t.Fatal(err)
	}

	if err := controllerJob(t, env, cfg, reader, "full", time.Minute); err != nil {
		t.Fatalf("with the manifest's RBAC: %v", err)
	}
	if os.Getenv("MAGLB_RBAC_TABLE") != "1" {
		t.Log("the minus-one-verb table runs with MAGLB_RBAC_TABLE=1 (about 20 minutes)")
		return
	}
	// One verb of one resource removed at a time. A verb the job still does without is
	// reported, not failed: this job starts once and ends, so the projection's verbs are not
	// exercised; which of them can go is still open (the speaker's table, which asserts, is
	// speaker/rbac_test.go).
	user := rbactest.ServiceAccountUser(metallbNamespace, "controller")
	for _, row := range rbactest.Rows(rbac) {
		t.Run(row.String(), func(t *testing.T) {
			if err := row.Remove(ctx, env.Client, user); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := row.Restore(ctx, env.Client, user); err != nil {
					t.Fatal(err)
				}
			}()
			if err := controllerJob(t, env, cfg, reader, row.ID(), 20*time.Second); err == nil {
				t.Logf("done without %s", row)
			} else {
				t.Logf("fails without %s: %v", row, err)
			}
		})
	}
}

// controllerJob runs the controller with cfg until its job is done or timeout passes.
func controllerJob(t *testing.T, env *testenv.Env, cfg *rest.Config, reader, id string, timeout time.Duration) error {
	ctx := context.Background()
	svc := newService(metallbNamespace, "rbac-"+id, nil)
	if err := env.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := env.Client.Delete(ctx, svc); err != nil {
			t.Error(err)
		}
	}()
	resetControllerState(t, env.Client)
	metricsPort := testenv.FreePort(t)
	o := options{
		Options:             k8s.Options{Namespace: metallbNamespace, LogLevel: "info", MetricsPort: metricsPort, MetricsSecure: true, HealthProbePort: testenv.FreePort(t)},
		webhookMode:         webhookEnabled,
		webhookHost:         "127.0.0.1",
		webhookPort:         testenv.FreePort(t),
		certDir:             t.TempDir(),
		certServiceName:     "metallb-webhook-service",
		webhookSecret:       "metallb-webhook-cert",
		disableCertRotation: false,
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	logPath := filepath.Join(t.TempDir(), "controller.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	logger := log.NewLogfmtLogger(log.NewSyncWriter(logFile))
	ctrl.SetLogger(logging.Logr(logger))
	go func() { done <- run(runCtx, cfg, o, logger) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("the controller did not stop within 30 s")
		}
	}()

	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("the controller exited: %v", err)
		default:
		}
		if last = jobDone(ctx, env.Client, svc, metricsPort, reader); last == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("%w; the controller's log ends:\n%s", last, logTail(logPath, 8))
}

// resetControllerState removes what an earlier run left that the next must make again: the
// webhook certificate and registration, the CA of the conversion, the leader's Lease.
func resetControllerState(t *testing.T, c client.Client) {
	t.Helper()
	ctx := context.Background()
	for _, obj := range []client.Object{
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: "metallb-webhook-cert"}},
		&admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: webhooks.ConfigurationName}},
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: metallbNamespace, Name: "maglb-controller"}},
	} {
		if err := client.IgnoreNotFound(c.Delete(ctx, obj)); err != nil {
			t.Fatal(err)
		}
	}
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
}

// jobDone reports what of the controller's job is not done yet.
func jobDone(ctx context.Context, c client.Client, svc *corev1.Service, metricsPort int, reader string) error {
	var got corev1.Service
	if err := c.Get(ctx, client.ObjectKeyFromObject(svc), &got); err != nil {
		return err
	}
	if len(got.Status.LoadBalancer.Ingress) == 0 {
		return errors.New("no IP")
	}
	var events corev1.EventList
	if err := c.List(ctx, &events, client.InNamespace(svc.Namespace), client.MatchingFields{"involvedObject.name": svc.Name}); err != nil {
		return err
	}
	if !slices.ContainsFunc(events.Items, func(e corev1.Event) bool { return e.Reason == "IPAllocated" }) {
		return errors.New("no IPAllocated event")
	}
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
	return scrape(metricsPort, reader)
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
