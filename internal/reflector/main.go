// SPDX-License-Identifier: Apache-2.0

package reflector

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/bgp"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/k8s/configstate"
	"github.com/maglb/maglb/internal/k8s/speakercontroller"
	"github.com/maglb/maglb/internal/lbservice"
	"github.com/maglb/maglb/internal/logging"
)

// Role is the value of the speaker's --role that runs the reflector.
const Role = "reflector"

// DefaultPort is the reflector's metrics port: beside the speaker's 7472, the
// controller's and the backend agent's.
const DefaultPort = 7477

type options struct {
	k8s.Options
	kubeconfig string
	nodeName   string
	lbClass    string
}

// Main runs the reflector with the command line args and exits when it ends.
func Main(args []string) {
	var o options
	fs := flag.NewFlagSet("speaker --role="+Role, flag.ExitOnError)
	fs.String("role", Role, "speaker (the default), backend-agent or reflector")
	o.Options.Bind(fs, DefaultPort)
	k8s.BindHost(fs, &o.BindHost)
	fs.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig; empty: the in-cluster service account")
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("METALLB_NODE_NAME"), "name of the node the reflector runs on (on its host network): the BGPPeers selecting it are its upstream peers")
	fs.StringVar(&o.lbClass, "lb-class", "", "load balancer class: when set, only Services of this spec.loadBalancerClass are aggregated")
	_ = fs.Parse(args)
	logging.Main(o.LogLevel, func(logger log.Logger) error {
		if err := o.validate(); err != nil {
			return err
		}
		restConfig, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return fmt.Errorf("--kubeconfig (KUBECONFIG) %q: %w", o.kubeconfig, err)
		}
		return run(ctrl.SetupSignalHandler(), restConfig, o, logger)
	})
}

// validate refuses bad flag values before anything starts.
func (o *options) validate() error {
	if err := o.Options.Validate(); err != nil {
		return err
	}
	if o.nodeName == "" {
		return errors.New("the node name is missing: set --node-name or METALLB_NODE_NAME")
	}
	if err := k8s.CheckNodeName(o.nodeName); err != nil {
		return err
	}
	return k8s.CheckLBClass(o.lbClass)
}

func run(ctx context.Context, restConfig *rest.Config, o options, logger log.Logger) error {
	level.Info(logger).Log("op", "startup", "msg", "MagLB reflector starting", "node", o.nodeName, "namespace", o.Namespace)
	mgr, err := k8s.NewManager(restConfig, o.ManagerOptions())
	if err != nil {
		return err
	}
	bgpOptions := bgp.Options{Reflector: true}
	if o.BindHost != "" {
		bgpOptions.ListenAddresses = []string{o.BindHost}
	}
	speaker, err := bgp.New(logger, bgpOptions)
	if err != nil {
		return err
	}
	if err := registerMetrics(crmetrics.Registry); err != nil {
		return err
	}
	defer speaker.Close(context.Background())
	r := New(logger, speaker)
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		r.Run(ctx)
		return nil
	})); err != nil {
		return err
	}
	w := &watcher{client: mgr.GetClient(), reflector: r, nodeName: o.nodeName, lbClass: o.lbClass, trigger: make(chan event.GenericEvent, 1)}
	if err := w.setupWithManager(mgr); err != nil {
		return err
	}
	configs := &configstate.Reconciler{
		Client:    mgr.GetClient(),
		Namespace: o.Namespace,
		// Every peer and advertisement: those addressed to the reflector select the LB
		// nodes, not the reflector's node.
		Validate:    config.ValidationFor("native"),
		StateName:   "reflector-" + o.nodeName,
		StateLabels: configstate.NewStateLabels(Role, o.nodeName),
		Apply:       w.setConfig,
		Ignored:     bgp.Ignored,
		Logger:      logger,
	}
	if err := configs.SetupWithManager(mgr); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// watcher feeds the Reflector the State on every change of the configuration, the
// Nodes or the Services.
type watcher struct {
	client    client.Client
	reflector *Reflector
	nodeName  string
	lbClass   string
	trigger   chan event.GenericEvent

	mu     sync.Mutex
	config *config.Config
}

func (w *watcher) setConfig(cfg *config.Config) {
	w.mu.Lock()
	w.config = cfg
	w.mu.Unlock()
	select {
	case w.trigger <- event.GenericEvent{Object: &corev1.Service{}}:
	default: // one is pending already
	}
}

func (w *watcher) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	w.mu.Lock()
	cfg := w.config
	w.mu.Unlock()
	if cfg == nil {
		return ctrl.Result{}, nil
	}
	var nodes corev1.NodeList
	var services corev1.ServiceList
	// Read only: the cache's objects, not copies of 10,000 Services at every change of one.
	if err := w.client.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, err
	}
	if err := w.client.List(ctx, &services, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, err
	}
	st := State{Config: cfg}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		node := announce.Node{Name: n.Name, Labels: n.Labels, Addrs: speakercontroller.InternalIPs(n)}
		st.Nodes = append(st.Nodes, node)
		if n.Name == w.nodeName {
			st.Self = node
		}
	}
	if st.Self.Name == "" {
		return ctrl.Result{}, errors.New("node " + w.nodeName + " not found")
	}
	for i := range services.Items {
		svc := &services.Items[i]
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || !lbservice.Handles(svc, w.lbClass) {
			continue
		}
		st.Services = append(st.Services, speakercontroller.Service(svc))
	}
	return ctrl.Result{}, w.reflector.SetState(ctx, st)
}

func (w *watcher) setupWithManager(mgr ctrl.Manager) error {
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []ctrl.Request {
		return []ctrl.Request{{}}
	})
	// Kubelets update their Node every few seconds; only labels and addresses matter here.
	nodeChanged := builder.WithPredicates(predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		before, after := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
		return !maps.Equal(before.Labels, after.Labels) ||
			!slices.Equal(speakercontroller.InternalIPs(before), speakercontroller.InternalIPs(after))
	}})
	return ctrl.NewControllerManagedBy(mgr).Named("reflector").
		WatchesRawSource(source.Channel(w.trigger, one)).
		Watches(&corev1.Service{}, one).
		Watches(&corev1.Node{}, one, nodeChanged).
		Complete(w)
}
