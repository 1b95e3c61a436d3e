// SPDX-License-Identifier: Apache-2.0

package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/webhookcert"
)

// certRecheckInterval is how often the self-managed certificate is checked for renewal and
// the registration repaired.
const certRecheckInterval = time.Hour

// ServeOptions configure the webhooks a manager serves.
type ServeOptions struct {
	Namespace string
	Validate  config.Validate
	Endpoint  Endpoint
	// ManageCertificate keeps a self-signed certificate in Secret SecretName, writes it to
	// CertDir and registers the webhooks with the API server. Off, the certificate in CertDir
	// and the registration are someone else's (cert-manager, the manifests).
	ManageCertificate bool
	SecretName        string
	CertDir           string
	Logger            log.Logger
}

// Serve registers the webhooks on mgr's webhook server, which must use opts.CertDir, and a
// readiness check that passes once they serve.
func Serve(ctx context.Context, mgr manager.Manager, opts ServeOptions) error {
	validator := &Validator{Reader: mgr.GetAPIReader(), Namespace: opts.Namespace, Validate: opts.Validate, Logger: opts.Logger}
	validator.Register(mgr.GetWebhookServer(), mgr.GetScheme())
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	if !opts.ManageCertificate {
		return nil
	}
	// The manager's client reads through a cache that starts with the manager, and the
	// certificate must exist before the webhook server starts.
	c, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return err
	}
	ensure := func(ctx context.Context) error {
		bundle, err := webhookcert.Ensure(ctx, c, types.NamespacedName{Namespace: opts.Namespace, Name: opts.SecretName}, opts.Endpoint.subject(), opts.CertDir)
		if err != nil {
			return err
		}
		return Install(ctx, c, opts.Endpoint, bundle.CA)
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
					level.Error(opts.Logger).Log("op", "webhookCertificate", "error", err)
				}
			}
		}
	}))
}

// subject is what the serving certificate must name for the API server to trust it.
func (e Endpoint) subject() webhookcert.Subject {
	if e.Service != nil {
		return webhookcert.Subject{DNSNames: []string{
			fmt.Sprintf("%s.%s.svc", e.Service.Name, e.Service.Namespace),
			fmt.Sprintf("%s.%s.svc.cluster.local", e.Service.Name, e.Service.Namespace),
		}}
	}
	if ip := net.ParseIP(e.Host); ip != nil {
		return webhookcert.Subject{IPs: []net.IP{ip}}
	}
	return webhookcert.Subject{DNSNames: []string{e.Host}}
}
