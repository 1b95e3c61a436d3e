// SPDX-License-Identifier: Apache-2.0

package projectioncontroller

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-kit/log/level"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/lbservice"
	"github.com/maglb/maglb/internal/projection"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

const (
	// goneRecheck is how soon a projection being deleted is looked at again.
	goneRecheck = time.Second
	// staleRetry is how soon a write refused because the cache was behind is retried.
	staleRetry = 200 * time.Millisecond
)

// reconcile makes the projection of one workload Service match it.
func (rn *runner) reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	res, err := rn.project(ctx, req.NamespacedName)
	if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
		// The cache was behind a write: look again once it has caught up.
		return reconcile.Result{RequeueAfter: staleRetry}, nil
	}
	if ctx.Err() != nil {
		return reconcile.Result{}, nil // stopping
	}
	rn.setFailure(req.NamespacedName, err)
	if err != nil {
		level.Error(rn.logger).Log("service", req.NamespacedName, "error", err)
	}
	return res, err
}

func (rn *runner) project(ctx context.Context, key types.NamespacedName) (reconcile.Result, error) {
	wclient := rn.workload.GetClient()
	var svc corev1.Service
	if err := wclient.Get(ctx, key, &svc); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
		// Gone from a synced cache: removed, unless the cluster stopped answering and the
		// cache is stale; then the projection is kept until it answers.
		if !rn.isConnected() {
			return reconcile.Result{RequeueAfter: probeInterval}, nil
		}
		return rn.unprojectAndRecheck(ctx, key, rn.r.apiReader)
	}
	if svc.DeletionTimestamp != nil || !projection.Taken(&svc, rn.class, rn.selector) {
		return rn.release(ctx, &svc)
	}
	if !controllerutil.ContainsFinalizer(&svc, projection.Finalizer) {
		patch := client.MergeFromWithOptions(svc.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.AddFinalizer(&svc, projection.Finalizer)
		if err := wclient.Patch(ctx, &svc, patch); err != nil {
			return reconcile.Result{}, fmt.Errorf("adding finalizer %s: %w", projection.Finalizer, err)
		}
	}
	in, err := rn.input(ctx, &svc)
	if err != nil {
		return reconcile.Result{}, err
	}
	if err := rn.ensureNamespace(ctx); err != nil {
		return reconcile.Result{}, err
	}
	projected, err := rn.applyService(ctx, projection.ProjectedService(in))
	if err != nil {
		return reconcile.Result{}, err
	}
	if err := rn.applySlices(ctx, projected.Name, projection.ProjectedSlices(in)); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, rn.writeBack(ctx, &svc, projected)
}

// input gathers the workload Service's EndpointSlices and the nodes they name.
func (rn *runner) input(ctx context.Context, svc *corev1.Service) (projection.Input, error) {
	wclient := rn.workload.GetClient()
	var slices discoveryv1.EndpointSliceList
	if err := wclient.List(ctx, &slices, client.InNamespace(svc.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: svc.Name}); err != nil {
		return projection.Input{}, err
	}
	nodes := map[string]*corev1.Node{}
	for _, s := range slices.Items {
		for _, ep := range s.Endpoints {
			if ep.NodeName == nil {
				continue
			}
			if _, seen := nodes[*ep.NodeName]; seen {
				continue
			}
			var node corev1.Node
			err := wclient.Get(ctx, client.ObjectKey{Name: *ep.NodeName}, &node)
			switch {
			case err == nil:
				nodes[node.Name] = &node
			case apierrors.IsNotFound(err):
				nodes[*ep.NodeName] = nil
			default:
				return projection.Input{}, err
			}
		}
	}
	for name, node := range nodes {
		if node == nil {
			delete(nodes, name)
		}
	}
	return projection.Input{
		Cluster: rn.cluster, Namespace: rn.namespace, LBClass: rn.lbClass,
		Service: svc, Slices: slices.Items, Nodes: nodes,
	}, nil
}

