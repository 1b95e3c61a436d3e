// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/maglb/maglb/internal/testenv"
)

// A burst of Services allocated at once gets one IPAllocated event each, as upstream's
// controller records: client-go's recorder kept about 1,000 of a burst and dropped the rest.
func TestAllocationBurstRecordsEveryEvent(t *testing.T) {
	const n = 2000
	env := startAPIServer(t)
	createNamespace(t, env, benchNamespace, nil)
	if err := env.Client.Create(context.Background(), newPool("burst", []string{"10.128.0.0/16"}, nil)); err != nil {
		t.Fatal(err)
	}
	createServices(t, env, n)
	clientset, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	allocated := watchAllocations(t, ctx, clientset, n)
	startMagLBController(t, env, filepath.Join(t.TempDir(), "controller.log"))
	select {
	case <-allocated.all:
	case <-time.After(5 * time.Minute):
		t.Fatalf("%d of %d Services have an IP after 5 minutes", allocated.count.Load(), n)
	}
	events := testenv.SettledEvents(t, env.Client, benchNamespace, "IPAllocated")
	if len(events) != n {
		t.Fatalf("%d of %d Services have an IPAllocated event", len(events), n)
	}
	for name, count := range events {
		if count != 1 {
			t.Errorf("%s has %d IPAllocated events, want 1", name, count)
		}
	}
}
