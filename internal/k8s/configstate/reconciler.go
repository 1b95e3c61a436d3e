// SPDX-License-Identifier: Apache-2.0

// Package configstate turns the metallb.io objects of the namespace into the configuration in
// effect, and reports the outcome in the component's ConfigurationState, as upstream does. An
// invalid configuration is reported and never replaces the last valid one.
package configstate

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/shard"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// Condition type and reasons upstream's ConfigurationState carries, and MagLB's warning that
// a pool's shard has no node.
const (
	ConditionConfigValid     = "configReconcilerValid"
	ReasonReconciled         = "Reconciled"
	ReasonConfigurationError = "ConfigurationError"

	ConditionShardsServed = "shardsServed"
	ReasonShardUnserved   = "ShardUnserved"

	// ConditionSettingsHonoured is False when the component ignores settings of a valid
	// configuration that it applies otherwise.
	ConditionSettingsHonoured = "settingsHonoured"
	ReasonSettingsIgnored     = "SettingsIgnored"
)

// Reconciler rebuilds the configuration whenever an input changes.
type Reconciler struct {
	Client    client.Client
	Namespace string
	// NodeName, for a speaker, keeps only the peers and BGP advertisements that select the
	// node, so an error in another node's objects does not mark this one invalid.
	NodeName string
	Validate config.Validate
	// StateName is the ConfigurationState to report in: "controller" or "speaker-<node>".
	StateName   string
	StateLabels map[string]string
	// Apply receives every new valid configuration.
	Apply func(*config.Config)
	// Ignored, when set, lists what the component ignores of a valid configuration, which
	// is reported in the ConfigurationState.
	Ignored func(*config.Config) []string
	// Recorder, when set, gets a warning event on each pool whose shard no node serves.
	Recorder record.EventRecorder
	Logger   log.Logger

	current  *config.Config
	unserved []string // shards last reported unserved
}

// NewStateLabels returns upstream's labels of a component's ConfigurationState.
func NewStateLabels(component, nodeName string) map[string]string {
	l := map[string]string{"metallb.io/component-type": component}
	if nodeName != "" {
		l["metallb.io/node-name"] = nodeName
	}
	return l
}

