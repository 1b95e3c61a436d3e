// SPDX-License-Identifier: Apache-2.0

package speakercontroller

import (
	"context"
	"testing"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
)

func TestPassGap(t *testing.T) {
	for _, tc := range []struct{ took, want time.Duration }{
		{0, 0},
		{3 * time.Millisecond, 6 * time.Millisecond},
		{400 * time.Millisecond, 800 * time.Millisecond},
		{5 * time.Second, maxPassGap},
	} {
		if got := passGap(tc.took); got != tc.want {
			t.Errorf("passGap(%s) = %s, want %s", tc.took, got, tc.want)
		}
	}
}

// A reconcile within the gap after a pass makes no pass: it comes back when the gap ends.
func TestReconcileWaitsOutTheGap(t *testing.T) {
	r := &Reconciler{nextPass: time.Now().Add(time.Second)}
	res, err := r.Reconcile(context.Background(), ctrl.Request{})
	if err != nil || res.RequeueAfter <= 0 || res.RequeueAfter > time.Second {
		t.Fatalf("Reconcile = %+v, %v; want to come back within a second", res, err)
	}
	r.nextPass = time.Now().Add(-time.Millisecond)
	if res, err := r.Reconcile(context.Background(), ctrl.Request{}); err != nil || res.RequeueAfter != 0 {
		t.Fatalf("after the gap, without a configuration: %+v, %v; want nothing to do", res, err)
	}
}
