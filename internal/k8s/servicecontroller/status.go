// SPDX-License-Identifier: Apache-2.0

package servicecontroller

import (
	"context"
	"encoding/json"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/maglb/maglb/internal/lbservice"
)

// statusWriters is how many Service writes run at once: allocation is decided in memory, one
// Service at a time, and the API writes that publish the decisions run in parallel.
const statusWriters = 16

// outcome is what a Service should show: its ingress IPs and the pool they come from.
type outcome struct {
	ingress []corev1.LoadBalancerIngress
	pool    string
}

func outcomeOf(svc *corev1.Service) outcome {
	return outcome{ingress: svc.Status.LoadBalancer.Ingress, pool: svc.Annotations[lbservice.AnnotationIPAllocatedFromPool]}
}

func (o outcome) equal(other outcome) bool {
	return o.pool == other.pool && slices.EqualFunc(o.ingress, other.ingress, func(a, b corev1.LoadBalancerIngress) bool {
		return a.IP == b.IP
	})
}

// statusWriter publishes decided outcomes to the API server. Until a write lands, the decided
// outcome, not the cached Service, is the Service's current state for the allocator.
type statusWriter struct {
	client client.Client
	mu     sync.Mutex
	// decided holds the outcomes not yet seen written.
	decided map[types.NamespacedName]outcome
	queue   chan event.GenericEvent
}

func newStatusWriter(c client.Client) *statusWriter {
	return &statusWriter{client: c, decided: map[types.NamespacedName]outcome{}, queue: make(chan event.GenericEvent, 1024)}
}

// current returns svc as it will be once the decided outcome is written.
func (w *statusWriter) current(svc *corev1.Service) *corev1.Service {
	w.mu.Lock()
	o, ok := w.decided[client.ObjectKeyFromObject(svc)]
	w.mu.Unlock()
	if !ok {
		return svc
	}
	out := svc.DeepCopy()
	out.Status.LoadBalancer.Ingress = o.ingress
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	if o.pool == "" {
		delete(out.Annotations, lbservice.AnnotationIPAllocatedFromPool)
	} else {
		out.Annotations[lbservice.AnnotationIPAllocatedFromPool] = o.pool
	}
	return out
}

// decide records the outcome for key and schedules its write.
func (w *statusWriter) decide(ctx context.Context, key types.NamespacedName, o outcome) {
	w.mu.Lock()
	w.decided[key] = o
	w.mu.Unlock()
	obj := &corev1.Service{}
	obj.Namespace, obj.Name = key.Namespace, key.Name
	select {
	case w.queue <- event.GenericEvent{Object: obj}:
	case <-ctx.Done():
	}
}

// forget drops what was decided for a Service that is gone.
func (w *statusWriter) forget(key types.NamespacedName) {
	w.mu.Lock()
	delete(w.decided, key)
	w.mu.Unlock()
}

// Reconcile writes the decided outcome of one Service, if the Service does not show it yet.
func (w *statusWriter) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	w.mu.Lock()
	want, ok := w.decided[req.NamespacedName]
	w.mu.Unlock()
	if !ok {
		return ctrl.Result{}, nil
	}
	var svc corev1.Service
	if err := w.client.Get(ctx, req.NamespacedName, &svc); err != nil {
		if apierrors.IsNotFound(err) {
			w.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	_, legacy := svc.Annotations[lbservice.LegacyAnnotationIPAllocatedFromPool]
	if !outcomeOf(&svc).equal(want) || legacy {
		if err := w.write(ctx, &svc, want); err != nil {
			if apierrors.IsNotFound(err) {
				w.forget(req.NamespacedName)
				return ctrl.Result{}, nil
			}
			return ctrl.Result{}, err
		}
	}
	w.mu.Lock()
	if latest, ok := w.decided[req.NamespacedName]; ok && latest.equal(want) {
		delete(w.decided, req.NamespacedName)
	}
	w.mu.Unlock()
	return ctrl.Result{}, nil
}

// write publishes want in one merge patch of the status subresource: the API server keeps the
// metadata of a Service's status update (upstream relies on it too), so the pool annotation
// travels with the ingress and a Service costs one write. A merge patch needs no
// resourceVersion, so concurrent edits of other fields never conflict.
func (w *statusWriter) write(ctx context.Context, svc *corev1.Service, want outcome) error {
	var pool any // nil deletes the key
	if want.pool != "" {
		pool = want.pool
	}
	ingress := want.ingress
	if ingress == nil {
		ingress = []corev1.LoadBalancerIngress{}
	}
	patch := map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{
			lbservice.AnnotationIPAllocatedFromPool: pool,
			// An upgrade from an older MetalLB may leave the legacy key behind.
			lbservice.LegacyAnnotationIPAllocatedFromPool: nil,
		}},
		"status": map[string]any{"loadBalancer": map[string]any{"ingress": ingress}},
	}
	return w.client.Status().Patch(ctx, svc, rawMergePatch(patch))
}

func (w *statusWriter) setupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("service-status").
		WithOptions(controller.Options{MaxConcurrentReconciles: statusWriters}).
		WatchesRawSource(source.Channel(w.queue, &handler.EnqueueRequestForObject{})).
		Complete(w)
}

func rawMergePatch(patch map[string]any) client.Patch {
	data, err := json.Marshal(patch)
	if err != nil {
		panic(err) // maps of strings and slices of structs always marshal
	}
	return client.RawPatch(types.MergePatchType, data)
}