func (rn *runner) ensureNamespace(ctx context.Context) error {
	var ns corev1.Namespace
	err := rn.r.Client.Get(ctx, client.ObjectKey{Name: rn.namespace}, &ns)
	if !apierrors.IsNotFound(err) {
		return err
	}
	ns = corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: rn.namespace, Labels: map[string]string{v1alpha1.LabelWorkloadCluster: rn.cluster}}}
	if err := rn.r.Client.Create(ctx, &ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// applyService creates or updates the projected Service and returns it as stored.
func (rn *runner) applyService(ctx context.Context, want *corev1.Service) (*corev1.Service, error) {
	var current corev1.Service
	err := rn.r.Client.Get(ctx, client.ObjectKeyFromObject(want), &current)
	switch {
	case apierrors.IsNotFound(err):
		if err := rn.r.Client.Create(ctx, want); err != nil {
			return nil, fmt.Errorf("creating projected Service %s/%s: %w", want.Namespace, want.Name, err)
		}
		level.Info(rn.logger).Log("service", want.Labels[v1alpha1.LabelWorkloadNamespace]+"/"+want.Labels[v1alpha1.LabelWorkloadName], "projected", want.Namespace+"/"+want.Name, "msg", "projected")
		return want, nil
	case err != nil:
		return nil, err
	}
	updated, changed := projection.UpdateService(&current, want)
	if !changed {
		return &current, nil
	}
	if err := rn.r.Client.Update(ctx, updated); err != nil {
		return nil, fmt.Errorf("updating projected Service %s/%s: %w", want.Namespace, want.Name, err)
	}
	return updated, nil
}

// applySlices makes the projected Service's EndpointSlices those wanted.
func (rn *runner) applySlices(ctx context.Context, projected string, want []discoveryv1.EndpointSlice) error {
	var current discoveryv1.EndpointSliceList
	if err := rn.r.Client.List(ctx, &current, client.InNamespace(rn.namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: projected, discoveryv1.LabelManagedBy: v1alpha1.EndpointSliceManagedBy}); err != nil {
		return err
	}
	byName := map[string]*discoveryv1.EndpointSlice{}
	for i := range current.Items {
		byName[current.Items[i].Name] = &current.Items[i]
	}
	for i := range want {
		w := &want[i]
		cur, ok := byName[w.Name]
		delete(byName, w.Name)
		if !ok {
			if err := rn.r.Client.Create(ctx, w); err != nil {
				return fmt.Errorf("creating EndpointSlice %s/%s: %w", w.Namespace, w.Name, err)
			}
			continue
		}
		if updated, changed := projection.UpdateSlice(cur, w); changed {
			if err := rn.r.Client.Update(ctx, updated); err != nil {
				return fmt.Errorf("updating EndpointSlice %s/%s: %w", w.Namespace, w.Name, err)
			}
		}
	}
	for _, stale := range byName {
		if err := rn.r.Client.Delete(ctx, stale); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}

// writeBack shows the projected Service's VIPs in the workload Service's status.
func (rn *runner) writeBack(ctx context.Context, svc *corev1.Service, projected *corev1.Service) error {
	ingress := projection.Ingress(projected)
	if projection.IngressEqual(svc.Status.LoadBalancer.Ingress, ingress) {
		return nil
	}
	if err := patchIngress(ctx, rn.workload.GetClient(), svc, ingress); err != nil {
		return fmt.Errorf("writing the VIP back: %w", err)
	}
	if len(ingress) > 0 {
		pool := projected.Annotations[lbservice.AnnotationIPAllocatedFromPool]
		rn.recorder.Event(svc, corev1.EventTypeNormal, "IPAllocated", projection.AllocatedMessage(ingress, pool, rn.shardOf(ctx, pool)))
	}
	return nil
}

func (rn *runner) shardOf(ctx context.Context, pool string) string {
	if pool == "" {
		return ""
	}
	var p maglbv1beta1.IPAddressPool
	if err := rn.r.Client.Get(ctx, client.ObjectKey{Namespace: rn.r.Namespace, Name: pool}, &p); err != nil {
		return ""
	}
	return p.Spec.Shard
}

// patchIngress replaces the Service's ingress in one merge patch of its status.
func patchIngress(ctx context.Context, c client.Client, svc *corev1.Service, ingress []corev1.LoadBalancerIngress) error {
	if ingress == nil {
		ingress = []corev1.LoadBalancerIngress{}
	}
	data, err := json.Marshal(map[string]any{"status": map[string]any{"loadBalancer": map[string]any{"ingress": ingress}}})
	if err != nil {
		return err
	}
	return c.Status().Patch(ctx, svc, client.RawPatch(types.MergePatchType, data))
}

// release undoes a projection of a workload Service deleted or no longer taken: the
// projection first, then the ingress written back and the finalizer.
func (rn *runner) release(ctx context.Context, svc *corev1.Service) (reconcile.Result, error) {
	ours := controllerutil.ContainsFinalizer(svc, projection.Finalizer)
	if ours && !projection.Taken(svc, rn.class, rn.selector) {
		// Another WorkloadCluster registering the same cluster may take it, under the same
		// finalizer: the finalizer and the ingress are ours only while our projection exists.
		projected := &corev1.Service{}
		err := rn.r.apiReader.Get(ctx, types.NamespacedName{Namespace: rn.namespace, Name: projection.Name(rn.cluster, svc.Namespace, svc.Name)}, projected)
		if client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, err
		}
		ours = err == nil
	}
	// Without the finalizer nothing was projected, as far as the cache knows; with it, the API
	// server is asked so that a projection just created is not missed.
	reader := client.Reader(rn.r.Client)
	if ours {
		reader = rn.r.apiReader
	}
	if res, err := rn.unprojectAndRecheck(ctx, client.ObjectKeyFromObject(svc), reader); err != nil || res.RequeueAfter > 0 || !ours {
		return res, err
	}
	return reconcile.Result{}, release(ctx, rn.workload.GetClient(), svc)
}

// release clears the ingress projection wrote on a workload Service still in use, then takes
// off the finalizer.
func release(ctx context.Context, c client.Client, svc *corev1.Service) error {
	if svc.DeletionTimestamp == nil && len(svc.Status.LoadBalancer.Ingress) > 0 {
		if err := patchIngress(ctx, c, svc, nil); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("clearing the ingress: %w", err)
		}
	}
	patch := client.MergeFromWithOptions(svc.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(svc, projection.Finalizer)
	if err := c.Patch(ctx, svc, patch); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("removing finalizer %s: %w", projection.Finalizer, err)
	}
	return nil
}

