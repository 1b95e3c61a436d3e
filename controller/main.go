// SPDX-License-Identifier: Apache-2.0

// Command controller is MagLB's cluster-wide controller: it serves the metallb.io admission and
// conversion webhooks, turns the metallb.io objects into the configuration in effect and
// reports it in the "controller" ConfigurationState. Flags and environment follow upstream
// MetalLB's controller.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/k8s/configstate"
	"github.com/maglb/maglb/internal/logging"
	"github.com/maglb/maglb/internal/webhookcert"
	"github.com/maglb/maglb/upstream/webhooks"
)

// Webhook modes, as upstream's --webhook-mode.
const (
	webhookEnabled  = "enabled"
	webhookDisabled = "disabled"
	webhookOnly     = "onlywebhook"
)

// certRecheckInterval is how often the self-managed certificate is checked for renewal.
const certRecheckInterval = time.Hour

type options struct {
	k8s.Options
	webhookMode         string
	webhookHost         string
	webhookPort         int
	certDir             string
	certServiceName     string
	webhookSecret       string
	disableCertRotation bool
	loadBalancerClass   string
}

func main() {
	var o options
	o.Options.Bind(flag.CommandLine, 7472)
	flag.StringVar(&o.webhookMode, "webhook-mode", webhookEnabled, "webhook mode: enabled, disabled, or onlywebhook to act as the webhook endpoint only")
	flag.StringVar(&o.webhookHost, "webhook-host", "", "address the API server reaches the webhook server at, when the controller runs outside the cluster; empty: through the --cert-service-name Service")
	flag.IntVar(&o.webhookPort, "webhook-port", 9443, "webhook server port")
	flag.StringVar(&o.certDir, "cert-dir", "/tmp/k8s-webhook-server/serving-certs", "directory holding the webhook server's tls.crt and tls.key")
	flag.StringVar(&o.certServiceName, "cert-service-name", "metallb-webhook-service", "the Service the API server reaches the webhooks through, named in the certificate")
	flag.StringVar(&o.webhookSecret, "webhook-secret", "metallb-webhook-cert", "the Secret the self-managed webhook certificate is kept in")
	flag.BoolVar(&o.disableCertRotation, "disable-cert-rotation", false, "use the certificate found in --cert-dir and leave the webhook configuration alone")
	flag.StringVar(&o.loadBalancerClass, "lb-class", "", "load balancer class: when set, only Services of this spec.loadBalancerClass are handled")
	flag.Parse()

	logger, err := logging.New(o.LogLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := run(ctrl.SetupSignalHandler(), o, logger); err != nil {
		level.Error(logger).Log("op", "startup", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, logger log.Logger) error {
	switch o.webhookMode {
	case webhookEnabled, webhookDisabled, webhookOnly:
	default:
		return fmt.Errorf("--webhook-mode %q is not one of enabled, disabled, onlywebhook", o.webhookMode)
	}
	level.Info(logger).Log("op", "startup", "msg", "MagLB controller starting", "namespace", o.Namespace, "webhook-mode", o.webhookMode)

	mgrOptions := o.ManagerOptions()
	if o.webhookMode != webhookDisabled {
		mgrOptions.WebhookServer = webhook.NewServer(webhook.Options{Port: o.webhookPort, CertDir: o.certDir})
	}
	mgr, err := k8s.NewManager(mgrOptions)
	if err != nil {
		return err
	}
	validate := config.ValidationFor(o.BGPType)

	if o.webhookMode != webhookDisabled {
		if err := setupWebhooks(ctx, mgr, o, validate, logger); err != nil {
			return err
		}
	}
	if o.webhookMode != webhookOnly {
		reconciler := &configstate.Reconciler{
			Client:      mgr.GetClient(),
			Namespace:   o.Namespace,
			Validate:    validate,
			StateName:   "controller",
			StateLabels: configstate.NewStateLabels("controller", ""),
			Apply: func(cfg *config.Config) {
				level.Info(logger).Log("op", "setConfig", "msg", "configuration in effect", "pools", len(cfg.Pools))
			},
			Logger: logger,
		}
		if err := reconciler.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	return mgr.Start(ctx)
}

// setupWebhooks serves the webhooks and, unless certificates are managed outside, keeps a
// self-signed certificate and the API server's webhook registration in place.
func setupWebhooks(ctx context.Context, mgr manager.Manager, o options, validate config.Validate, logger log.Logger) error {
	validator := &webhooks.Validator{Reader: mgr.GetAPIReader(), Namespace: o.Namespace, Validate: validate, Logger: logger}
	validator.Register(mgr.GetWebhookServer(), mgr.GetScheme())
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	if o.disableCertRotation {
		return nil
	}
	// The manager's client reads from a cache that only starts with the manager; the
	// certificate must be in place before the webhook server starts.
	c, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return err
	}
	endpoint, subject := webhookEndpoint(o)
	ensure := func(ctx context.Context) error {
		bundle, err := webhookcert.Ensure(ctx, c, types.NamespacedName{Namespace: o.Namespace, Name: o.webhookSecret}, subject, o.certDir)
		if err != nil {
			return err
		}
		return webhooks.Install(ctx, c, endpoint, bundle.CA)
	}
	if err := ensure(ctx); err != nil {
		return err
	}
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		ticker := time.NewTicker(certRecheckInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-ticker.C:
				if err := ensure(ctx); err != nil && !errors.Is(err, context.Canceled) {
					level.Error(logger).Log("op", "webhookCertificate", "error", err)
				}
			}
		}
	}))
}

// webhookEndpoint is how the API server reaches this webhook server, and the names its
// certificate must carry.
func webhookEndpoint(o options) (webhooks.Endpoint, webhookcert.Subject) {
	if o.webhookHost == "" {
		service := types.NamespacedName{Namespace: o.Namespace, Name: o.certServiceName}
		return webhooks.Endpoint{Service: &service}, webhookcert.Subject{DNSNames: []string{
			service.Name + "." + service.Namespace + ".svc",
			service.Name + "." + service.Namespace + ".svc.cluster.local",
		}}
	}
	endpoint := webhooks.Endpoint{Host: o.webhookHost, Port: o.webhookPort}
	if ip := net.ParseIP(o.webhookHost); ip != nil {
		return endpoint, webhookcert.Subject{IPs: []net.IP{ip}}
	}
	return endpoint, webhookcert.Subject{DNSNames: []string{o.webhookHost}}
}
