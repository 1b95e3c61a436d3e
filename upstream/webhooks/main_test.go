// SPDX-License-Identifier: Apache-2.0

package webhooks_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"

	"github.com/go-kit/log"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/maglb/maglb/internal/bgp"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/k8s/configstate"
	"github.com/maglb/maglb/internal/logging"
	"github.com/maglb/maglb/internal/testenv"
	"github.com/maglb/maglb/upstream/webhooks"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m))
}

// components is the controller's webhooks and configuration reconciler, and optionally a
// speaker's reconciler, running in the test process against the real API server.
type components struct {
	env       *testenv.Env
	namespace string

	mu         sync.Mutex
	controller *config.Config // last configuration the controller applied
	applies    int            // how many times it applied one
}

// startComponents serves the webhooks and runs the reconcilers for namespace until the test
// ends. With speakerNode set, a speaker reconciler for that node runs too.
func startComponents(t *testing.T, namespace, speakerNode string) *components {
	t.Helper()
	env := testenv.Get(t)
	c := &components{env: env, namespace: namespace}
	ctx, cancel := context.WithCancel(context.Background())

	ns := &corev1.Namespace{}
	ns.Name = namespace
	if err := env.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	port := testenv.FreePort(t)
	healthPort := testenv.FreePort(t)
	certDir := t.TempDir()
	logger := log.NewNopLogger()
	if testing.Verbose() {
		logger = log.NewLogfmtLogger(os.Stderr)
	}
	ctrl.SetLogger(logging.Logr(logger))
	mgr, err := k8s.NewManager(env.Config, manager.Options{
		Scheme:                 k8s.NewScheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: fmt.Sprintf("127.0.0.1:%d", healthPort),
		WebhookServer:          webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, CertDir: certDir}),
		// Every test starts the same controllers in a new manager.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := webhooks.Serve(ctx, mgr, webhooks.ServeOptions{
		Namespace:         namespace,
		Validate:          config.DontValidate,
		Endpoint:          webhooks.Endpoint{Host: "127.0.0.1", Port: port},
		ManageCertificate: true,
		SecretName:        "metallb-webhook-cert",
		CertDir:           certDir,
		Logger:            logger,
	}); err != nil {
		t.Fatal(err)
	}
	controller := &configstate.Reconciler{
		Client: mgr.GetClient(), Namespace: namespace, Validate: config.DontValidate,
		StateName: "controller", StateLabels: configstate.NewStateLabels("controller", ""),
		Apply: func(cfg *config.Config) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.controller, c.applies = cfg, c.applies+1
		},
		Logger: logger,
	}
	if err := controller.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	if speakerNode != "" {
		speaker := &configstate.Reconciler{
			Client: mgr.GetClient(), Namespace: namespace, NodeName: speakerNode, Validate: config.ValidationFor("native"),
			StateName: "speaker-" + speakerNode, StateLabels: configstate.NewStateLabels("speaker", speakerNode),
			Apply: func(*config.Config) {}, Ignored: bgp.Ignored, Logger: logger,
		}
		if err := speaker.SetupWithManager(mgr); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	testenv.EventuallyTrue(t, "webhook server ready", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return c
}

// applied returns the configuration in effect in the controller and how often it changed.
func (c *components) applied() (*config.Config, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.controller, c.applies
}

// kubectl runs kubectl against the package's API server.
func kubectl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return testenv.Get(t).Kubectl(args...)
}