// unprojectAndRecheck deletes the projection of key, which reader says exists, and asks to be
// called again while the API server still has it.
func (rn *runner) unprojectAndRecheck(ctx context.Context, key types.NamespacedName, reader client.Reader) (reconcile.Result, error) {
	name := projection.Name(rn.cluster, key.Namespace, key.Name)
	projected := &corev1.Service{}
	err := reader.Get(ctx, types.NamespacedName{Namespace: rn.namespace, Name: name}, projected)
	switch {
	case apierrors.IsNotFound(err):
		return reconcile.Result{}, rn.deleteSlices(ctx, name)
	case err != nil:
		return reconcile.Result{}, err
	}
	if err := rn.deleteSlices(ctx, name); err != nil {
		return reconcile.Result{}, err
	}
	if projected.DeletionTimestamp == nil {
		if err := rn.r.Client.Delete(ctx, projected); client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, err
		}
		level.Info(rn.logger).Log("service", key, "projected", rn.namespace+"/"+name, "msg", "projection removed")
	}
	err = rn.r.apiReader.Get(ctx, client.ObjectKeyFromObject(projected), projected)
	switch {
	case apierrors.IsNotFound(err):
		return reconcile.Result{}, nil
	case err != nil:
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: goneRecheck}, nil
}

func (rn *runner) deleteSlices(ctx context.Context, projected string) error {
	var slices discoveryv1.EndpointSliceList
	if err := rn.r.Client.List(ctx, &slices, client.InNamespace(rn.namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: projected, discoveryv1.LabelManagedBy: v1alpha1.EndpointSliceManagedBy}); err != nil {
		return err
	}
	for i := range slices.Items {
		if err := rn.r.Client.Delete(ctx, &slices.Items[i]); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}
