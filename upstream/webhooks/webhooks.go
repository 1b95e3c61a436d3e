// SPDX-License-Identifier: Apache-2.0

// Package webhooks admits metallb.io objects only when the configuration they make, together
// with every other metallb.io object of the namespace, is valid; and converts BGPPeers between
// v1beta1 and v1beta2. Paths, names and messages are upstream MetalLB's. It also validates
// maglb.io WorkloadClusters.
package webhooks

import (
	"context"
	"fmt"
	"net/http"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/controller-runtime/pkg/webhook/conversion"

	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/k8s"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// ConversionPath serves BGPPeer conversion.
const ConversionPath = "/convert"

// Validator checks admission requests against the whole configuration.
type Validator struct {
	// Reader reads the objects already stored; use an uncached reader so that a request
	// right after another one sees it.
	Reader    client.Reader
	Namespace string
	Validate  config.Validate
	Logger    log.Logger
}

// kind is one validated resource: how its requests are decoded and folded into the
// configuration that is validated.
type kind struct {
	name     string // of the webhook, as upstream's manifests name it
	singular string // as in the webhook path
	resource string // as in the API path
	version  string
	ops      []admissionregistrationv1.OperationType
	// apply adds obj to res, replacing the object of the same name.
	apply func(res *config.ClusterResources, obj runtime.Object)
	// newObject returns an empty object to decode a request into.
	newObject func() client.Object
}

var (
	createUpdate = []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}
	createDelete = []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Delete}
)

var kinds = []kind{
	{
		name: "ipaddresspoolvalidationwebhook.metallb.io", singular: "ipaddresspool", resource: "ipaddresspools", version: "v1beta1", ops: createUpdate,
		newObject: func() client.Object { return &maglbv1beta1.IPAddressPool{} },
		apply: func(res *config.ClusterResources, obj runtime.Object) {
			res.Pools = upsert(res.Pools, obj.(*maglbv1beta1.IPAddressPool))
		},
	},
	{
		name: "bgppeersvalidationwebhook.metallb.io", singular: "bgppeer", resource: "bgppeers", version: "v1beta2", ops: createUpdate,
		newObject: func() client.Object { return &metallbv1beta2.BGPPeer{} },
		apply: func(res *config.ClusterResources, obj runtime.Object) {
			res.Peers = upsert(res.Peers, obj.(*metallbv1beta2.BGPPeer))
		},
	},
	{
		name: "bgpadvertisementvalidationwebhook.metallb.io", singular: "bgpadvertisement", resource: "bgpadvertisements", version: "v1beta1", ops: createUpdate,
		newObject: func() client.Object { return &metallbv1beta1.BGPAdvertisement{} },
		apply: func(res *config.ClusterResources, obj runtime.Object) {
			res.BGPAdvs = upsert(res.BGPAdvs, obj.(*metallbv1beta1.BGPAdvertisement))
		},
	},
	{
		name: "l2advertisementvalidationwebhook.metallb.io", singular: "l2advertisement", resource: "l2advertisements", version: "v1beta1", ops: createUpdate,
		newObject: func() client.Object { return &metallbv1beta1.L2Advertisement{} },
		apply: func(res *config.ClusterResources, obj runtime.Object) {
			res.L2Advs = upsert(res.L2Advs, obj.(*metallbv1beta1.L2Advertisement))
		},
	},
	{
		name: "communityvalidationwebhook.metallb.io", singular: "community", resource: "communities", version: "v1beta1", ops: createUpdate,
		newObject: func() client.Object { return &metallbv1beta1.Community{} },
		apply: func(res *config.ClusterResources, obj runtime.Object) {
			res.Communities = upsert(res.Communities, obj.(*metallbv1beta1.Community))
		},
	},
	{
		name: "bfdprofilevalidationwebhook.metallb.io", singular: "bfdprofile", resource: "bfdprofiles", version: "v1beta1", ops: createDelete,
		newObject: func() client.Object { return &metallbv1beta1.BFDProfile{} },
		apply: func(res *config.ClusterResources, obj runtime.Object) {
			res.BFDProfiles = upsert(res.BFDProfiles, obj.(*metallbv1beta1.BFDProfile))
		},
	},
}

// path is upstream's.
func (k kind) path() string {
	return fmt.Sprintf("/validate-metallb-io-%s-%s", k.version, k.singular)
}

// Register serves every validating webhook (the metallb.io kinds and maglb.io's
// WorkloadCluster) and BGPPeer conversion on server.
func (v *Validator) Register(server webhook.Server, scheme *runtime.Scheme) {
	decoder := admission.NewDecoder(scheme)
	for _, k := range kinds {
		server.Register(k.path(), &webhook.Admission{Handler: &handler{validator: v, kind: k, decoder: decoder}})
	}
	server.Register(WorkloadClusterPath, &webhook.Admission{Handler: &workloadClusterHandler{validator: v, decoder: decoder}})
	server.Register(ConversionPath, conversion.NewWebhookHandler(scheme, conversion.NewRegistry()))
}

type handler struct {
	validator *Validator
	kind      kind
	decoder   admission.Decoder
}

func (h *handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	obj := h.kind.newObject()
	raw := req.Object
	if req.Operation == admissionv1.Delete {
		raw = req.OldObject
	}
	if err := h.decoder.DecodeRaw(raw, obj); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if err := h.validator.check(ctx, h.kind, req.Operation, obj); err != nil {
		level.Error(h.validator.Logger).Log("webhook", h.kind.resource, "action", req.Operation, "name", obj.GetName(), "namespace", obj.GetNamespace(), "error", err)
		return admission.Denied(err.Error())
	}
	return admission.Allowed("")
}

func (v *Validator) check(ctx context.Context, k kind, op admissionv1.Operation, obj client.Object) error {
	if op != admissionv1.Delete && obj.GetNamespace() != v.Namespace {
		return fmt.Errorf("resource must be created in %s namespace", v.Namespace)
	}
	res, err := k8s.ListClusterResources(ctx, v.Reader, v.Namespace)
	if err != nil {
		return err
	}
	if op == admissionv1.Delete {
		return checkDelete(res, obj)
	}
	k.apply(&res, obj)
	return config.ValidateForWebhook(res, v.Validate)
}

// checkDelete refuses to delete a BFD profile a peer still uses.
func checkDelete(res config.ClusterResources, obj client.Object) error {
	profile, ok := obj.(*metallbv1beta1.BFDProfile)
	if !ok {
		return nil
	}
	for _, peer := range res.Peers {
		if peer.Spec.BFDProfile == profile.Name {
			return fmt.Errorf("failed to delete BFDProfile %s, used by BGPPeer %s", profile.Name, peer.Name)
		}
	}
	return nil
}

// upsert returns items with obj in place of the item of the same name, or appended.
func upsert[T any, P interface {
	*T
	client.Object
}](items []T, obj P) []T {
	out := make([]T, 0, len(items)+1)
	for i := range items {
		if P(&items[i]).GetName() != obj.GetName() {
			out = append(out, items[i])
		}
	}
	return append(out, *obj)
}
