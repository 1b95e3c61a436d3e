// SPDX-License-Identifier: Apache-2.0

// Package projectioncontroller projects the LoadBalancer Services of workload clusters into
// this, the LB cluster: one Reconciler for the WorkloadClusters, which runs, for each, a cache
// of the workload cluster and a controller keyed by workload Service (see runner).
package projectioncontroller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/projection"
)

const (
	// clusterFinalizer keeps a WorkloadCluster until its projections are gone.
	clusterFinalizer = "maglb.io/projections"
	// releaseTimeout bounds how long a deleted WorkloadCluster's Services are released.
	releaseTimeout = 10 * time.Second
	// lastSyncInterval is how often lastSyncTime alone is worth a status write.
	lastSyncInterval = 30 * time.Second
)

// Condition reasons of a WorkloadCluster.
const (
	ReasonKubeconfigInvalid = "KubeconfigInvalid"
	ReasonUnreachable       = "Unreachable"
	ReasonUnauthorized      = "Unauthorized"
	ReasonMissingRBAC       = "MissingRBAC"
	ReasonConnected         = "Connected"
	ReasonProbing           = "Probing"
	ReasonInvalidSelector   = "InvalidServiceSelector"
)

// Reconciler keeps one runner per WorkloadCluster and reports each one's status.
type Reconciler struct {
	Client    client.Client
	Namespace string // MagLB's, where the kubeconfig Secrets are
	LBClass   string // the LB controller's --lb-class
	Logger    log.Logger

	apiReader client.Reader
	// ctx ends when this replica stops leading; runners run under it.
	ctx     context.Context
	started chan struct{}
	pokes   chan event.GenericEvent

	mu      sync.Mutex
	runners map[string]*runner // by WorkloadCluster name
}

// SetupWithManager registers the WorkloadCluster controller and, under the manager's leader
// election, what routes LB-cluster events to the runners.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.apiReader = mgr.GetAPIReader()
	r.started = make(chan struct{})
	r.pokes = make(chan event.GenericEvent, 64)
	r.runners = map[string]*runner{}
	// A RunnableFunc needs the lease, so this starts only on the leader.
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if err := r.watchLBCluster(ctx, mgr); err != nil {
			return err
		}
		r.ctx = ctx
		close(r.started)
		<-ctx.Done()
		r.stopAll()
		return nil
	})); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("workloadcluster").
		For(&v1alpha1.WorkloadCluster{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.clustersOfSecret)).
		WatchesRawSource(source.Channel(r.pokes, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

// poke asks for the status of a WorkloadCluster to be brought up to date.
func (r *Reconciler) poke(name string) {
	obj := &v1alpha1.WorkloadCluster{}
	obj.Name = name
	select {
	case r.pokes <- event.GenericEvent{Object: obj}:
	default: // the queue dedups; a full channel means plenty of pokes are on their way
	}
}

func (r *Reconciler) clustersOfSecret(ctx context.Context, obj client.Object) []reconcile.Request {
	if obj.GetNamespace() != r.Namespace {
		return nil
	}
	var list v1alpha1.WorkloadClusterList
	if err := r.Client.List(ctx, &list); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, wc := range list.Items {
		if wc.Spec.KubeconfigSecret.Name == obj.GetName() {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: wc.Name}})
		}
	}
	return out
}

