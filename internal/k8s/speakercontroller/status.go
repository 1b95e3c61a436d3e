// SPDX-License-Identifier: Apache-2.0

package speakercontroller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/announce"
)

// Upstream's labels on ServiceBGPStatus and ServiceL2Status objects.
const (
	labelNode             = "metallb.io/node"
	labelServiceName      = "metallb.io/service-name"
	labelServiceNamespace = "metallb.io/service-namespace"
)

// statusWriter keeps one ServiceBGPStatus and one ServiceL2Status per service this node
// announces, and deletes those of services it no longer announces.
type statusWriter struct {
	client    client.Client
	namespace string
	node      string
}

func (w *statusWriter) sync(ctx context.Context, plan announce.Plan) error {
	bgp := map[string]metallbv1beta1.MetalLBServiceBGPStatus{}
	l2 := map[string]metallbv1beta1.MetalLBServiceL2Status{}
	for key, state := range plan.Services {
		namespace, name, _ := strings.Cut(key, "/")
		if len(state.BGPPeers) > 0 {
			bgp[key] = metallbv1beta1.MetalLBServiceBGPStatus{Node: w.node, ServiceName: name, ServiceNamespace: namespace, Peers: state.BGPPeers}
		}
		if state.L2 {
			status := metallbv1beta1.MetalLBServiceL2Status{Node: w.node, ServiceName: name, ServiceNamespace: namespace}
			for _, iface := range state.L2Interfaces {
				status.Interfaces = append(status.Interfaces, metallbv1beta1.InterfaceInfo{Name: iface})
			}
			l2[key] = status
		}
	}
	return errors.Join(
		syncObjects(ctx, w, "bgp", &metallbv1beta1.ServiceBGPStatusList{}, bgp,
			func() *metallbv1beta1.ServiceBGPStatus { return &metallbv1beta1.ServiceBGPStatus{} },
			func(o *metallbv1beta1.ServiceBGPStatus) *metallbv1beta1.MetalLBServiceBGPStatus { return &o.Status },
			func(l *metallbv1beta1.ServiceBGPStatusList) []metallbv1beta1.ServiceBGPStatus { return l.Items }),
		syncObjects(ctx, w, "l2", &metallbv1beta1.ServiceL2StatusList{}, l2,
			func() *metallbv1beta1.ServiceL2Status { return &metallbv1beta1.ServiceL2Status{} },
			func(o *metallbv1beta1.ServiceL2Status) *metallbv1beta1.MetalLBServiceL2Status { return &o.Status },
			func(l *metallbv1beta1.ServiceL2StatusList) []metallbv1beta1.ServiceL2Status { return l.Items }),
	)
}

// syncObjects makes the node's status objects of one kind equal to want (by service key).
func syncObjects[O any, PO interface {
	*O
	client.Object
}, L any, PL interface {
	*L
	client.ObjectList
}, S any](
	ctx context.Context, w *statusWriter, prefix string, list PL, want map[string]S,
	newObject func() PO, status func(PO) *S, items func(PL) []O,
) error {
	if err := w.client.List(ctx, list, client.InNamespace(w.namespace), client.MatchingLabels{labelNode: w.node}); err != nil {
		return err
	}
	var errs []error
	have := map[string]bool{}
	for _, item := range items(list) {
		obj := PO(&item)
		key := obj.GetLabels()[labelServiceNamespace] + "/" + obj.GetLabels()[labelServiceName]
		wanted, ok := want[key]
		if !ok || have[key] {
			errs = append(errs, client.IgnoreNotFound(w.client.Delete(ctx, obj)))
			continue
		}
		have[key] = true
		if !reflect.DeepEqual(*status(obj), wanted) {
			*status(obj) = wanted
			errs = append(errs, w.client.Status().Update(ctx, obj))
		}
	}
	for key, wanted := range want {
		if have[key] {
			continue
		}
		namespace, name, _ := strings.Cut(key, "/")
		obj := newObject()
		obj.SetNamespace(w.namespace)
		obj.SetName(statusName(prefix, key, w.node))
		obj.SetLabels(map[string]string{labelNode: w.node, labelServiceName: name, labelServiceNamespace: namespace})
		err := w.client.Create(ctx, obj)
		if apierrors.IsAlreadyExists(err) {
			continue // the cache lags; the next pass updates it
		}
		if err == nil {
			*status(obj) = wanted
			err = w.client.Status().Update(ctx, obj)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// statusName is stable per service and node, so a restarted speaker finds its objects.
func statusName(prefix, key, node string) string {
	sum := sha256.Sum256([]byte(key + "@" + node))
	return prefix + "-" + hex.EncodeToString(sum[:8])
}
