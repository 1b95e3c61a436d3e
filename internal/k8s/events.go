// SPDX-License-Identifier: Apache-2.0

package k8s

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/tools/record/util"
	"k8s.io/client-go/tools/reference"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Event writers: enough parallel requests that a burst of thousands of events is written in
// seconds, few enough that the components' own writes keep most of the API server.
const eventWriters = 8

// How long a stopping recorder keeps writing what is queued, and how often it tries one event
// while the API server does not answer (client-go's recorder: 12 tries, 10 s apart).
const (
	eventFlushTimeout = 10 * time.Second
	eventTries        = 12
	eventRetryMax     = 10 * time.Second
)

// EventRecorder records core/v1 Events as client-go's recorder does (the same Events,
// correlated the same way: repeats fold into one Event's count, an object's event spam is
// cut), but queues far more (eventQueueLimit per writer) and writes in parallel. client-go's broadcaster hands events
// to its writer through a channel of 1,000 and silently drops what does not fit: a burst of
// allocations, thousands of events within a second, lost all but the first thousand. Events
// of one object are written in order, by one writer.
type EventRecorder struct {
	scheme     *runtime.Scheme
	source     corev1.EventSource
	sink       record.EventSink
	correlator *record.EventCorrelator
	logger     log.Logger
	queues     [eventWriters]eventQueue
}

var _ record.EventRecorder = (*EventRecorder)(nil)

// NewEventRecorder returns a recorder of events from component, which writes them while mgr
// runs (on every replica: a leader's events and a webhook's alike), then what is queued.
func NewEventRecorder(mgr manager.Manager, component string, logger log.Logger) (*EventRecorder, error) {
	r, err := NewUnmanagedEventRecorder(mgr.GetConfig(), mgr.GetHTTPClient(), mgr.GetScheme(), component, logger)
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(r); err != nil {
		return nil, err
	}
	return r, nil
}

// NewUnmanagedEventRecorder returns a recorder of events from component to the cluster of
// cfg, which writes them while its Start runs: for a cluster no manager runs, such as a
// workload cluster.
func NewUnmanagedEventRecorder(cfg *rest.Config, httpClient *http.Client, scheme *runtime.Scheme, component string, logger log.Logger) (*EventRecorder, error) {
	cs, err := kubernetes.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("creating the events client: %w", err)
	}
	return newEventRecorder(scheme, component, &typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")}, logger), nil
}

func newEventRecorder(scheme *runtime.Scheme, component string, sink record.EventSink, logger log.Logger) *EventRecorder {
	r := &EventRecorder{
		scheme:     scheme,
		source:     corev1.EventSource{Component: component},
		sink:       sink,
		correlator: record.NewEventCorrelatorWithOptions(record.CorrelatorOptions{}),
		logger:     log.With(logger, "op", "event"),
	}
	for i := range r.queues {
		r.queues[i].ready = make(chan struct{}, 1)
	}
	return r
}

// Event queues an event about object; it never blocks on the API server.
func (r *EventRecorder) Event(object runtime.Object, eventtype, reason, message string) {
	r.AnnotatedEventf(object, nil, eventtype, reason, "%s", message)
}

// Eventf is Event with a formatted message.
func (r *EventRecorder) Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	r.AnnotatedEventf(object, nil, eventtype, reason, messageFmt, args...)
}

// AnnotatedEventf is Eventf with annotations on the Event.
func (r *EventRecorder) AnnotatedEventf(object runtime.Object, annotations map[string]string, eventtype, reason, messageFmt string, args ...any) {
	message := fmt.Sprintf(messageFmt, args...)
	ref, err := reference.GetReference(r.scheme, object)
	if err != nil {
		level.Error(r.logger).Log("msg", "no reference to the object: event not recorded", "reason", reason, "message", message, "error", err)
		return
	}
	now := metav1.Now()
	namespace := ref.Namespace
	if namespace == "" {
		namespace = metav1.NamespaceDefault
	}
	event := &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: util.GenerateEventName(ref.Name, now.UnixNano()), Namespace: namespace, Annotations: annotations},
		InvolvedObject:      *ref,
		Reason:              reason,
		Message:             message,
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		Type:                eventtype,
		Source:              r.source,
		ReportingController: r.source.Component,
		ReportingInstance:   r.source.Host,
	}
	level.Debug(r.logger).Log("object", ref.Namespace+"/"+ref.Name, "kind", ref.Kind, "type", eventtype, "reason", reason, "message", message)
	// The first drop of a run, then every thousandth, is logged: a full queue means the API
	// server has not taken events for long.
	if dropped := r.queues[writerOf(ref)].push(event); dropped%1000 == 1 {
		level.Error(r.logger).Log("msg", "event queue full: events dropped", "dropped", dropped, "limit", eventQueueLimit,
			"object", ref.Namespace+"/"+ref.Name, "reason", reason)
	}
}

