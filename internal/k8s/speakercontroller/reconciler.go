// SPDX-License-Identifier: Apache-2.0

// Package speakercontroller runs a speaker's decisions: on any change of the configuration,
// Services, EndpointSlices, Nodes or speaker leases it recomputes the node's plan (package
// announce) and applies it to BGP, ARP/NDP and the datapath, then reports it in
// ServiceBGPStatus/ServiceL2Status objects, events and metrics, as upstream's speaker does.
package speakercontroller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	maglbv1alpha1 "github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/lbservice"
)

// BGP is the node's BGP speaker.
type BGP interface {
	SetPeers(ctx context.Context, peers []config.Peer, routerID netip.Addr) error
	SetRoutes(ctx context.Context, routes []announce.Route) error
}

// L2 answers ARP/NDP for the IPs it is given, on the given interfaces (none: all).
type L2 interface {
	SetAnnounced(ips map[netip.Addr][]string) error
}

// syncKey is the one request: every change recomputes the whole plan, which is cheap.
var syncKey = types.NamespacedName{Namespace: "maglb.io", Name: "speaker"}

// Reconciler applies the node's plan.
type Reconciler struct {
	Client    client.Client
	Recorder  record.EventRecorder
	Namespace string
	NodeName  string
	LBClass   string
	BGP       BGP
	L2        L2
	Datapath  datapath.Datapath
	Mode      announce.DatapathMode
	Encap     datapath.Encap
	// IgnoreExcludeLB is upstream's --ignore-exclude-lb.
	IgnoreExcludeLB bool
	Logger          log.Logger

	mu       sync.Mutex
	config   *config.Config
	peersSet *config.Config // the configuration whose peers BGP has
	trigger  chan event.GenericEvent
	// announced remembers what report said of each service, for events on changes.
	announced map[string]reported
	status    *statusWriter
	// nextPass is when the next pass may start (passGap after the last one).
	nextPass time.Time
	// changed: a watched object other than a lease changed, or the last pass asked for a
	// retry, since the last pass began; lastLive is the speakers' liveness that pass saw.
	changed  atomic.Bool
	lastLive map[string]bool
	// services and slices read the cache's objects; the memos keep what a pass derived from
	// each (snapshot.go).
	services      store[*corev1.Service]
	slices        store[*discoveryv1.EndpointSlice]
	serviceInputs memo[serviceInput]
	sliceInputs   memo[sliceEndpoints]
}

// serviceInput is what a pass derives from a Service: whether this speaker handles it, and
// if so the decisions' view of it, endpoints left out.
type serviceInput struct {
	handled bool
	service announce.Service
}

// passGap is how long the next pass waits after a pass that lasted took: a pass reads every
// Service, so under a burst of events (thousands of Services created) back-to-back passes
// would each cover a few events and take a core between them. Spaced, one pass covers every
// event of its gap and a speaker spends at most a third of a core on them; a change waits at
// most two passes (a few milliseconds at a hundred Services, well under a second at 10,000).
func passGap(took time.Duration) time.Duration {
	return min(2*took, maxPassGap)
}

const maxPassGap = 2 * time.Second

// SetConfig is called with every new valid configuration.
func (r *Reconciler) SetConfig(cfg *config.Config) {
	r.mu.Lock()
	r.config = cfg
	r.mu.Unlock()
	r.Trigger()
}

// Trigger asks for a recomputation.
func (r *Reconciler) Trigger() {
	obj := &corev1.Service{}
	obj.Namespace, obj.Name = syncKey.Namespace, syncKey.Name
	select {
	case r.trigger <- event.GenericEvent{Object: obj}:
	default: // one is pending already
	}
}

