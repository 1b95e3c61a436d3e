// SPDX-License-Identifier: Apache-2.0

package k8s

import (
	"flag"
	"fmt"
	"os"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// Client-side rate limits towards the API server; the server's own priority and fairness
// protects it.
const (
	apiQPS   = 1000
	apiBurst = 2000
)

// Options are the flags and environment the controller and the speaker share, named as
// upstream's. The kubeconfig comes from --kubeconfig or KUBECONFIG (registered by
// controller-runtime), else the in-cluster service account.
type Options struct {
	Namespace       string
	LogLevel        string
	MetricsPort     int
	HealthProbePort int
}

// Bind registers the shared flags on fs; metricsPort is the component's default.
func (o *Options) Bind(fs *flag.FlagSet, metricsPort int) {
	fs.StringVar(&o.Namespace, "namespace", envOr("METALLB_NAMESPACE", "metallb-system"), "namespace of the metallb.io objects and Secrets")
	fs.StringVar(&o.LogLevel, "log-level", "info", "log level: all, debug, info, warn, error or none")
	fs.IntVar(&o.MetricsPort, "port", metricsPort, "HTTP port for Prometheus metrics; 0 disables them")
	fs.IntVar(&o.HealthProbePort, "health-probe-port", metricsPort+1, "HTTP port of /healthz and /readyz; 0 disables them")
}

// ManagerOptions returns manager options serving metrics and probes on the configured ports,
// with Secrets and ConfigurationStates cached from the namespace only (what RBAC grants).
func (o *Options) ManagerOptions() manager.Options {
	return manager.Options{
		Scheme:                 NewScheme(),
		Metrics:                metricsserver.Options{BindAddress: portAddress(o.MetricsPort)},
		HealthProbeBindAddress: portAddress(o.HealthProbePort),
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}:                     {Namespaces: map[string]cache.Config{o.Namespace: {}}},
			&metallbv1beta1.ConfigurationState{}: {Namespaces: map[string]cache.Config{o.Namespace: {}}},
		}},
		// A binary runs one manager, but its tests run the same wiring repeatedly in one
		// process; controller names need not be unique process-wide.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	}
}

// NewManager returns a manager with liveness and readiness checks. It raises client-go's default 20
// requests per second, which would cap allocation at a few Services per second.
func NewManager(cfg *rest.Config, opts manager.Options) (manager.Manager, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = apiQPS, apiBurst
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	// Components add their own readiness checks (the webhooks); this one answers when none do.
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	return mgr, nil
}

func portAddress(port int) string {
	if port == 0 {
		return "0"
	}
	return fmt.Sprintf(":%d", port)
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
