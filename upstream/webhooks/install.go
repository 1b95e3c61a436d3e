// SPDX-License-Identifier: Apache-2.0

package webhooks

import (
	"context"
	"fmt"
	"net"
	"strconv"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

const (
	// ConfigurationName is the ValidatingWebhookConfiguration MetalLB's manifests name.
	ConfigurationName = "metallb-webhook-configuration"
	bgpPeersCRD       = "bgppeers.metallb.io"
)

// Endpoint is where the API server reaches the webhook server: a Service in the cluster, or,
// when the server runs outside it (the lab, tests), a host and port.
type Endpoint struct {
	Service *types.NamespacedName
	Host    string
	Port    int
}

func (e Endpoint) clientConfig(path string, caBundle []byte) admissionregistrationv1.WebhookClientConfig {
	if e.Service != nil {
		return admissionregistrationv1.WebhookClientConfig{
			Service:  &admissionregistrationv1.ServiceReference{Namespace: e.Service.Namespace, Name: e.Service.Name, Path: &path},
			CABundle: caBundle,
		}
	}
	url := "https://" + net.JoinHostPort(e.Host, strconv.Itoa(e.Port)) + path
	return admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle}
}

// Install points the API server at the webhook server: it creates or updates the validating
// webhook configuration and makes the BGPPeer CRD convert through the webhook.
func Install(ctx context.Context, c client.Client, endpoint Endpoint, caBundle []byte) error {
	configuration := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	configuration.Name = ConfigurationName
	if _, err := controllerutil.CreateOrUpdate(ctx, c, configuration, func() error {
		configuration.Webhooks = validatingWebhooks(endpoint, caBundle)
		return nil
	}); err != nil {
		return fmt.Errorf("installing %s: %w", ConfigurationName, err)
	}

	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(ctx, client.ObjectKey{Name: bgpPeersCRD}, crd); err != nil {
		return fmt.Errorf("reading CRD %s: %w", bgpPeersCRD, err)
	}
	patch := client.MergeFrom(crd.DeepCopy())
	clientConfig := endpoint.clientConfig(ConversionPath, caBundle)
	crd.Spec.Conversion = &apiextensionsv1.CustomResourceConversion{
		Strategy: apiextensionsv1.WebhookConverter,
		Webhook: &apiextensionsv1.WebhookConversion{
			ConversionReviewVersions: []string{"v1"},
			ClientConfig: &apiextensionsv1.WebhookClientConfig{
				URL:      clientConfig.URL,
				CABundle: caBundle,
			},
		},
	}
	if s := clientConfig.Service; s != nil {
		crd.Spec.Conversion.Webhook.ClientConfig.Service = &apiextensionsv1.ServiceReference{Namespace: s.Namespace, Name: s.Name, Path: s.Path}
	}
	if err := c.Patch(ctx, crd, patch); err != nil {
		return fmt.Errorf("setting the conversion webhook of CRD %s: %w", bgpPeersCRD, err)
	}
	return nil
}

func validatingWebhooks(endpoint Endpoint, caBundle []byte) []admissionregistrationv1.ValidatingWebhook {
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	webhooks := make([]admissionregistrationv1.ValidatingWebhook, 0, len(kinds)+1)
	for _, k := range kinds {
		webhooks = append(webhooks, admissionregistrationv1.ValidatingWebhook{
			Name:                    k.name,
			ClientConfig:            endpoint.clientConfig(k.path(), caBundle),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: k.ops,
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{"metallb.io"},
					APIVersions: []string{k.version},
					Resources:   []string{k.resource},
				},
			}},
		})
	}
	return append(webhooks, workloadClusterValidatingWebhook(endpoint, caBundle))
}
