// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"strings"
	"testing"

	"github.com/maglb/maglb/internal/testenv"
)

// A pool overlapping another's is refused by the webhook with a message naming both, and
// the Services holding addresses of the first keep them, its counters unchanged.
func TestOverlappingPoolRefusedAllocationsKept(t *testing.T) {
	startController(t, "")
	ensureNamespace(t, "overlap", nil)
	createPool(t, "first", []string{"10.31.0.0/29"}, nil)
	svc := createService(t, "overlap", "held", nil)
	waitForIPs(t, svc, "10.31.0.0")
	waitForPoolStatus(t, "first", 1, 7)

	overlapping := newPool("second", []string{"10.31.0.4/30"}, nil)
	err := testenv.Get(t).Client.Create(context.Background(), overlapping)
	if err == nil {
		deleteObject(t, overlapping)
		t.Fatal("the overlapping pool was admitted")
	}
	for _, want := range []string{`"10.31.0.4/30"`, `"second"`, `"10.31.0.0/29"`, `"first"`, "overlaps"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not name %s", err, want)
		}
	}
	// A Service created after the refusal is allocated from the first pool as before: the
	// controller has processed what came after, and kept what it had.
	after := createService(t, "overlap", "after", nil)
	waitForIPs(t, after, "10.31.0.1")
	assertIPs(t, svc, "10.31.0.0")
	waitForPoolStatus(t, "first", 2, 6)
}
