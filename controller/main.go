// SPDX-License-Identifier: Apache-2.0

// Command controller is MagLB's cluster-wide controller: it serves the metallb.io admission and
// conversion webhooks, turns the metallb.io objects into the configuration in effect and
// reports it in the "controller" ConfigurationState; it also projects the LoadBalancer Services
// of registered workload clusters (WorkloadCluster). Flags and environment follow upstream
// MetalLB's controller.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	maglbv1alpha1 "github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/k8s/configstate"
	"github.com/maglb/maglb/internal/k8s/projectioncontroller"
	"github.com/maglb/maglb/internal/k8s/servicecontroller"
	"github.com/maglb/maglb/internal/logging"
	"github.com/maglb/maglb/internal/upstreamflags"
	"github.com/maglb/maglb/upstream/webhooks"
)

// Webhook modes, as upstream's --webhook-mode.
const (
	webhookEnabled  = "enabled"
	webhookDisabled = "disabled"
	webhookOnly     = "onlywebhook"
)

type options struct {
	k8s.Options
	webhookMode           string
	webhookHost           string
	webhookPort           int
	certDir               string
	certServiceName       string
	webhookSecret         string
	disableCertRotation   bool
	loadBalancerClass     string
	disableLeaderElection bool
	podName               string
}

// Leader election: the Lease and its timings (controller-runtime's defaults).
const (
	leaderElectionID = "maglb-controller"
	leaseDuration    = 15 * time.Second
	renewDeadline    = 10 * time.Second
	retryPeriod      = 2 * time.Second
)

// errLeadershipLost is controller-runtime's error when the leader could not renew its Lease
// within the renew deadline (it offers no sentinel to match).
const errLeadershipLost = "leader election lost"

func main() {
	o := bindFlags(flag.CommandLine)
	flag.Parse()
	if o.webhookHost == "" && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		// Outside a cluster no Service leads here; a local API server (the lab) reaches us
		// on loopback, so a bare KUBECONFIG is enough to run against it.
		o.webhookHost = "127.0.0.1"
	}

	logging.Main(o.LogLevel, func(logger log.Logger) error {
		if err := o.validate(); err != nil {
			return err
		}
		ctx, restConfig := ctrl.SetupSignalHandler(), ctrl.GetConfigOrDie()
		err := run(ctx, restConfig, *o, logger)
		if err == nil || err.Error() != errLeadershipLost || ctx.Err() != nil {
			return err
		}
		level.Warn(logger).Log("op", "leaderElection", "error", err,
			"msg", "the Lease could not be renewed (API server unreachable?): starting over as a candidate once the API server answers")
		if !apiServerAnswers(ctx, restConfig) {
			return nil // stopped meanwhile
		}
		return startOver()
	})
}

// apiServerAnswers waits until the API server reports itself ready, and tells whether it did
// before ctx ended: the new run fails at once if a start-up call fails.
func apiServerAnswers(ctx context.Context, restConfig *rest.Config) bool {
	dc, err := discovery.NewDiscoveryClientForConfig(restConfig)
	if err != nil {
		return true // the new run reports it
	}
	for {
		if _, err := dc.RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err == nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}

// startOver replaces the process with a new run of the same binary, arguments and
// environment: after the Lease was lost, controller-runtime's allocators may still be
// running, and only a new process is sure to have none. The process (its PID, its pod's
// container) stays: no restart count, no crash-loop back-off after an API server outage, and
// with --pod-name the new run takes the Lease back as soon as the API server answers.
func startOver() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("starting over: %w", err)
	}
	return syscall.Exec(self, os.Args, os.Environ())
}

