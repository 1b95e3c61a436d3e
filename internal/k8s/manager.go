// SPDX-License-Identifier: Apache-2.0

package k8s

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/maglb/maglb/internal/upstreamflags"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// Client-side rate limits towards the API server; the server's own priority and fairness
// protects it.
const (
	apiQPS   = 1000
	apiBurst = 2000
)

// cacheSyncTimeout bounds the wait for the first lists of the watched objects.
const cacheSyncTimeout = 10 * time.Minute

// DefaultHealthProbePort is upstream's, which its manifests' probes use.
const DefaultHealthProbePort = 17472

// Options are the flags and environment the controller and the speaker share, named as
// upstream's. The kubeconfig comes from --kubeconfig or KUBECONFIG (registered by
// controller-runtime), else the in-cluster service account. Upstream's other flags are in
// Upstream, bound per component by its own Bind.
type Options struct {
	Namespace       string
	LogLevel        string
	MetricsPort     int
	HealthProbePort int
	// MetricsSecure serves /metrics over HTTPS to authenticated and authorized clients, as
	// upstream v0.16; false serves plain HTTP to anyone, as upstream v0.15.
	MetricsSecure bool
	// BindHost is the address metrics and probes listen on; empty is every address.
	BindHost string
	Upstream upstreamflags.Flags
}

// Bind registers the shared flags on fs; metricsPort is the component's default.
func (o *Options) Bind(fs *flag.FlagSet, metricsPort int) {
	fs.StringVar(&o.Namespace, "namespace", envOr("METALLB_NAMESPACE", "metallb-system"), "namespace of the metallb.io objects and Secrets")
	fs.StringVar(&o.LogLevel, "log-level", "info", "log level: all, debug, info, warn, error or none")
	fs.IntVar(&o.MetricsPort, "port", metricsPort, "port for Prometheus metrics (HTTPS, or plain HTTP with --metrics-secure=false); 0 disables them")
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", true, "serve /metrics over HTTPS (the --metrics-cert-dir certificate, else a self-signed one) to clients whose token the API server authenticates and allows to get /metrics; false serves plain HTTP to anyone")
	fs.IntVar(&o.HealthProbePort, "health-probe-port", DefaultHealthProbePort, "HTTP port of /healthz and /readyz; 0 disables them")
}

// Validate checks the shared flags, so that a bad value stops the binary before it starts
// anything.
func (o *Options) Validate() error {
	if problems := validation.IsDNS1123Label(o.Namespace); len(problems) > 0 {
		return fmt.Errorf("--namespace (METALLB_NAMESPACE) %q is not a namespace name: %s", o.Namespace, strings.Join(problems, "; "))
	}
	if err := checkKubeconfigEnv(); err != nil {
		return err
	}
	if err := CheckPort("port", o.MetricsPort, true); err != nil {
		return err
	}
	if err := CheckPort("health-probe-port", o.HealthProbePort, true); err != nil {
		return err
	}
	if err := CheckHost(o.BindHost); err != nil {
		return err
	}
	return o.Upstream.Validate()
}

// BindHost registers upstream v0.15's --host (METALLB_HOST) on fs: on the host network every
// address of the node would expose a component's listeners, its manifest narrows them to
// the node's IP.
func BindHost(fs *flag.FlagSet, host *string) {
	fs.StringVar(host, "host", os.Getenv("METALLB_HOST"), "the address to listen on (the node's IP); empty is every address")
}

// CheckHost refuses a --host that is not an IP address.
func CheckHost(host string) error {
	if _, err := netip.ParseAddr(host); host != "" && err != nil {
		return fmt.Errorf("--host (METALLB_HOST) %q is not an IP address to listen on", host)
	}
	return nil
}

// checkKubeconfigEnv refuses a KUBECONFIG naming a file that does not exist, when
// --kubeconfig does not replace it: client-go would skip it silently and report only that no
// configuration was provided.
func checkKubeconfigEnv() error {
	paths := os.Getenv("KUBECONFIG")
	if f := flag.CommandLine.Lookup("kubeconfig"); paths == "" || f != nil && f.Value.String() != "" {
		return nil
	}
	for _, path := range filepath.SplitList(paths) {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("KUBECONFIG %s: %w", paths, err)
		}
	}
	return nil
}

// CheckPort refuses a --name port outside 1-65535; 0 too unless zeroDisables.
func CheckPort(name string, port int, zeroDisables bool) error {
	if port >= 1 && port <= 65535 || port == 0 && zeroDisables {
		return nil
	}
	return fmt.Errorf("--%s %d is not a port number between 1 and 65535", name, port)
}

