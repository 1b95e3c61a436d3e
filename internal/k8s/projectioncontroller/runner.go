// SPDX-License-Identifier: Apache-2.0

package projectioncontroller

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/cluster"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/logging"
	"github.com/maglb/maglb/internal/projection"
)

const (
	// workers is how many workload Services of one cluster are projected at once.
	workers = 8
	// probeInterval is how often the workload API server and the credentials are checked.
	probeInterval = 10 * time.Second
	// Client-side rate limits towards a workload API server, as towards the LB cluster's.
	workloadQPS   = 1000
	workloadBurst = 2000
	// nodesIndex indexes workload EndpointSlices by the nodes of their endpoints.
	nodesIndex = "maglb.io/nodes"
	// eventSource is the workload events' source component, as upstream's controller names itself.
	eventSource = "metallb-controller"
)

// runnerSpec is what a runner is started with; a change of any of it restarts the runner.
type runnerSpec struct {
	cluster   string // the WorkloadCluster's name
	namespace string // of the projections
	class     string
	selector  labels.Selector
	lbClass   string
	config    *rest.Config
}

// runner projects one workload cluster: its cache, its controller keyed by workload Service,
// the event recorder on its API server and the probe of its connection.
type runner struct {
	runnerSpec
	identity string
	r        *Reconciler
	logger   log.Logger
	workload cluster.Cluster
	recorder *k8s.EventRecorder
	queue    workqueue.TypedRateLimitingInterface[reconcile.Request]
	started  time.Time

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	connected metav1.Condition
	synced    bool                            // the workload cache has synced
	failures  map[types.NamespacedName]string // last error of each failing Service
	mirrored  map[types.UID]int32             // events mirrored, with their counts
}

func newRunner(r *Reconciler, spec runnerSpec, identity string) *runner {
	return &runner{
		runnerSpec: spec,
		identity:   identity,
		r:          r,
		logger:     log.With(r.Logger, "controller", "projection", "workloadcluster", spec.cluster),
		// The queue exists from the start: LB-cluster events may be routed here at once.
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request](),
			workqueue.TypedRateLimitingQueueConfig[reconcile.Request]{Name: "projection-" + spec.cluster}),
		started:   time.Now(),
		connected: condition(v1alpha1.ConditionConnected, metav1.ConditionUnknown, ReasonProbing, "probing the workload cluster's API server"),
		failures:  map[types.NamespacedName]string{},
		mirrored:  map[types.UID]int32{},
	}
}

// workloadConfig is cfg with the client-side rate limits raised.
func workloadConfig(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = workloadQPS, workloadBurst
	return cfg
}

