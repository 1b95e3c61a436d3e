// SPDX-License-Identifier: Apache-2.0

package k8s_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/go-kit/log"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/testenv"
)

// startRecorder runs a manager with an EventRecorder on the shared API server; stop ends the
// manager, which writes what the recorder still holds before returning.
func startRecorder(t *testing.T) (rec *k8s.EventRecorder, stop func()) {
	t.Helper()
	env := testenv.Get(t)
	o := options(t, "--port=0", "--health-probe-port=0")
	mgr, err := k8s.NewManager(env.Config, o.ManagerOptions())
	if err != nil {
		t.Fatal(err)
	}
	if rec, err = k8s.NewEventRecorder(mgr, "maglb-test", log.NewNopLogger()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return rec, stop
}

func eventNamespace(t *testing.T, name string) {
	t.Helper()
	c := testenv.Get(t).Client
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), ns) })
}

func service(namespace string, i int) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{
		Namespace: namespace, Name: fmt.Sprintf("svc-%05d", i), UID: types.UID(fmt.Sprintf("uid-%05d", i)),
	}}
}

// A burst of events about distinct objects, recorded within a fraction of a second (as the
// allocator does at start), is written whole: client-go's recorder keeps about 1,000.
func TestEventBurstIsWrittenWhole(t *testing.T) {
	const n = 5000
	rec, _ := startRecorder(t)
	eventNamespace(t, "burst")
	for i := range n {
		rec.Eventf(service("burst", i), corev1.EventTypeNormal, "IPAllocated", "Assigned IP [\"10.0.%d.%d\"]", i/256, i%256)
	}
	got := testenv.SettledEvents(t, testenv.Get(t).Client, "burst", "IPAllocated")
	if len(got) != n {
		t.Fatalf("%d of %d Services have an IPAllocated event", len(got), n)
	}
	for name, count := range got {
		if count != 1 {
			t.Fatalf("%s has %d IPAllocated events, want 1", name, count)
		}
	}
}

// Repeats of one event fold into one Event's count, as client-go's correlator does.
func TestEventRepeatsFoldIntoCount(t *testing.T) {
	rec, _ := startRecorder(t)
	eventNamespace(t, "repeats")
	svc := service("repeats", 0)
	for range 5 {
		rec.Event(svc, corev1.EventTypeWarning, "AllocationFailed", "no available IPs")
	}
	var events corev1.EventList
	testenv.Eventually(t, "one Event counting 5", func() error {
		if err := testenv.Get(t).Client.List(context.Background(), &events, client.InNamespace("repeats")); err != nil {
			return err
		}
		if len(events.Items) != 1 || events.Items[0].Count != 5 {
			return fmt.Errorf("%d Events, the first counting %d", len(events.Items), firstCount(events.Items))
		}
		return nil
	})
	e := events.Items[0]
	if e.Source.Component != "maglb-test" || e.ReportingController != "maglb-test" || e.InvolvedObject.Name != svc.Name || e.Type != corev1.EventTypeWarning {
		t.Errorf("event %+v: want source and reporting controller maglb-test about %s", e, svc.Name)
	}
}

// Events queued when the manager stops are written before it returns.
func TestEventsQueuedAtStopAreWritten(t *testing.T) {
	const n = 300
	rec, stop := startRecorder(t)
	eventNamespace(t, "stopping")
	for i := range n {
		rec.Event(service("stopping", i), corev1.EventTypeNormal, "nodeAssigned", "announcing")
	}
	stop()
	var events corev1.EventList
	if err := testenv.Get(t).Client.List(context.Background(), &events, client.InNamespace("stopping")); err != nil {
		t.Fatal(err)
	}
	if len(events.Items) != n {
		t.Fatalf("%d of %d events written by the time the manager stopped", len(events.Items), n)
	}
}

func firstCount(events []corev1.Event) int32 {
	if len(events) == 0 {
		return 0
	}
	return events[0].Count
}
