// SPDX-License-Identifier: Apache-2.0

package webhooks

import (
	"context"
	"fmt"
	"net/http"

	"github.com/go-kit/log/level"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/maglb/maglb/api/v1alpha1"
)

// WorkloadClusterPath serves the validation of maglb.io WorkloadClusters.
const WorkloadClusterPath = "/validate-maglb-io-v1alpha1-workloadcluster"

const workloadClusterWebhook = "workloadclustervalidationwebhook.maglb.io"

type workloadClusterHandler struct {
	validator *Validator
	decoder   admission.Decoder
}

func (h *workloadClusterHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	var wc v1alpha1.WorkloadCluster
	if err := h.decoder.DecodeRaw(req.Object, &wc); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if wc.DeletionTimestamp != nil {
		return admission.Allowed("") // its finalizers must be able to come off, whatever it holds
	}
	err := h.validator.checkWorkloadCluster(ctx, &wc)
	if err == nil && req.Operation == admissionv1.Update {
		var old v1alpha1.WorkloadCluster
		if err = h.decoder.DecodeRaw(req.OldObject, &old); err != nil {
			return admission.Errored(http.StatusBadRequest, err)
		}
		err = checkNamespaceKept(&old, &wc)
	}
	if err != nil {
		level.Error(h.validator.Logger).Log("webhook", "workloadclusters", "action", req.Operation, "name", wc.Name, "error", err)
		return admission.Denied(err.Error())
	}
	return admission.Allowed("")
}

// checkWorkloadCluster admits a WorkloadCluster whose service selector parses and whose
// projection namespace is its own: neither MagLB's nor another WorkloadCluster's; an update
// keeps the namespace.
func (v *Validator) checkWorkloadCluster(ctx context.Context, wc *v1alpha1.WorkloadCluster) error {
	if wc.Spec.ServiceSelector != nil {
		if _, err := metav1.LabelSelectorAsSelector(wc.Spec.ServiceSelector); err != nil {
			return fmt.Errorf("WorkloadCluster %s: invalid spec.serviceSelector: %w", wc.Name, err)
		}
	}
	namespace := wc.ProjectionNamespace()
	if namespace == v.Namespace {
		return fmt.Errorf("WorkloadCluster %s: projection namespace %s is MagLB's own namespace; choose another spec.namespace", wc.Name, namespace)
	}
	var others v1alpha1.WorkloadClusterList
	if err := v.Reader.List(ctx, &others); err != nil {
		return err
	}
	for _, other := range others.Items {
		if other.Name != wc.Name && other.ProjectionNamespace() == namespace {
			return fmt.Errorf("WorkloadCluster %s: projection namespace %s is already WorkloadCluster %s's; each workload cluster needs its own", wc.Name, namespace, other.Name)
		}
	}
	return nil
}

// checkNamespaceKept refuses to move projections: the old namespace's would be left behind.
func checkNamespaceKept(old, wc *v1alpha1.WorkloadCluster) error {
	if old.ProjectionNamespace() != wc.ProjectionNamespace() {
		return fmt.Errorf("WorkloadCluster %s: the projection namespace cannot change from %s to %s; delete the WorkloadCluster and create it anew", wc.Name, old.ProjectionNamespace(), wc.ProjectionNamespace())
	}
	return nil
}

func workloadClusterValidatingWebhook(endpoint Endpoint, caBundle []byte) admissionregistrationv1.ValidatingWebhook {
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	return admissionregistrationv1.ValidatingWebhook{
		Name:                    workloadClusterWebhook,
		ClientConfig:            endpoint.clientConfig(WorkloadClusterPath, caBundle),
		AdmissionReviewVersions: []string{"v1"},
		FailurePolicy:           &fail,
		SideEffects:             &none,
		Rules: []admissionregistrationv1.RuleWithOperations{{
			Operations: createUpdate,
			Rule: admissionregistrationv1.Rule{
				APIGroups:   []string{v1alpha1.GroupVersion.Group},
				APIVersions: []string{v1alpha1.GroupVersion.Version},
				Resources:   []string{"workloadclusters"},
			},
		}},
	}
}
