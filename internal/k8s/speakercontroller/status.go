// SPDX-License-Identifier: Apache-2.0

package speakercontroller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/announce"
)

// Upstream's labels on ServiceBGPStatus and ServiceL2Status objects.
const (
	labelNode             = "metallb.io/node"
	labelServiceName      = "metallb.io/service-name"
	labelServiceNamespace = "metallb.io/service-namespace"
)

const (
	// statusWrites bounds the writes to the API server in flight at once: more load the API
	// server enough to delay the watch events of deletions (measured: 16 doubled the
	// slowest withdrawal of BenchmarkWithdraw).
	statusWrites = 4
	// statusRetry is how long the writer waits after a failed pass.
	statusRetry = time.Second
)

// StatusCache is how the speaker of node caches the status objects: its own only. Cached
// for every node, each speaker would receive every other's writes, N² watch events: at 50
// nodes and 10,000 Services, 125,000 objects each sent to 50 speakers.
func StatusCache(namespace, node string) map[client.Object]cache.ByObject {
	own := cache.ByObject{
		Namespaces: map[string]cache.Config{namespace: {}},
		Label:      labels.SelectorFromSet(labels.Set{labelNode: node}),
	}
	return map[client.Object]cache.ByObject{&metallbv1beta1.ServiceBGPStatus{}: own, &metallbv1beta1.ServiceL2Status{}: own}
}

// errCacheLag: an object the cache does not show yet exists; a later pass updates it.
var errCacheLag = errors.New("a status object exists that the cache does not show yet")

// statusWriter keeps one ServiceBGPStatus and one ServiceL2Status per service this node
// announces, and deletes those of services it no longer announces. It writes in the
// background, so that no announcement or withdrawal waits for the API server: want records
// the latest wanted state, and each pass of Start writes only that, whatever came between.
type statusWriter struct {
	client    client.Client
	namespace string
	node      string
	logger    log.Logger

	mu   sync.Mutex
	bgp  map[string]metallbv1beta1.MetalLBServiceBGPStatus
	l2   map[string]metallbv1beta1.MetalLBServiceL2Status
	wake chan struct{}
}

func newStatusWriter(c client.Client, namespace, node string, logger log.Logger) *statusWriter {
	return &statusWriter{client: c, namespace: namespace, node: node, logger: logger, wake: make(chan struct{}, 1)}
}

// want makes the plan's services the state to write, replacing any not written yet.
func (w *statusWriter) want(plan announce.Plan) {
	bgp := map[string]metallbv1beta1.MetalLBServiceBGPStatus{}
	l2 := map[string]metallbv1beta1.MetalLBServiceL2Status{}
	for key, state := range plan.Services {
		namespace, name, _ := strings.Cut(key, "/")
		if len(state.BGPPeers) > 0 {
			bgp[key] = metallbv1beta1.MetalLBServiceBGPStatus{Node: w.node, ServiceName: name, ServiceNamespace: namespace, Peers: state.BGPPeers}
		}
		if state.L2 {
			status := metallbv1beta1.MetalLBServiceL2Status{Node: w.node, ServiceName: name, ServiceNamespace: namespace}
			for _, iface := range state.L2Interfaces {
				status.Interfaces = append(status.Interfaces, metallbv1beta1.InterfaceInfo{Name: iface})
			}
			l2[key] = status
		}
	}
	w.mu.Lock()
	w.bgp, w.l2 = bgp, l2
	w.mu.Unlock()
	w.poke()
}

func (w *statusWriter) poke() {
	select {
	case w.wake <- struct{}{}:
	default: // a pass is due already, and reads the latest state
	}
}

// Start writes the wanted state after each change until ctx ends, retrying failed passes.
func (w *statusWriter) Start(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		}
		w.mu.Lock()
		bgp, l2 := w.bgp, w.l2
		w.mu.Unlock()
		if err := w.write(ctx, bgp, l2); err != nil && ctx.Err() == nil {
			logAt := level.Error
			if errors.Is(err, errCacheLag) {
				logAt = level.Debug
			}
			logAt(w.logger).Log("op", "writeStatus", "error", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(statusRetry):
				w.poke()
			}
		}
	}
}