// validate refuses bad flag values before anything starts.
func (o *options) validate() error {
	if err := o.Options.Validate(); err != nil {
		return err
	}
	switch o.webhookMode {
	case webhookEnabled, webhookDisabled, webhookOnly:
	default:
		return fmt.Errorf("--webhook-mode %q is not one of enabled, disabled, onlywebhook", o.webhookMode)
	}
	if err := k8s.CheckPort("webhook-port", o.webhookPort, false); err != nil {
		return err
	}
	if o.webhookHost != "" && net.ParseIP(o.webhookHost) == nil && len(validation.IsDNS1123Subdomain(o.webhookHost)) > 0 {
		return fmt.Errorf("--webhook-host %q is neither an IP address nor a host name", o.webhookHost)
	}
	if info, err := os.Stat(o.certDir); err == nil && !info.IsDir() {
		return fmt.Errorf("--cert-dir %s is not a directory", o.certDir)
	}
	if problems := validation.IsDNS1035Label(o.certServiceName); len(problems) > 0 {
		return fmt.Errorf("--cert-service-name %q is not a Service name: %s", o.certServiceName, strings.Join(problems, "; "))
	}
	if problems := validation.IsDNS1123Subdomain(o.webhookSecret); len(problems) > 0 {
		return fmt.Errorf("--webhook-secret %q is not a Secret name: %s", o.webhookSecret, strings.Join(problems, "; "))
	}
	if problems := validation.IsDNS1123Subdomain(o.podName); o.podName != "" && len(problems) > 0 {
		return fmt.Errorf("--pod-name (METALLB_POD_NAME) %q is not a pod name: %s", o.podName, strings.Join(problems, "; "))
	}
	return k8s.CheckLBClass(o.loadBalancerClass)
}

// bindFlags registers the controller's flags, upstream's included, on fs.
func bindFlags(fs *flag.FlagSet) *options {
	var o options
	o.Options.Bind(fs, 7472)
	o.Upstream.Bind(fs, upstreamflags.Controller)
	fs.StringVar(&o.webhookMode, "webhook-mode", webhookEnabled, "webhook mode: enabled, disabled, or onlywebhook to act as the webhook endpoint only")
	fs.StringVar(&o.webhookHost, "webhook-host", "", "address the API server reaches the webhook server at when the controller runs outside the cluster (default there: 127.0.0.1, for an API server on the same host); in a cluster the --cert-service-name Service is used")
	fs.IntVar(&o.webhookPort, "webhook-port", 9443, "webhook server port")
	fs.StringVar(&o.certDir, "cert-dir", "/tmp/k8s-webhook-server/serving-certs", "directory holding the webhook server's tls.crt and tls.key")
	fs.StringVar(&o.certServiceName, "cert-service-name", "metallb-webhook-service", "the Service the API server reaches the webhooks through, named in the certificate")
	fs.StringVar(&o.webhookSecret, "webhook-secret", "metallb-webhook-cert", "the Secret the self-managed webhook certificate is kept in")
	fs.BoolVar(&o.disableCertRotation, "disable-cert-rotation", false, "use the certificate found in --cert-dir and leave the webhook configuration alone")
	fs.StringVar(&o.loadBalancerClass, "lb-class", "", "load balancer class: when set, only Services of this spec.loadBalancerClass are handled")
	fs.BoolVar(&o.disableLeaderElection, "disable-leader-election", false, "allocate without electing a leader (run a single replica then)")
	fs.StringVar(&o.podName, "pod-name", os.Getenv("METALLB_POD_NAME"), "name of this replica's pod: its leader-election identity, so that its container restarted takes the Lease back at once (default: the host name and a random suffix)")
	return &o
}