func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	select {
	case <-r.started:
	case <-ctx.Done():
		return ctrl.Result{}, ctx.Err()
	}
	var wc v1alpha1.WorkloadCluster
	if err := r.Client.Get(ctx, req.NamespacedName, &wc); err != nil {
		if apierrors.IsNotFound(err) {
			r.stop(req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if wc.DeletionTimestamp != nil {
		return ctrl.Result{}, r.finalize(ctx, &wc)
	}
	if !controllerutil.ContainsFinalizer(&wc, clusterFinalizer) {
		patch := client.MergeFromWithOptions(wc.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(&wc, clusterFinalizer)
		return ctrl.Result{}, r.Client.Patch(ctx, &wc, patch)
	}

	cfg, kubeconfig, problem := r.restConfig(ctx, &wc)
	selector, err := serviceSelector(&wc)
	switch {
	case problem != "":
		r.stop(wc.Name)
		return ctrl.Result{}, r.writeStatus(ctx, &wc, nil,
			condition(v1alpha1.ConditionConnected, metav1.ConditionFalse, ReasonKubeconfigInvalid, problem),
			condition(v1alpha1.ConditionSynced, metav1.ConditionFalse, "NotConnected", "the workload cluster cannot be reached: "+problem))
	case err != nil:
		r.stop(wc.Name)
		return ctrl.Result{}, r.writeStatus(ctx, &wc, nil,
			condition(v1alpha1.ConditionConnected, metav1.ConditionUnknown, ReasonInvalidSelector, "not connecting while spec.serviceSelector is invalid"),
			condition(v1alpha1.ConditionSynced, metav1.ConditionFalse, ReasonInvalidSelector, "spec.serviceSelector: "+err.Error()))
	}
	rn := r.ensureRunner(&wc, cfg, kubeconfig, selector)
	connected := rn.connection()
	synced, tally := rn.syncState(ctx)
	return ctrl.Result{}, r.writeStatus(ctx, &wc, &tally, connected, synced)
}

// restConfig reads the WorkloadCluster's kubeconfig, returned raw too; problem says in words
// why it cannot.
func (r *Reconciler) restConfig(ctx context.Context, wc *v1alpha1.WorkloadCluster) (_ *rest.Config, kubeconfig []byte, problem string) {
	ref := types.NamespacedName{Namespace: r.Namespace, Name: wc.Spec.KubeconfigSecret.Name}
	var secret corev1.Secret
	if err := r.Client.Get(ctx, ref, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, fmt.Sprintf("Secret %s not found", ref)
		}
		return nil, nil, fmt.Sprintf("reading Secret %s: %v", ref, err)
	}
	data, ok := secret.Data[wc.KubeconfigKey()]
	if !ok {
		return nil, nil, fmt.Sprintf("Secret %s has no key %q", ref, wc.KubeconfigKey())
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	if err != nil {
		return nil, nil, fmt.Sprintf("key %q of Secret %s is not a usable kubeconfig: %v", wc.KubeconfigKey(), ref, err)
	}
	return cfg, data, ""
}

// ensureRunner returns the cluster's runner, started afresh when what it runs with changed.
func (r *Reconciler) ensureRunner(wc *v1alpha1.WorkloadCluster, cfg *rest.Config, kubeconfig []byte, selector labels.Selector) *runner {
	spec := runnerSpec{
		cluster:   wc.Name,
		namespace: wc.ProjectionNamespace(),
		class:     wc.LoadBalancerClass(),
		selector:  selector,
		lbClass:   r.LBClass,
		config:    cfg,
	}
	identity := spec.identity(kubeconfig)
	r.mu.Lock()
	old := r.runners[wc.Name]
	if old != nil && old.identity == identity {
		r.mu.Unlock()
		return old
	}
	rn := newRunner(r, spec, identity)
	r.runners[wc.Name] = rn
	r.mu.Unlock()
	if old != nil {
		level.Info(r.Logger).Log("controller", "projection", "workloadcluster", wc.Name, "msg", "restarting: kubeconfig or spec changed")
		old.stop()
	}
	rn.start(r.ctx)
	return rn
}

// identity tells runners apart: a new one runs when any of it changes.
func (s runnerSpec) identity(kubeconfig []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00", s.cluster, s.namespace, s.class, s.selector, s.lbClass)
	h.Write(kubeconfig)
	return hex.EncodeToString(h.Sum(nil))
}

func (r *Reconciler) runner(name string) *runner {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runners[name]
}

func (r *Reconciler) runnerForNamespace(namespace string) *runner {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rn := range r.runners {
		if rn.namespace == namespace {
			return rn
		}
	}
	return nil
}

func (r *Reconciler) stop(name string) {
	r.mu.Lock()
	rn := r.runners[name]
	delete(r.runners, name)
	r.mu.Unlock()
	if rn != nil {
		rn.stop()
	}
}

func (r *Reconciler) stopAll() {
	r.mu.Lock()
	runners := r.runners
	r.runners = map[string]*runner{}
	r.mu.Unlock()
	for _, rn := range runners {
		rn.stop()
	}
}

func condition(typ string, status metav1.ConditionStatus, reason, message string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: message}
}

// writeStatus writes the WorkloadCluster's status when it changed; lastSyncTime alone is
// refreshed at most every lastSyncInterval.
func (r *Reconciler) writeStatus(ctx context.Context, wc *v1alpha1.WorkloadCluster, tally *projection.Tally, connected, synced metav1.Condition) error {
	status := wc.Status.DeepCopy()
	for _, c := range []metav1.Condition{connected, synced} {
		c.ObservedGeneration = wc.Generation
		meta.SetStatusCondition(&status.Conditions, c)
	}
	status.Namespace = wc.ProjectionNamespace()
	status.ObservedGeneration = wc.Generation
	if tally != nil {
		status.ProjectedServices, status.ServicesWithVIP = int32(tally.Projected), int32(tally.WithVIP)
	}
	changed := !equality.Semantic.DeepEqual(&wc.Status, status)
	if synced.Status == metav1.ConditionTrue {
		last := status.LastSyncTime
		if changed || last == nil || time.Since(last.Time) >= lastSyncInterval {
			status.LastSyncTime = &metav1.Time{Time: time.Now()}
			changed = true
		}
	}
	if !changed {
		return nil
	}
	patch := client.MergeFrom(wc.DeepCopy())
	wc.Status = *status
	return client.IgnoreNotFound(r.Client.Status().Patch(ctx, wc, patch))
}

// finalize removes everything a deleted WorkloadCluster projected, then its finalizer.
func (r *Reconciler) finalize(ctx context.Context, wc *v1alpha1.WorkloadCluster) error {
	r.stop(wc.Name)
	if !controllerutil.ContainsFinalizer(wc, clusterFinalizer) {
		return nil
	}
	namespace := wc.ProjectionNamespace()
	origin := client.MatchingLabels{v1alpha1.LabelWorkloadCluster: wc.Name}
	var services corev1.ServiceList
	if err := r.Client.List(ctx, &services, client.InNamespace(namespace), origin); err != nil {
		return err
	}
	if cfg, _, problem := r.restConfig(ctx, wc); problem == "" {
		projected := map[types.NamespacedName]bool{}
		for _, p := range services.Items {
			projected[types.NamespacedName{Namespace: p.Labels[v1alpha1.LabelWorkloadNamespace], Name: p.Labels[v1alpha1.LabelWorkloadName]}] = true
		}
		r.releaseWorkloadServices(ctx, wc, cfg, projected)
	}
	if err := r.Client.DeleteAllOf(ctx, &discoveryv1.EndpointSlice{}, client.InNamespace(namespace), origin); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	for i := range services.Items {
		if err := r.Client.Delete(ctx, &services.Items[i]); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	var ns corev1.Namespace
	err := r.Client.Get(ctx, client.ObjectKey{Name: namespace}, &ns)
	switch {
	case err == nil && ns.Labels[v1alpha1.LabelWorkloadCluster] == wc.Name && ns.DeletionTimestamp == nil:
		if err := r.Client.Delete(ctx, &ns); client.IgnoreNotFound(err) != nil {
			return err
		}
	case err != nil && !apierrors.IsNotFound(err):
		return err
	}
	level.Info(r.Logger).Log("controller", "projection", "workloadcluster", wc.Name, "msg", "projections removed", "services", len(services.Items))
	patch := client.MergeFrom(wc.DeepCopy())
	controllerutil.RemoveFinalizer(wc, clusterFinalizer)
	return client.IgnoreNotFound(r.Client.Patch(ctx, wc, patch))
}

// releaseWorkloadServices takes, as far as it can within releaseTimeout, the finalizer and
// the ingress projection wrote off the workload Services of wc: those projected, and those it
// takes. Another WorkloadCluster registering the same cluster keeps its own.
func (r *Reconciler) releaseWorkloadServices(ctx context.Context, wc *v1alpha1.WorkloadCluster, cfg *rest.Config, projected map[types.NamespacedName]bool) {
	ctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	selector, err := serviceSelector(wc)
	var c client.Client
	if err == nil {
		c, err = newWorkloadClient(cfg)
	}
	var list corev1.ServiceList
	if err == nil {
		err = c.List(ctx, &list)
	}
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for i := range list.Items {
		svc := &list.Items[i]
		ours := projected[client.ObjectKeyFromObject(svc)] || projection.Taken(svc, wc.LoadBalancerClass(), selector)
		if !ours || !controllerutil.ContainsFinalizer(svc, projection.Finalizer) {
			continue
		}
		// The workload cluster's own controllers may change the Service meanwhile: read it again.
		errs = append(errs, retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
				return client.IgnoreNotFound(err)
			}
			return release(ctx, c, svc)
		}))
	}
	if err := errors.Join(errs...); err != nil {
		level.Warn(r.Logger).Log("controller", "projection", "workloadcluster", wc.Name, "msg", "workload Services keep the finalizer "+projection.Finalizer, "error", err)
	}
}

// serviceSelector is the WorkloadCluster's selector of Services; every Service when unset.
func serviceSelector(wc *v1alpha1.WorkloadCluster) (labels.Selector, error) {
	if wc.Spec.ServiceSelector == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(wc.Spec.ServiceSelector)
}