// staticMapper maps the few kinds read from a workload cluster without asking its API server,
// so that nothing waits on discovery of a cluster that does not answer.
func staticMapper(*rest.Config, *http.Client) (meta.RESTMapper, error) {
	m := meta.NewDefaultRESTMapper(nil)
	m.Add(corev1.SchemeGroupVersion.WithKind("Service"), meta.RESTScopeNamespace)
	m.Add(corev1.SchemeGroupVersion.WithKind("Node"), meta.RESTScopeRoot)
	m.Add(corev1.SchemeGroupVersion.WithKind("Event"), meta.RESTScopeNamespace)
	m.Add(discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"), meta.RESTScopeNamespace)
	return m, nil
}

func newWorkloadClient(cfg *rest.Config) (client.Client, error) {
	mapper, _ := staticMapper(nil, nil)
	return client.New(workloadConfig(cfg), client.Options{Scheme: k8s.NewScheme(), Mapper: mapper})
}

// start runs the runner until ctx ends or stop is called. It never fails: what goes wrong
// shows in the WorkloadCluster's status.
func (rn *runner) start(ctx context.Context) {
	ctx, rn.cancel = context.WithCancel(ctx)
	if err := rn.build(); err != nil {
		// Only a programming error gets here (the options are static).
		level.Error(rn.logger).Log("op", "start", "error", err)
		rn.setConnected(condition(v1alpha1.ConditionConnected, metav1.ConditionFalse, ReasonKubeconfigInvalid, err.Error()))
		return
	}
	rn.goRun(func() {
		if err := rn.workload.Start(ctx); err != nil {
			level.Error(rn.logger).Log("op", "cache", "error", err)
		}
	})
	rn.goRun(func() { _ = rn.recorder.Start(ctx) })
	rn.goRun(func() { rn.probeLoop(ctx) })
	rn.goRun(func() { rn.run(ctx) })
}

func (rn *runner) goRun(f func()) {
	rn.wg.Add(1)
	go func() {
		defer rn.wg.Done()
		f()
	}()
}

func (rn *runner) stop() {
	if rn.cancel != nil {
		rn.cancel()
	}
	rn.queue.ShutDown()
	rn.wg.Wait()
}

func (rn *runner) build() error {
	cl, err := cluster.New(workloadConfig(rn.config), func(o *cluster.Options) {
		o.Scheme = k8s.NewScheme()
		o.MapperProvider = staticMapper
	})
	if err != nil {
		return err
	}
	if err := cl.GetFieldIndexer().IndexField(context.Background(), &discoveryv1.EndpointSlice{}, nodesIndex, func(obj client.Object) []string {
		var nodes []string
		for _, ep := range obj.(*discoveryv1.EndpointSlice).Endpoints {
			if ep.NodeName != nil && !slices.Contains(nodes, *ep.NodeName) {
				nodes = append(nodes, *ep.NodeName)
			}
		}
		return nodes
	}); err != nil {
		return err
	}
	rn.workload = cl
	rn.recorder, err = k8s.NewUnmanagedEventRecorder(cl.GetConfig(), cl.GetHTTPClient(), cl.GetScheme(), eventSource, rn.logger)
	return err
}

// run waits for the workload cache, which waits for the workload cluster, then projects.
func (rn *runner) run(ctx context.Context) {
	c, err := controller.NewUnmanaged("projection-"+rn.cluster, controller.Options{
		Reconciler:              reconcile.Func(rn.reconcile),
		MaxConcurrentReconciles: workers,
		SkipNameValidation:      ptr.To(true),
		Logger:                  logging.Logr(rn.logger),
		NewQueue: func(string, workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
			return rn.queue
		},
	})
	if err == nil {
		err = rn.watch(c)
	}
	if err != nil {
		level.Error(rn.logger).Log("op", "start", "error", err)
		return
	}
	for _, obj := range []client.Object{&corev1.Service{}, &discoveryv1.EndpointSlice{}, &corev1.Node{}} {
		if _, err := rn.workload.GetCache().GetInformer(ctx, obj); err != nil {
			if ctx.Err() == nil {
				level.Error(rn.logger).Log("op", "start", "error", err)
			}
			return
		}
	}
	if !rn.workload.GetCache().WaitForCacheSync(ctx) {
		return
	}
	rn.mu.Lock()
	rn.synced = true
	rn.mu.Unlock()
	level.Info(rn.logger).Log("op", "start", "msg", "workload cluster cache synced")
	rn.r.poke(rn.cluster)
	rn.enqueueProjected(ctx)
	if err := c.Start(ctx); err != nil {
		level.Error(rn.logger).Log("op", "controller", "error", err)
	}
}

// watch feeds the controller: workload Services, their EndpointSlices, and Nodes (the Services
// with endpoints there). Projected Services reach it through enqueue.
func (rn *runner) watch(c controller.Controller) error {
	wcache := rn.workload.GetCache()
	if err := c.Watch(source.Kind(wcache, &corev1.Service{}, &handler.TypedEnqueueRequestForObject[*corev1.Service]{})); err != nil {
		return err
	}
	if err := c.Watch(source.Kind(wcache, &discoveryv1.EndpointSlice{}, handler.TypedEnqueueRequestsFromMapFunc(
		func(_ context.Context, s *discoveryv1.EndpointSlice) []reconcile.Request {
			name := s.Labels[discoveryv1.LabelServiceName]
			if name == "" {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: name}}}
		}))); err != nil {
		return err
	}
	return c.Watch(source.Kind(wcache, &corev1.Node{}, handler.TypedEnqueueRequestsFromMapFunc(rn.servicesOnNode), nodeChanged()))
}

// nodeChanged passes the Node changes projection reads: its addresses, labels and deletion;
// not the heartbeats.
func nodeChanged() predicate.TypedPredicate[*corev1.Node] {
	return predicate.TypedFuncs[*corev1.Node]{UpdateFunc: func(e event.TypedUpdateEvent[*corev1.Node]) bool {
		o, n := e.ObjectOld, e.ObjectNew
		return !maps.Equal(o.Labels, n.Labels) || (o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) ||
			!slices.Equal(o.Status.Addresses, n.Status.Addresses)
	}}
}

func (rn *runner) servicesOnNode(ctx context.Context, node *corev1.Node) []reconcile.Request {
	var list discoveryv1.EndpointSliceList
	if err := rn.workload.GetCache().List(ctx, &list, client.MatchingFields{nodesIndex: node.Name}); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, s := range list.Items {
		if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
			req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: name}}
			if !slices.Contains(out, req) {
				out = append(out, req)
			}
		}
	}
	return out
}