// CheckNodeName refuses a --node-name that no Node can have (empty passes: the caller says
// whether it needs one).
func CheckNodeName(name string) error {
	if problems := validation.IsDNS1123Subdomain(name); name != "" && len(problems) > 0 {
		return fmt.Errorf("--node-name (METALLB_NODE_NAME) %q is not a node name: %s", name, strings.Join(problems, "; "))
	}
	return nil
}

// CheckLBClass refuses a --lb-class no Service can have: spec.loadBalancerClass is a
// label-style key.
func CheckLBClass(class string) error {
	if problems := validation.IsQualifiedName(class); class != "" && len(problems) > 0 {
		return fmt.Errorf("--lb-class %q is not a load balancer class: %s", class, strings.Join(problems, "; "))
	}
	return nil
}

// ManagerOptions returns manager options serving metrics, probes and pprof as configured,
// with the metallb.io objects and Secrets cached from the namespace only: RBAC grants them
// there, and a cluster-wide watch, refused, would keep the cache from ever syncing.
func (o *Options) ManagerOptions() manager.Options {
	return manager.Options{
		Scheme:                 NewScheme(),
		Metrics:                o.metricsOptions(),
		HealthProbeBindAddress: bindAddress(o.BindHost, o.HealthProbePort),
		PprofBindAddress:       o.Upstream.PprofBindAddress,
		Cache: cache.Options{
			ByObject: inNamespace(o.Namespace,
				&corev1.Secret{}, &metallbv1beta1.ConfigurationState{}, &maglbv1beta1.IPAddressPool{}, &metallbv1beta2.BGPPeer{},
				&metallbv1beta1.BFDProfile{}, &metallbv1beta1.BGPAdvertisement{}, &metallbv1beta1.L2Advertisement{},
				&metallbv1beta1.Community{},
			),
			// No component reads managedFields, and at 10,000 Services they are a good part of
			// every cached object (and of every copy read from the cache).
			DefaultTransform: cache.TransformStripManagedFields(),
		},
		// A binary runs one manager, but its tests run the same wiring repeatedly in one
		// process; controller names need not be unique process-wide. The first lists of many
		// speakers starting at once (tens of nodes, 10,000 Services) take longer than
		// controller-runtime's 2 minutes on a loaded API server: ending the process then only
		// starts the lists over, so the caches get cacheSyncTimeout.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true), CacheSyncTimeout: cacheSyncTimeout},
	}
}

func inNamespace(namespace string, objs ...client.Object) map[client.Object]cache.ByObject {
	byObject := map[client.Object]cache.ByObject{}
	for _, o := range objs {
		byObject[o] = cache.ByObject{Namespaces: map[string]cache.Config{namespace: {}}}
	}
	return byObject
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

// metricsOptions serves /metrics as upstream v0.16 does: HTTPS with the --metrics-cert-dir
// certificate (a self-signed one without it), to clients the API server authenticates (a
// TokenReview) and authorizes (a SubjectAccessReview for GET /metrics). --metrics-secure=false
// serves plain HTTP to anyone, as upstream v0.15. --enable-pprof adds pprof.
func (o *Options) metricsOptions() metricsserver.Options {
	opts := metricsserver.Options{BindAddress: bindAddress(o.BindHost, o.MetricsPort)}
	if o.MetricsSecure {
		opts.SecureServing = true
		opts.CertDir = o.Upstream.MetricsCertDir
		opts.TLSOpts = []func(*tls.Config){o.Upstream.TLSOpt}
		opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	if o.Upstream.EnablePprof {
		opts.ExtraHandlers = map[string]http.Handler{
			"/debug/pprof/":        http.HandlerFunc(pprof.Index),
			"/debug/pprof/cmdline": http.HandlerFunc(pprof.Cmdline),
			"/debug/pprof/profile": http.HandlerFunc(pprof.Profile),
			"/debug/pprof/symbol":  http.HandlerFunc(pprof.Symbol),
			"/debug/pprof/trace":   http.HandlerFunc(pprof.Trace),
		}
	}
	return opts
}

// bindAddress is host:port, every address when host is empty; port 0 disables the server.
func bindAddress(host string, port int) string {
	if port == 0 {
		return "0"
	}
	return net.JoinHostPort(host, fmt.Sprint(port))
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}