func run(ctx context.Context, restConfig *rest.Config, o options, logger log.Logger) error {
	level.Info(logger).Log("op", "startup", "msg", "MagLB controller starting", "namespace", o.Namespace, "webhook-mode", o.webhookMode)
	o.Upstream.LogIgnored(logger)

	mgrOptions := o.ManagerOptions()
	if o.webhookMode != webhookDisabled {
		mgrOptions.WebhookServer = webhook.NewServer(webhook.Options{Port: o.webhookPort, CertDir: o.certDir, TLSOpts: o.Upstream.WebhookTLSOpts()})
	}
	// Replicas share the work by leader election: only the leader allocates. Every replica
	// serves the webhooks.
	mgrOptions.LeaderElection = !o.disableLeaderElection
	mgrOptions.LeaderElectionReleaseOnCancel = true
	mgrOptions.LeaseDuration, mgrOptions.RenewDeadline, mgrOptions.RetryPeriod = ptr.To(leaseDuration), ptr.To(renewDeadline), ptr.To(retryPeriod)
	if mgrOptions.LeaderElection {
		identity := o.podName
		if identity == "" {
			host, err := os.Hostname()
			if err != nil {
				return err
			}
			identity = host + "_" + string(uuid.NewUUID())
		}
		lock, err := resourcelock.NewFromKubeconfig(resourcelock.LeasesResourceLock, o.Namespace, leaderElectionID,
			resourcelock.ResourceLockConfig{Identity: identity}, rest.AddUserAgent(restConfig, "leader-election"), renewDeadline)
		if err != nil {
			return err
		}
		mgrOptions.LeaderElectionResourceLockInterface = lock
		level.Info(logger).Log("op", "leaderElection", "lease", o.Namespace+"/"+leaderElectionID, "identity", identity)
	}
	mgr, err := k8s.NewManager(restConfig, mgrOptions)
	if err != nil {
		return err
	}
	// Admission and the controller accept what any BGP implementation supports, so every
	// upstream configuration is admitted; each speaker reports what its own cannot do.
	validate := config.DontValidate

	if o.webhookMode != webhookDisabled {
		endpoint := webhooks.Endpoint{Service: &types.NamespacedName{Namespace: o.Namespace, Name: o.certServiceName}}
		if o.webhookHost != "" {
			endpoint = webhooks.Endpoint{Host: o.webhookHost, Port: o.webhookPort}
		}
		if err := webhooks.Serve(ctx, mgr, webhooks.ServeOptions{
			Namespace:         o.Namespace,
			Validate:          validate,
			Endpoint:          endpoint,
			ManageCertificate: !o.disableCertRotation,
			SecretName:        o.webhookSecret,
			CertDir:           o.certDir,
			Logger:            logger,
		}); err != nil {
			return err
		}
	}
	if o.webhookMode != webhookOnly {
		recorder, err := k8s.NewEventRecorder(mgr, "metallb-controller", logger)
		if err != nil {
			return err
		}
		services := &servicecontroller.Reconciler{
			Client:    mgr.GetClient(),
			Recorder:  recorder,
			LBClass:   o.loadBalancerClass,
			Namespace: o.Namespace,
			Logger:    logger,
		}
		if err := services.SetupWithManager(mgr); err != nil {
			return err
		}
		configs := &configstate.Reconciler{
			Client:      mgr.GetClient(),
			Namespace:   o.Namespace,
			Validate:    validate,
			StateName:   "controller",
			StateLabels: configstate.NewStateLabels("controller", ""),
			Apply:       services.SetConfig,
			Recorder:    recorder,
			Logger:      logger,
		}
		if err := configs.SetupWithManager(mgr); err != nil {
			return err
		}
		if err := setupProjection(mgr, restConfig, o, logger); err != nil {
			return err
		}
	}
	return mgr.Start(ctx)
}

// setupProjection runs the projection of workload clusters when the API server serves
// WorkloadClusters; a cluster with upstream's CRDs only runs without it.
func setupProjection(mgr ctrl.Manager, restConfig *rest.Config, o options, logger log.Logger) error {
	served, err := servesWorkloadClusters(restConfig)
	if err != nil {
		return err
	}
	if !served {
		level.Info(logger).Log("op", "startup", "msg", "projection disabled: the API server does not serve maglb.io/v1alpha1 workloadclusters (install config/crd to enable it)")
		return nil
	}
	projections := &projectioncontroller.Reconciler{
		Client:    mgr.GetClient(),
		Namespace: o.Namespace,
		LBClass:   o.loadBalancerClass,
		Logger:    logger,
	}
	return projections.SetupWithManager(mgr)
}

func servesWorkloadClusters(restConfig *rest.Config) (bool, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(restConfig)
	if err != nil {
		return false, err
	}
	resources, err := dc.ServerResourcesForGroupVersion(maglbv1alpha1.GroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discovering %s: %w", maglbv1alpha1.GroupVersion, err)
	}
	return slices.ContainsFunc(resources.APIResources, func(r metav1.APIResource) bool { return r.Name == "workloadclusters" }), nil
}