// writerOf keeps each object's events on one writer, in order.
func writerOf(ref *corev1.ObjectReference) int {
	h := fnv.New32a()
	h.Write([]byte(ref.Namespace + "/" + ref.Name + "/" + string(ref.UID)))
	return int(h.Sum32() % eventWriters)
}

// Start writes events until ctx ends, then what is queued, for at most eventFlushTimeout.
func (r *EventRecorder) Start(ctx context.Context) error {
	flush, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	go func() {
		<-ctx.Done()
		time.AfterFunc(eventFlushTimeout, cancel)
	}()
	var wg sync.WaitGroup
	for i := range r.queues {
		wg.Go(func() { r.write(ctx, flush, &r.queues[i]) })
	}
	wg.Wait()
	lost := 0
	for i := range r.queues {
		lost += r.queues[i].len()
	}
	if lost > 0 {
		level.Error(r.logger).Log("msg", "stopped with events not written", "count", lost)
	}
	return nil
}

// write writes q's events while ctx runs, then those queued until flush ends.
func (r *EventRecorder) write(ctx, flush context.Context, q *eventQueue) {
	for {
		event, ok := q.pop(ctx)
		if !ok || flush.Err() != nil {
			return
		}
		r.record(flush, event)
	}
}

// record correlates event with those written before and writes it (or the count of the
// Event it repeats), retrying while the API server cannot be reached.
func (r *EventRecorder) record(ctx context.Context, event *corev1.Event) {
	result, err := r.correlator.EventCorrelate(event)
	if err != nil {
		level.Error(r.logger).Log("msg", "event correlation failed", "error", err)
	}
	if result.Skip {
		return
	}
	delay := 100 * time.Millisecond
	for try := 1; ; try++ {
		err := r.writeOnce(result.Event, result.Patch)
		if err == nil || !retriable(err) {
			if err != nil && !apierrors.IsAlreadyExists(err) {
				level.Error(r.logger).Log("msg", "the API server rejected the event", "object", event.InvolvedObject.Namespace+"/"+event.InvolvedObject.Name, "reason", event.Reason, "error", err)
			}
			return
		}
		if try == eventTries {
			level.Error(r.logger).Log("msg", "event not written", "object", event.InvolvedObject.Namespace+"/"+event.InvolvedObject.Name, "reason", event.Reason, "tries", try, "error", err)
			return
		}
		select {
		case <-ctx.Done():
			level.Error(r.logger).Log("msg", "event not written: stopping", "object", event.InvolvedObject.Namespace+"/"+event.InvolvedObject.Name, "reason", event.Reason, "error", err)
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, eventRetryMax)
	}
}

// writeOnce patches the Event that event repeats, or creates it, as client-go does.
func (r *EventRecorder) writeOnce(event *corev1.Event, patch []byte) error {
	var written *corev1.Event
	var err error
	repeat := event.Count > 1
	if repeat {
		written, err = r.sink.Patch(event, patch)
	}
	if !repeat || util.IsKeyNotFoundError(err) {
		event.ResourceVersion = ""
		written, err = r.sink.Create(event)
	}
	if err == nil {
		r.correlator.UpdateState(written)
	}
	return err
}

// retriable tells an API server that could not be reached from one that refused the event
// (which it would refuse again).
func retriable(err error) bool {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err)
	}
	return true
}

// eventQueueLimit bounds each writer's queue: far above any burst of allocations (every
// Service of a cluster at once), low enough that an API server down for long with events
// coming in cannot grow the process without end.
const eventQueueLimit = 50000

// eventQueue is a FIFO with one reader, of at most eventQueueLimit events.
type eventQueue struct {
	mu      sync.Mutex
	events  []*corev1.Event
	dropped int
	ready   chan struct{} // a token when events may be waiting
}

// push queues e, unless the queue is full: then e is dropped, and push returns how many were
// dropped since the queue was last below its limit.
func (q *eventQueue) push(e *corev1.Event) (dropped int) {
	q.mu.Lock()
	if len(q.events) >= eventQueueLimit {
		q.dropped++
		dropped = q.dropped
		q.mu.Unlock()
		return dropped
	}
	q.events = append(q.events, e)
	q.dropped = 0
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return 0
}

// pop returns the first event, waiting for one while ctx runs.
func (q *eventQueue) pop(ctx context.Context) (*corev1.Event, bool) {
	for {
		if e, ok := q.tryPop(); ok {
			return e, true
		}
		select {
		case <-q.ready:
		case <-ctx.Done():
			return nil, false
		}
	}
}

func (q *eventQueue) tryPop() (*corev1.Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.events) == 0 {
		return nil, false
	}
	e := q.events[0]
	q.events[0] = nil
	q.events = q.events[1:]
	return e, true
}

func (q *eventQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.events)
}
