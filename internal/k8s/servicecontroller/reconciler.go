// SPDX-License-Identifier: Apache-2.0

// Package servicecontroller gives LoadBalancer Services their IPs: it feeds Services and the
// configuration to the allocator, one decision at a time, and publishes each outcome (status,
// the ip-allocated-from-pool annotation, events, pool status) as upstream MetalLB does.
package servicecontroller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/maglb/maglb/internal/allocator"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/lbservice"
)

// replayKey is the request that re-converges every Service: on a configuration change and
// when an address is freed, so that pending Services get another chance.
var replayKey = types.NamespacedName{Namespace: "maglb.io", Name: "replay"}

// Reconciler allocates. Its decisions are serialized: the allocator is one shared state.
type Reconciler struct {
	Client    client.Client
	Recorder  record.EventRecorder
	LBClass   string
	Namespace string // where the IPAddressPools live
	Logger    log.Logger

	mu         sync.Mutex
	alloc      *allocator.Allocator
	pools      *config.Pools
	ready      bool // the first replay ran: Services holding IPs have been re-assigned them
	replay     chan event.GenericEvent
	status     *statusWriter
	poolStatus *poolStatusWriter
}

// SetConfig is called with every new valid configuration.
func (r *Reconciler) SetConfig(cfg *config.Config) {
	r.mu.Lock()
	r.alloc.SetPools(&cfg.Pools)
	r.pools = &cfg.Pools
	// Counters change with the pools themselves, not only with allocations.
	changed := r.alloc.TakeChangedPools()
	r.mu.Unlock()
	r.poolStatus.touch(context.Background(), changed...)
	r.requestReplay()
}

// Counters returns the allocation counters of a pool, and whether they count every Service:
// not before the first replay has re-assigned the Services holding IPs.
func (r *Reconciler) Counters(pool string) (allocator.PoolCounters, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.alloc.Counters(pool), r.ready
}

func (r *Reconciler) requestReplay() {
	obj := &corev1.Service{}
	obj.Namespace, obj.Name = replayKey.Namespace, replayKey.Name
	select {
	case r.replay <- event.GenericEvent{Object: obj}:
	default: // one is queued already; it will see the latest state
	}
}

func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pools == nil {
		return ctrl.Result{}, nil // no configuration yet: the first one triggers a replay
	}
	if req.NamespacedName == replayKey {
		return ctrl.Result{}, r.replayAll(ctx)
	}
	if !r.ready {
		return ctrl.Result{}, nil // the first replay covers this Service
	}
	var svc corev1.Service
	err := r.Client.Get(ctx, req.NamespacedName, &svc)
	switch {
	case apierrors.IsNotFound(err):
		r.release(ctx, req.NamespacedName)
		return ctrl.Result{}, nil
	case err != nil:
		return ctrl.Result{}, err
	}
	if r.converge(ctx, &svc) {
		r.requestReplay()
	}
	return ctrl.Result{}, nil
}

// replayAll converges every Service, those holding IPs first so that none loses its IP to
// another on a restart or a configuration change.
func (r *Reconciler) replayAll(ctx context.Context) error {
	var list corev1.ServiceList
	if err := r.Client.List(ctx, &list); err != nil {
		return err
	}
	services := make([]*corev1.Service, 0, len(list.Items))
	for i := range list.Items {
		services = append(services, r.status.current(&list.Items[i]))
	}
	slices.SortStableFunc(services, func(a, b *corev1.Service) int {
		if d := len(b.Status.LoadBalancer.Ingress) - len(a.Status.LoadBalancer.Ingress); d != 0 {
			return d
		}
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	again := false
	for _, svc := range services {
		again = r.converge(ctx, svc) || again
	}
	if !r.ready {
		r.ready = true
		// The pools' status waited for this (Counters).
		r.poolStatus.touch(ctx, slices.Sorted(maps.Keys(r.pools.ByName))...)
	}
	if again {
		r.requestReplay()
	}
	return nil
}

// converge decides one Service and publishes the decision. It reports whether pending
// Services deserve another try (addresses were freed).
func (r *Reconciler) converge(ctx context.Context, svc *corev1.Service) (reprocess bool) {
	if !lbservice.Handles(svc, r.LBClass) {
		return false
	}
	result := r.alloc.Converge(r.status.current(svc), r.namespaceLabels(ctx, svc.Namespace))
	for _, e := range result.Events {
		r.Recorder.Event(svc, e.Type, e.Reason, e.Message)
	}
	if result.Changed {
		want := outcome{pool: result.Pool}
		for _, ip := range result.IPs {
			want.ingress = append(want.ingress, corev1.LoadBalancerIngress{IP: ip.String()})
		}
		level.Info(r.Logger).Log("controller", "ServiceReconciler", "service", lbservice.Key(svc), "ips", fmt.Sprint(result.IPs), "pool", result.Pool, "shard", result.Shard)
		r.status.decide(ctx, client.ObjectKeyFromObject(svc), want)
	}
	r.poolStatus.touch(ctx, r.alloc.TakeChangedPools()...)
	return result.Reprocess
}

func (r *Reconciler) release(ctx context.Context, key types.NamespacedName) {
	r.status.forget(key)
	if r.alloc.Release(key.String()) {
		r.poolStatus.touch(ctx, r.alloc.TakeChangedPools()...)
		r.requestReplay()
	}
}

func (r *Reconciler) namespaceLabels(ctx context.Context, name string) map[string]string {
	var ns corev1.Namespace
	if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
		return nil
	}
	return ns.Labels
}

// SetupWithManager registers the allocation controller and its writers.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.alloc = allocator.New()
	r.replay = make(chan event.GenericEvent, 1)
	r.status = newStatusWriter(mgr.GetClient())
	r.poolStatus = newPoolStatusWriter(mgr.GetClient(), r.Namespace, r.Counters)
	if err := r.status.setupWithManager(mgr); err != nil {
		return err
	}
	if err := r.poolStatus.setupWithManager(mgr); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("service").
		For(&corev1.Service{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		WatchesRawSource(source.Channel(r.replay, &handler.EnqueueRequestForObject{})).
		Complete(r)
}
