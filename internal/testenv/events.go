// SPDX-License-Identifier: Apache-2.0

package testenv

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SettledEvents waits until the number of Events of reason in namespace stops growing (4 s
// without a new one, at most 2 minutes) and returns how many each object has, by name; an
// Event that folds repeats counts as its count. Recorders write asynchronously: counting
// once is not enough to know what they lost.
func SettledEvents(t testing.TB, c client.Client, namespace, reason string) map[string]int {
	t.Helper()
	const quiet, limit = 4 * time.Second, 2 * time.Minute
	start := time.Now()
	var counts map[string]int
	total, lastChange := -1, time.Now()
	for {
		var events corev1.EventList
		if err := c.List(context.Background(), &events, client.InNamespace(namespace)); err != nil {
			t.Fatalf("listing events: %v", err)
		}
		counts = map[string]int{}
		n := 0
		for _, e := range events.Items {
			if e.Reason == reason {
				counts[e.InvolvedObject.Name] += max(int(e.Count), 1)
				n += max(int(e.Count), 1)
			}
		}
		if n != total {
			total, lastChange = n, time.Now()
		}
		if time.Since(lastChange) >= quiet || time.Since(start) >= limit {
			return counts
		}
		time.Sleep(time.Second)
	}
}