func (r *Reconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	if wait := time.Until(r.nextPass); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	r.mu.Lock()
	cfg := r.config
	r.mu.Unlock()
	if cfg == nil {
		return ctrl.Result{}, nil
	}
	leases, err := r.leases(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	// A lease's expiry makes no event: the pass asked to look again then only runs when a
	// speaker's liveness changed and an L2 election depends on it, or an expired lease is
	// to be cleaned up. At 10,000 Services a pass takes tens of milliseconds, and with 50
	// speakers renewing their leases every second each would otherwise run one every few
	// seconds for nothing; on a loaded API server, renewals arriving late made the liveness
	// flap, and with it passes in every speaker.
	livenessChanged := announce.ElectsL2(cfg) && !maps.Equal(leases.live, r.lastLive)
	if !r.changed.Swap(false) && !livenessChanged && len(leases.expired) == 0 {
		return ctrl.Result{RequeueAfter: leases.recheck}, nil
	}
	r.lastLive = leases.live
	started := time.Now()
	defer func() { r.nextPass = time.Now().Add(passGap(time.Since(started))) }()
	recheck, retry, err := r.pass(ctx, cfg, leases)
	if err != nil || retry {
		r.changed.Store(true) // a retry is a full pass
	}
	return ctrl.Result{RequeueAfter: recheck}, err
}

// pass decides and applies the node's plan. It returns when to look again, and whether
// that must be a full pass (services the datapath refused).
func (r *Reconciler) pass(ctx context.Context, cfg *config.Config, leases leaseView) (recheck time.Duration, retry bool, err error) {
	recheck = leases.recheck
	in, byKey, err := r.input(ctx, cfg, leases.live)
	if err != nil {
		return 0, false, err
	}
	// One way through: the datapath programs what the node would serve, its verdicts go
	// into the decision, then routes and ARP/NDP follow it; status objects are written
	// afterwards, in the background.
	plan := announce.Decide(in)
	if in.DatapathFailed = r.program(ctx, plan.Datapath); len(in.DatapathFailed) > 0 {
		plan = announce.Decide(in)
		// An id freed by this pass's removals serves a refused service at the next one.
		recheck, retry = minPositive(recheck, datapathRetry), true
	}

	var errs []error
	if r.peersSet != cfg {
		me := nodeAddr(in.Nodes, r.NodeName)
		if err := r.BGP.SetPeers(ctx, announce.PeersOf(cfg, nodeLabels(in.Nodes, r.NodeName)), me); err != nil {
			errs = append(errs, fmt.Errorf("setting BGP peers: %w", err))
		} else {
			r.peersSet = cfg
		}
	}
	if err := r.BGP.SetRoutes(ctx, plan.Routes); err != nil {
		errs = append(errs, fmt.Errorf("announcing BGP routes: %w", err))
	}
	if err := r.L2.SetAnnounced(plan.L2); err != nil {
		errs = append(errs, fmt.Errorf("answering ARP/NDP: %w", err))
	}
	r.report(plan, byKey)
	r.status.want(plan)
	for i := range leases.expired {
		if err := forgetSpeaker(ctx, r.Client, &leases.expired[i]); err != nil {
			errs = append(errs, err)
		}
	}
	// Renewals are filtered out of the watch and expiry makes no event: look again when the
	// first live lease would expire.
	return recheck, retry, errors.Join(errs...)
}

// datapathRetry is how soon a pass that left services unprogrammed is retried.
const datapathRetry = 5 * time.Second

func minPositive(a, b time.Duration) time.Duration {
	if a <= 0 {
		return b
	}
	return min(a, b)
}

// program syncs the datapath and returns the VIPs it could not program, with the reason.
func (r *Reconciler) program(ctx context.Context, want []datapath.Service) map[netip.Addr]error {
	if r.Mode != announce.EBPF {
		return nil
	}
	err := r.Datapath.Sync(ctx, want)
	failed := map[netip.Addr]error{}
	for key, why := range datapath.Failed(err, want) {
		failed[key.VIP] = why
	}
	if err != nil {
		level.Error(r.Logger).Log("op", "programDatapath", "failed", len(failed), "error", err)
	}
	return failed
}

// report emits nodeAssigned when the node starts announcing a service with a protocol, and
// DatapathFailed when the datapath starts refusing it, and updates metallb_speaker_announced.
// The recorder sends events in the background.
func (r *Reconciler) report(plan announce.Plan, services map[string]*corev1.Service) {
	now := make(map[string]reported, len(plan.Services))
	for key, state := range plan.Services {
		before, known := r.announced[key]
		if state.DatapathError != nil && !before.datapathFailed {
			r.Recorder.Eventf(services[key], corev1.EventTypeWarning, "DatapathFailed", "withdrawn from node %q: the datapath cannot forward it: %v", r.NodeName, state.DatapathError)
		}
		after := reported{bgp: len(state.BGPPeers) > 0, layer2: state.L2, datapathFailed: state.DatapathError != nil}
		now[key] = after
		for _, p := range []struct {
			protocol string
			was, is  bool
		}{{"bgp", before.bgp, after.bgp}, {"layer2", before.layer2, after.layer2}} {
			if known && p.was == p.is {
				continue // the gauge holds it already
			}
			announcedGauge.WithLabelValues(r.NodeName, p.protocol, key).Set(boolFloat(p.is))
			if p.is {
				r.Recorder.Eventf(services[key], corev1.EventTypeNormal, "nodeAssigned", "announcing from node %q with protocol %q", r.NodeName, p.protocol)
			}
		}
	}
	for key := range r.announced {
		if _, ok := now[key]; !ok {
			announcedGauge.DeletePartialMatch(map[string]string{"service": key})
		}
	}
	r.announced = now
}

// reported is what report last said of a service: the protocols announcing it, and whether
// the datapath refused it.
type reported struct{ bgp, layer2, datapathFailed bool }

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// leaseView is what the speakers' leases say: which nodes' speakers live, when to look
// again (the first live lease's expiry; 0: no live lease) and, when this speaker is the one
// that cleans up (cleansUp), the leases of other speakers that expired: crashed ones.
type leaseView struct {
	live    map[string]bool
	recheck time.Duration
	expired []coordinationv1.Lease
}

func (r *Reconciler) leases(ctx context.Context) (leaseView, error) {
	var leases coordinationv1.LeaseList
	if err := r.Client.List(ctx, &leases, client.InNamespace(r.Namespace)); err != nil {
		return leaseView{}, err
	}
	v := leaseView{live: map[string]bool{}}
	now := time.Now()
	for i := range leases.Items {
		l := &leases.Items[i]
		node := nodeOfLease(l)
		switch {
		case node == "":
		case liveAt(l, now):
			v.live[node] = true
			if left := expiry(l).Sub(now) + leaseRecheck; v.recheck == 0 || left < v.recheck {
				v.recheck = left
			}
		case node != r.NodeName:
			v.expired = append(v.expired, *l)
		}
	}
	if !cleansUp(v.live, r.NodeName) {
		v.expired = nil
	}
	return v, nil
}

// input reads what the decisions need from the cache, with the services by key.
func (r *Reconciler) input(ctx context.Context, cfg *config.Config, live map[string]bool) (announce.Input, map[string]*corev1.Service, error) {
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return announce.Input{}, nil, err
	}
	in := announce.Input{
		NodeName: r.NodeName, Config: cfg, Datapath: r.Mode, Encap: r.Encap,
		ExcludeLabelIgnored: r.IgnoreExcludeLB,
	}
	for _, n := range nodes.Items {
		in.Nodes = append(in.Nodes, announce.Node{
			Name: n.Name, Labels: n.Labels, Addrs: InternalIPs(&n), Live: live[n.Name],
			NetworkUnavailable: networkUnavailable(&n),
		})
	}
	endpoints := endpointsByService(r.slices.list(), &r.sliceInputs)
	byKey := map[string]*corev1.Service{}
	for _, svc := range r.services.list() {
		derived := r.serviceInputs.get(svc, func() serviceInput { return r.serviceInput(svc) })
		if !derived.handled {
			continue
		}
		service := derived.service
		service.Endpoints = endpoints[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}]
		byKey[service.Key] = svc
		in.Services = append(in.Services, service)
	}
	r.serviceInputs.forgetUnseen()
	return in, byKey, nil
}