func (w *statusWriter) write(ctx context.Context, bgp map[string]metallbv1beta1.MetalLBServiceBGPStatus, l2 map[string]metallbv1beta1.MetalLBServiceL2Status) error {
	var writes []func() error
	err := errors.Join(
		syncObjects(ctx, w, "bgp", &metallbv1beta1.ServiceBGPStatusList{}, bgp, &writes,
			func() *metallbv1beta1.ServiceBGPStatus { return &metallbv1beta1.ServiceBGPStatus{} },
			func(o *metallbv1beta1.ServiceBGPStatus) *metallbv1beta1.MetalLBServiceBGPStatus { return &o.Status },
			func(l *metallbv1beta1.ServiceBGPStatusList) []metallbv1beta1.ServiceBGPStatus { return l.Items }),
		syncObjects(ctx, w, "l2", &metallbv1beta1.ServiceL2StatusList{}, l2, &writes,
			func() *metallbv1beta1.ServiceL2Status { return &metallbv1beta1.ServiceL2Status{} },
			func(o *metallbv1beta1.ServiceL2Status) *metallbv1beta1.MetalLBServiceL2Status { return &o.Status },
			func(l *metallbv1beta1.ServiceL2StatusList) []metallbv1beta1.ServiceL2Status { return l.Items }),
	)
	return errors.Join(err, runBounded(writes, statusWrites))
}

// runBounded runs the functions, at most limit at once, and joins their errors.
func runBounded(fns []func() error, limit int) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	slots := make(chan struct{}, limit)
	for _, f := range fns {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			if err := f(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// syncObjects adds to writes what makes the node's status objects of one kind equal to want
// (by service key).
func syncObjects[O any, PO interface {
	*O
	client.Object
}, L any, PL interface {
	*L
	client.ObjectList
}, S any](
	ctx context.Context, w *statusWriter, prefix string, list PL, want map[string]S, writes *[]func() error,
	newObject func() PO, status func(PO) *S, items func(PL) []O,
) error {
	if err := w.client.List(ctx, list, client.InNamespace(w.namespace), client.MatchingLabels{labelNode: w.node}); err != nil {
		return err
	}
	have := map[string]bool{}
	for _, item := range items(list) {
		obj := PO(&item)
		key := obj.GetLabels()[labelServiceNamespace] + "/" + obj.GetLabels()[labelServiceName]
		wanted, ok := want[key]
		if !ok || have[key] {
			*writes = append(*writes, func() error { return client.IgnoreNotFound(w.client.Delete(ctx, obj)) })
			continue
		}
		have[key] = true
		if !reflect.DeepEqual(*status(obj), wanted) {
			*status(obj) = wanted
			*writes = append(*writes, func() error { return w.client.Status().Update(ctx, obj) })
		}
	}
	for key, wanted := range want {
		if have[key] {
			continue
		}
		namespace, name, _ := strings.Cut(key, "/")
		obj := newObject()
		obj.SetNamespace(w.namespace)
		obj.SetName(statusName(prefix, key, w.node))
		obj.SetLabels(map[string]string{labelNode: w.node, labelServiceName: name, labelServiceNamespace: namespace})
		*writes = append(*writes, func() error {
			err := w.client.Create(ctx, obj)
			if apierrors.IsAlreadyExists(err) {
				return errCacheLag
			}
			if err == nil {
				*status(obj) = wanted
				err = w.client.Status().Update(ctx, obj)
			}
			return err
		})
	}
	return nil
}

// statusName is stable per service and node, so a restarted speaker finds its objects.
func statusName(prefix, key, node string) string {
	sum := sha256.Sum256([]byte(key + "@" + node))
	return prefix + "-" + hex.EncodeToString(sum[:8])
}