func (r *Reconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	updates.Inc()
	res, err := r.clusterResources(ctx)
	if err != nil {
		updateErrors.Inc()
		return ctrl.Result{}, err
	}
	cfg, cfgErr := config.For(res, r.Validate)
	var unserved, ignored []string
	if cfgErr == nil {
		unserved = r.unservedShards(res)
		if r.Ignored != nil {
			ignored = r.Ignored(cfg)
		}
	}
	if cfgErr != nil {
		configStale.Set(1)
		level.Error(r.Logger).Log("controller", "ConfigReconciler", "error", "failed to parse the configuration", "errorSummary", cfgErr)
	} else {
		configStale.Set(0)
		configLoaded.Set(1)
		if r.current == nil || !reflect.DeepEqual(r.current, cfg) {
			r.current = cfg
			level.Info(r.Logger).Log("controller", "ConfigReconciler", "event", "config reloaded")
			if len(ignored) > 0 {
				level.Warn(r.Logger).Log("controller", "ConfigReconciler", "event", "settings ignored", "ignored", strings.Join(ignored, "; "))
			}
			r.Apply(cfg)
		}
	}
	if err := r.report(ctx, cfgErr, unserved, ignored); err != nil {
		updateErrors.Inc()
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

// unservedShards returns the shards of pools that no node carries the label of, warning
// (once per change) on the pools: their VIPs get allocated but nobody announces them.
func (r *Reconciler) unservedShards(res config.ClusterResources) []string {
	var poolShards []string
	for _, p := range res.Pools {
		poolShards = append(poolShards, p.Spec.Shard)
	}
	var nodeLabels []map[string]string
	for _, n := range res.Nodes {
		nodeLabels = append(nodeLabels, n.Labels)
	}
	unserved := shard.Unserved(poolShards, nodeLabels)
	if r.Recorder != nil && !slices.Equal(unserved, r.unserved) {
		for i := range res.Pools {
			if p := &res.Pools[i]; slices.Contains(unserved, p.Spec.Shard) {
				r.Recorder.Eventf(p, corev1.EventTypeWarning, ReasonShardUnserved,
					"no node carries the label %s: the pool's addresses are allocated but not announced", shard.Label(p.Spec.Shard))
			}
		}
	}
	r.unserved = unserved
	return unserved
}

func (r *Reconciler) report(ctx context.Context, cfgErr error, unserved, ignored []string) error {
	state := &metallbv1beta1.ConfigurationState{}
	state.Name, state.Namespace = r.StateName, r.Namespace
	if _, err := controllerutil.CreateOrPatch(ctx, r.Client, state, func() error {
		if state.Labels == nil {
			state.Labels = map[string]string{}
		}
		for k, v := range r.StateLabels {
			state.Labels[k] = v
		}
		condition := metav1.Condition{Type: ConditionConfigValid, Status: metav1.ConditionTrue, Reason: ReasonReconciled}
		state.Status.Result = metallbv1beta1.ConfigurationResultValid
		state.Status.ErrorSummary = ""
		if cfgErr != nil {
			condition.Status, condition.Reason, condition.Message = metav1.ConditionFalse, ReasonConfigurationError, cfgErr.Error()
			state.Status.Result = metallbv1beta1.ConfigurationResultInvalid
			state.Status.ErrorSummary = cfgErr.Error()
		}
		meta.SetStatusCondition(&state.Status.Conditions, condition)
		shards := metav1.Condition{Type: ConditionShardsServed, Status: metav1.ConditionTrue, Reason: ReasonReconciled}
		if len(unserved) > 0 {
			shards.Status, shards.Reason = metav1.ConditionFalse, ReasonShardUnserved
			shards.Message = fmt.Sprintf("no node serves shard(s) %s: label nodes %s<shard>", strings.Join(unserved, ", "), maglbv1beta1.ShardLabelPrefix)
		}
		meta.SetStatusCondition(&state.Status.Conditions, shards)
		if r.Ignored != nil {
			honoured := metav1.Condition{Type: ConditionSettingsHonoured, Status: metav1.ConditionTrue, Reason: ReasonReconciled}
			if len(ignored) > 0 {
				honoured.Status, honoured.Reason, honoured.Message = metav1.ConditionFalse, ReasonSettingsIgnored, strings.Join(ignored, "; ")
			}
			meta.SetStatusCondition(&state.Status.Conditions, honoured)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("reporting ConfigurationState %s/%s: %w", r.Namespace, r.StateName, err)
	}
	return nil
}

func (r *Reconciler) clusterResources(ctx context.Context) (config.ClusterResources, error) {
	res, err := k8s.ListClusterResources(ctx, r.Client, r.Namespace)
	if err != nil {
		return config.ClusterResources{}, err
	}
	if r.NodeName == "" {
		return res, nil
	}
	node := findNode(res.Nodes, r.NodeName)
	if node == nil {
		return config.ClusterResources{}, fmt.Errorf("node %s not found", r.NodeName)
	}
	res.Peers = selecting(res.Peers, node, func(p metallbv1beta2.BGPPeer) []metav1.LabelSelector { return p.Spec.NodeSelectors })
	res.BGPAdvs = selecting(res.BGPAdvs, node, func(a metallbv1beta1.BGPAdvertisement) []metav1.LabelSelector { return a.Spec.NodeSelectors })
	return res, nil
}

func findNode(nodes []corev1.Node, name string) *corev1.Node {
	for i := range nodes {
		if nodes[i].Name == name {
			return &nodes[i]
		}
	}
	return nil
}

// selecting keeps the items whose node selectors select node (no selector selects every node).
// An invalid selector keeps the item, so that validation reports it.
func selecting[T any](items []T, node *corev1.Node, selectors func(T) []metav1.LabelSelector) []T {
	var out []T
	for _, item := range items {
		sels := selectors(item)
		keep := len(sels) == 0
		for i := range sels {
			sel, err := metav1.LabelSelectorAsSelector(&sels[i])
			if err != nil || sel.Matches(labels.Set(node.Labels)) {
				keep = true
				break
			}
		}
		if keep {
			out = append(out, item)
		}
	}
	return out
}

// SetupWithManager reconciles on any change of an input; every change maps to one request,
// since the whole configuration is rebuilt each time.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []ctrl.Request {
		return []ctrl.Request{{NamespacedName: types.NamespacedName{Namespace: r.Namespace, Name: r.StateName}}}
	})
	inNamespace := builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Namespace
	}))
	b := ctrl.NewControllerManagedBy(mgr).Named("config-" + r.StateName)
	for _, obj := range []client.Object{
		&maglbv1beta1.IPAddressPool{}, &metallbv1beta2.BGPPeer{}, &metallbv1beta1.BFDProfile{},
		&metallbv1beta1.BGPAdvertisement{}, &metallbv1beta1.L2Advertisement{}, &metallbv1beta1.Community{},
		&corev1.Secret{},
	} {
		b = b.Watches(obj, one, inNamespace)
	}
	// Nodes and namespaces matter through their labels only; node status heartbeats do not.
	labelsChanged := builder.WithPredicates(predicate.LabelChangedPredicate{})
	b = b.Watches(&corev1.Node{}, one, labelsChanged).Watches(&corev1.Namespace{}, one, labelsChanged)
	// Someone deleting or editing the ConfigurationState gets it rewritten.
	b = b.Watches(&metallbv1beta1.ConfigurationState{}, one, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == r.Namespace && o.GetName() == r.StateName
	})))
	return b.Complete(r)
}