func (r *Reconciler) serviceInput(svc *corev1.Service) serviceInput {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || !lbservice.Handles(svc, r.LBClass) {
		return serviceInput{}
	}
	return serviceInput{handled: true, service: Service(svc)}
}

// Service is the decisions' view of a LoadBalancer Service, endpoints left out: the
// speaker's, and the reflector's.
func Service(svc *corev1.Service) announce.Service {
	return announce.Service{
		Key:          lbservice.Key(svc),
		Labels:       svc.Labels,
		IPs:          lbservice.IngressIPs(svc.Status.LoadBalancer),
		Pool:         svc.Annotations[lbservice.AnnotationIPAllocatedFromPool],
		LocalTraffic: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
		SharedIP:     lbservice.SharingKey(svc) != "",
		Ports:        ports(svc),
	}
}

func ports(svc *corev1.Service) []announce.Port {
	var out []announce.Port
	for _, p := range svc.Spec.Ports {
		proto := datapath.TCP
		switch p.Protocol {
		case corev1.ProtocolUDP:
			proto = datapath.UDP
		case corev1.ProtocolSCTP:
			continue // the datapath forwards TCP and UDP only
		}
		out = append(out, announce.Port{Protocol: proto, Port: uint16(p.Port)})
	}
	return out
}

// endpointsByService returns the endpoints of every service, deriving those of a slice only
// when it is new or changed (memo).
func endpointsByService(items []*discoveryv1.EndpointSlice, memo *memo[sliceEndpoints]) map[types.NamespacedName][]announce.Endpoint {
	out := make(map[types.NamespacedName][]announce.Endpoint, len(items))
	for _, s := range items {
		derived := memo.get(s, func() sliceEndpoints { return endpointsOf(s) })
		if derived.service.Name == "" {
			continue
		}
		// A service's first slice is shared with the memo, not copied: its endpoints are
		// clipped, so appending a second slice's copies them first.
		if have := out[derived.service]; have == nil {
			out[derived.service] = derived.endpoints
		} else {
			out[derived.service] = append(have, derived.endpoints...)
		}
	}
	memo.forgetUnseen()
	return out
}

// sliceEndpoints are the endpoints of one EndpointSlice and the service they serve (none
// when the slice names no service).
type sliceEndpoints struct {
	service   types.NamespacedName
	endpoints []announce.Endpoint
}