// enqueue asks for the workload Service key to be projected again.
func (rn *runner) enqueue(key types.NamespacedName) {
	rn.queue.Add(reconcile.Request{NamespacedName: key})
}

// enqueueProjected enqueues the origin of every projection of the cluster, so that those whose
// workload Service is gone are removed.
func (rn *runner) enqueueProjected(ctx context.Context) {
	var list corev1.ServiceList
	if err := rn.r.Client.List(ctx, &list, client.InNamespace(rn.namespace), client.MatchingLabels{v1alpha1.LabelWorkloadCluster: rn.cluster}); err != nil {
		level.Error(rn.logger).Log("op", "enqueueProjected", "error", err)
		return
	}
	for _, svc := range list.Items {
		if key, ok := origin(&svc); ok {
			rn.enqueue(key)
		}
	}
}

// origin is the workload Service a projected Service comes from.
func origin(projected client.Object) (types.NamespacedName, bool) {
	l := projected.GetLabels()
	key := types.NamespacedName{Namespace: l[v1alpha1.LabelWorkloadNamespace], Name: l[v1alpha1.LabelWorkloadName]}
	return key, key.Namespace != "" && key.Name != ""
}

func (rn *runner) setConnected(c metav1.Condition) {
	rn.mu.Lock()
	changed := rn.connected.Status != c.Status || rn.connected.Reason != c.Reason || rn.connected.Message != c.Message
	wasConnected := rn.connected.Status == metav1.ConditionTrue
	rn.connected = c
	synced := rn.synced
	rn.mu.Unlock()
	if !changed {
		return
	}
	level.Info(rn.logger).Log("op", "probe", "connected", c.Status, "reason", c.Reason, "msg", c.Message)
	rn.r.poke(rn.cluster)
	if !wasConnected && c.Status == metav1.ConditionTrue && synced {
		// Deletions of orphans waited for the connection.
		rn.enqueueProjected(context.Background())
	}
}

func (rn *runner) connection() metav1.Condition {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.connected
}

func (rn *runner) isConnected() bool {
	return rn.connection().Status == metav1.ConditionTrue
}

func (rn *runner) setFailure(key types.NamespacedName, err error) {
	rn.mu.Lock()
	_, had := rn.failures[key]
	if err == nil {
		delete(rn.failures, key)
	} else {
		rn.failures[key] = err.Error()
	}
	rn.mu.Unlock()
	if had != (err != nil) {
		rn.r.poke(rn.cluster)
	}
}

func (rn *runner) probeLoop(ctx context.Context) {
	ticker := time.NewTicker(probeInterval)
	defer ticker.Stop()
	for {
		rn.setConnected(probe(ctx, rn.config))
		// Every probe also refreshes the status (lastSyncTime, counts).
		rn.r.poke(rn.cluster)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// syncState decides the Synced condition and counts the projections.
func (rn *runner) syncState(ctx context.Context) (metav1.Condition, projection.Tally) {
	var projected corev1.ServiceList
	if err := rn.r.Client.List(ctx, &projected, client.InNamespace(rn.namespace), client.MatchingLabels{v1alpha1.LabelWorkloadCluster: rn.cluster}); err != nil {
		return condition(v1alpha1.ConditionSynced, metav1.ConditionUnknown, "Error", err.Error()), projection.Tally{}
	}
	byOrigin := map[types.NamespacedName]*corev1.Service{}
	for i := range projected.Items {
		if key, ok := origin(&projected.Items[i]); ok {
			byOrigin[key] = &projected.Items[i]
		}
	}
	rn.mu.Lock()
	state := projection.SyncState{CacheSynced: rn.synced, Connected: rn.connected.Status == metav1.ConditionTrue, Failures: map[string]string{}}
	for key, err := range rn.failures {
		state.Failures[key.String()] = err
	}
	rn.mu.Unlock()
	// Until the cache has synced, the LB cluster's projections are all there is to count.
	state.Tally = projection.Tally{Projected: len(byOrigin)}
	if state.CacheSynced {
		var services corev1.ServiceList
		if err := rn.workload.GetCache().List(ctx, &services); err != nil {
			return condition(v1alpha1.ConditionSynced, metav1.ConditionUnknown, "Error", err.Error()), state.Tally
		}
		state.Tally = projection.Count(services.Items, byOrigin, rn.class, rn.selector)
	}
	status, reason, message := projection.Synced(state)
	return condition(v1alpha1.ConditionSynced, status, reason, message), state.Tally
}
