// SPDX-License-Identifier: Apache-2.0

package servicecontroller

import (
	"context"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/maglb/maglb/internal/allocator"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// poolStatusWriter keeps IPAddressPool status counters current. Requests for one pool
// collapse in the work queue, so a burst of allocations costs one write.
type poolStatusWriter struct {
	client    client.Client
	namespace string
	counters  func(pool string) (allocator.PoolCounters, bool)
	queue     chan event.GenericEvent
}

func newPoolStatusWriter(c client.Client, namespace string, counters func(string) (allocator.PoolCounters, bool)) *poolStatusWriter {
	return &poolStatusWriter{client: c, namespace: namespace, counters: counters, queue: make(chan event.GenericEvent, 1024)}
}

// touch schedules a status update of the named pools ("" is ignored).
func (w *poolStatusWriter) touch(ctx context.Context, pools ...string) {
	for _, name := range pools {
		if name == "" {
			continue
		}
		pool := &maglbv1beta1.IPAddressPool{}
		pool.Namespace, pool.Name = w.namespace, name
		select {
		case w.queue <- event.GenericEvent{Object: pool}:
		case <-ctx.Done():
			return
		}
	}
}

func (w *poolStatusWriter) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var pool maglbv1beta1.IPAddressPool
	if err := w.client.Get(ctx, req.NamespacedName, &pool); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	c, complete := w.counters(pool.Name)
	if !complete {
		// Counters without the Services holding IPs would reset the status on every start
		// (and the pool's resourceVersion with it); the first replay touches every pool.
		return ctrl.Result{}, nil
	}
	status := metallbv1beta1.IPAddressPoolStatus{
		AssignedIPv4: c.AssignedIPv4, AssignedIPv6: c.AssignedIPv6,
		AvailableIPv4: c.AvailableIPv4, AvailableIPv6: c.AvailableIPv6,
	}
	if pool.Status == status {
		return ctrl.Result{}, nil
	}
	pool.Status = status
	err := w.client.Status().Update(ctx, &pool)
	if apierrors.IsConflict(err) {
		return ctrl.Result{Requeue: true}, nil
	}
	return ctrl.Result{}, err
}

// setupWithManager also refreshes a pool's status whenever the pool itself changes.
func (w *poolStatusWriter) setupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("pool-status").
		For(&maglbv1beta1.IPAddressPool{}).
		WatchesRawSource(source.Channel(w.queue, &handler.EnqueueRequestForObject{})).
		Complete(w)
}