// endpointsOf reads a slice's endpoints as upstream reads readiness: ready, or serving while
// terminating. The endpoints of a projected EndpointSlice are workload nodes, weighted as its
// annotation says (1 when it does not name them).
func endpointsOf(s *discoveryv1.EndpointSlice) sliceEndpoints {
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return sliceEndpoints{}
	}
	out := sliceEndpoints{service: types.NamespacedName{Namespace: s.Namespace, Name: name}}
	var weights map[netip.Addr]uint32
	if s.Labels[discoveryv1.LabelManagedBy] == maglbv1alpha1.EndpointSliceManagedBy {
		weights, _ = maglbv1alpha1.ParseEndpointWeights(s.Annotations[maglbv1alpha1.AnnotationEndpointWeights])
		if weights == nil {
			weights = map[netip.Addr]uint32{}
		}
	}
	for _, e := range s.Endpoints {
		c := e.Conditions
		ready := c.Ready == nil || *c.Ready || (c.Serving != nil && *c.Serving)
		node := ""
		if e.NodeName != nil {
			node = *e.NodeName
		}
		for _, a := range e.Addresses {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				continue
			}
			ep := announce.Endpoint{Addr: ip.Unmap(), Node: node, Ready: ready}
			if weights != nil {
				ep.Weight = max(weights[ep.Addr], 1)
			}
			out.endpoints = append(out.endpoints, ep)
		}
	}
	out.endpoints = slices.Clip(out.endpoints)
	return out
}

// InternalIPs returns the node's InternalIP addresses.
func InternalIPs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// nodeAddr returns the node's address that identifies it to its BGP peers: its first IPv4
// InternalIP (a BGP router ID is four bytes), else its first.
func nodeAddr(nodes []announce.Node, name string) netip.Addr {
	i := slices.IndexFunc(nodes, func(n announce.Node) bool { return n.Name == name })
	if i < 0 || len(nodes[i].Addrs) == 0 {
		return netip.Addr{}
	}
	if v4, ok := nodes[i].AddrOfFamily(netip.IPv4Unspecified()); ok {
		return v4
	}
	return nodes[i].Addrs[0]
}

func nodeLabels(nodes []announce.Node, name string) map[string]string {
	if i := slices.IndexFunc(nodes, func(n announce.Node) bool { return n.Name == name }); i >= 0 {
		return nodes[i].Labels
	}
	return nil
}

func networkUnavailable(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// SetupWithManager watches every input; each change maps to the one request.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.trigger = make(chan event.GenericEvent, 1)
	var err error
	if r.services, err = newStore(context.Background(), mgr.GetCache(), &corev1.Service{}); err != nil {
		return err
	}
	if r.slices, err = newStore(context.Background(), mgr.GetCache(), &discoveryv1.EndpointSlice{}); err != nil {
		return err
	}
	r.status = newStatusWriter(mgr.GetClient(), r.Namespace, r.NodeName, r.Logger)
	if err := mgr.Add(r.status); err != nil {
		return err
	}
	if err := mgr.Add(&heartbeat{client: mgr.GetClient(), reader: mgr.GetAPIReader(), namespace: r.Namespace, node: r.NodeName, logger: r.Logger}); err != nil {
		return err
	}
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []ctrl.Request {
		r.changed.Store(true)
		return []ctrl.Request{{NamespacedName: syncKey}}
	})
	// A lease's change matters only through the liveness it gives, which Reconcile compares
	// with the last pass's: a loaded API server delivers renewals late, each of which looked
	// like a speaker coming back, and passes at 50 speakers fed that load.
	look := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []ctrl.Request {
		return []ctrl.Request{{NamespacedName: syncKey}}
	})
	b := ctrl.NewControllerManagedBy(mgr).Named("speaker").
		WatchesRawSource(source.Channel(r.trigger, one))
	b = b.Watches(&corev1.Service{}, one).Watches(&discoveryv1.EndpointSlice{}, one)
	// Kubelets update their Node every few seconds; only labels, addresses and network
	// availability matter here.
	b = b.Watches(&corev1.Node{}, one, builder.WithPredicates(predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			before, after := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
			return !maps.Equal(before.Labels, after.Labels) || !slices.Equal(InternalIPs(before), InternalIPs(after)) ||
				networkUnavailable(before) != networkUnavailable(after)
		},
	}))
	// Every speaker renews its lease every second: a renewal of a live lease changes nothing,
	// only speakers appearing, leaving, or coming back after their lease expired do.
	b = b.Watches(&coordinationv1.Lease{}, look, builder.WithPredicates(
		predicate.NewPredicateFuncs(func(o client.Object) bool {
			l, ok := o.(*coordinationv1.Lease)
			return ok && l.Namespace == r.Namespace && nodeOfLease(l) != ""
		}),
		predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
			return !liveAt(e.ObjectOld.(*coordinationv1.Lease), time.Now())
		}},
	))
	return b.Complete(r)
}
