// SPDX-License-Identifier: Apache-2.0

package projectioncontroller

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/api/v1alpha1"
)

// mirrorTimeout bounds the reads that mirror one event.
const mirrorTimeout = 5 * time.Second

// watchLBCluster routes, until ctx ends, the LB cluster's changes to the runners: projected
// Services (their status carries the VIP) and the Warning events recorded on them.
func (r *Reconciler) watchLBCluster(ctx context.Context, mgr ctrl.Manager) error {
	services, err := mgr.GetCache().GetInformer(ctx, &corev1.Service{})
	if err != nil {
		return err
	}
	route := func(obj any) {
		if o := objectOf(obj); o != nil {
			r.routeProjected(o)
		}
	}
	registration, err := services.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: route, UpdateFunc: func(_, obj any) { route(obj) }, DeleteFunc: route,
	})
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { _ = services.RemoveEventHandler(registration) })

	// Events are many: only those about Services are watched, in a cache of their own.
	events, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme: mgr.GetScheme(),
		Mapper: mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Event{}: {Field: fields.OneTermEqualSelector("involvedObject.kind", "Service")},
		},
	})
	if err != nil {
		return err
	}
	informer, err := events.GetInformer(ctx, &corev1.Event{})
	if err != nil {
		return err
	}
	mirror := func(obj any) {
		if ev, ok := obj.(*corev1.Event); ok && ev.Type == corev1.EventTypeWarning {
			if rn := r.runnerForNamespace(ev.InvolvedObject.Namespace); rn != nil {
				rn.mirror(ctx, ev)
			}
		}
	}
	if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: mirror, UpdateFunc: func(_, obj any) { mirror(obj) },
	}); err != nil {
		return err
	}
	go func() { _ = events.Start(ctx) }()
	return nil
}

func objectOf(obj any) client.Object {
	if tombstone, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	o, _ := obj.(client.Object)
	return o
}

func (r *Reconciler) routeProjected(o client.Object) {
	rn := r.runner(o.GetLabels()[v1alpha1.LabelWorkloadCluster])
	if rn == nil || o.GetNamespace() != rn.namespace {
		return
	}
	if key, ok := origin(o); ok {
		rn.enqueue(key)
	}
}

// mirror records a Warning event of a projected Service on its workload Service, once per
// occurrence, for the occurrences since the runner started.
func (rn *runner) mirror(ctx context.Context, ev *corev1.Event) {
	// Event times are kept to the second.
	if eventTime(ev).Before(rn.started.Truncate(time.Second)) {
		return
	}
	rn.mu.Lock()
	count := max(ev.Count, 1)
	if ev.Series != nil {
		count = max(count, ev.Series.Count)
	}
	if rn.mirrored[ev.UID] >= count {
		rn.mu.Unlock()
		return
	}
	if len(rn.mirrored) > maxMirrored {
		clear(rn.mirrored)
	}
	rn.mirrored[ev.UID] = count
	rn.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, mirrorTimeout)
	defer cancel()
	var projected corev1.Service
	if err := rn.r.Client.Get(ctx, client.ObjectKey{Namespace: ev.InvolvedObject.Namespace, Name: ev.InvolvedObject.Name}, &projected); err != nil {
		return
	}
	key, ok := origin(&projected)
	if !ok || projected.Labels[v1alpha1.LabelWorkloadCluster] != rn.cluster {
		return
	}
	var svc corev1.Service
	if err := rn.workload.GetClient().Get(ctx, key, &svc); err != nil {
		return
	}
	rn.recorder.Event(&svc, corev1.EventTypeWarning, ev.Reason, ev.Message)
}

// maxMirrored bounds the memory of mirrored events; forgetting them at worst mirrors one twice.
const maxMirrored = 10000

// eventTime is when an event last happened, whichever API recorded it.
func eventTime(ev *corev1.Event) time.Time {
	t := ev.LastTimestamp.Time
	for _, other := range []time.Time{ev.FirstTimestamp.Time, ev.EventTime.Time} {
		if other.After(t) {
			t = other
		}
	}
	if ev.Series != nil && ev.Series.LastObservedTime.After(t) {
		t = ev.Series.LastObservedTime.Time
	}
	return t
}
