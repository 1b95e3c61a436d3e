// SPDX-License-Identifier: Apache-2.0

package k8s

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestEventQueueBounded: a full queue drops new events and counts them, keeps the ones it has,
// and takes events again once one is written.
func TestEventQueueBounded(t *testing.T) {
	q := eventQueue{ready: make(chan struct{}, 1)}
	for i := range eventQueueLimit {
		if dropped := q.push(&corev1.Event{}); dropped != 0 {
			t.Fatalf("event %d dropped below the limit", i)
		}
	}
	for want := 1; want <= 2; want++ {
		if dropped := q.push(&corev1.Event{}); dropped != want {
			t.Fatalf("push on a full queue: dropped %d, want %d", dropped, want)
		}
	}
	if q.len() != eventQueueLimit {
		t.Fatalf("queue holds %d events, want the limit %d", q.len(), eventQueueLimit)
	}
	if _, ok := q.tryPop(); !ok {
		t.Fatal("nothing to pop from a full queue")
	}
	if dropped := q.push(&corev1.Event{}); dropped != 0 || q.len() != eventQueueLimit {
		t.Fatalf("after one written: dropped %d, %d queued; want 0 and %d", dropped, q.len(), eventQueueLimit)
	}
	if dropped := q.push(&corev1.Event{}); dropped != 1 {
		t.Fatalf("a new run of drops counts from 1, got %d", dropped)
	}
}
