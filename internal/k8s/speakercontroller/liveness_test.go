// SPDX-License-Identifier: Apache-2.0

package speakercontroller

import (
	"context"
	"testing"
	"time"

	"github.com/go-kit/log"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestLeases(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	lease := func(name string, renewed time.Duration, seconds *int32) *coordinationv1.Lease {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name}}
		l.Spec.LeaseDurationSeconds = seconds
		if renewed >= 0 {
			l.Spec.RenewTime = &metav1.MicroTime{Time: now.Add(-renewed)}
		}
		return l
	}
	four := ptr.To[int32](4)
	for _, tc := range []struct {
		name string
		l    *coordinationv1.Lease
		node string
		live bool
	}{
		{"renewed a second ago", lease("maglb-speaker-lb1", time.Second, four), "lb1", true},
		{"renewed five seconds ago", lease("maglb-speaker-lb1", 5*time.Second, four), "lb1", false},
		{"exactly at expiry", lease("maglb-speaker-lb1", 4*time.Second, four), "lb1", false},
		{"never renewed", lease("maglb-speaker-lb1", -1, four), "lb1", false},
		{"no duration", lease("maglb-speaker-lb1", time.Second, nil), "lb1", false},
		{"another lease", lease("kube-scheduler", time.Second, four), "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := liveAt(tc.l, now); got != tc.live {
				t.Errorf("liveAt = %v, want %v", got, tc.live)
			}
			if got := nodeOfLease(tc.l); got != tc.node {
				t.Errorf("nodeOfLease = %q, want %q", got, tc.node)
			}
		})
	}
}

func TestCleansUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		live map[string]bool
		node string
		want bool
	}{
		{"first live by name", map[string]bool{"lb1": true, "lb2": true, "lb3": true}, "lb1", true},
		{"another is first", map[string]bool{"lb1": true, "lb2": true, "lb3": true}, "lb2", false},
		{"the first one's lease expired", map[string]bool{"lb2": true, "lb3": true}, "lb2", true},
		{"own lease expired", map[string]bool{"lb3": true}, "lb2", false},
		{"alone", map[string]bool{"lb9": true}, "lb9", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cleansUp(tc.live, tc.node); got != tc.want {
				t.Errorf("cleansUp(%v, %s) = %v, want %v", tc.live, tc.node, got, tc.want)
			}
		})
	}
}

// TestRenewalDoesNotTrustTheCache: on a loaded API server the cache shows the lease as it was
// several renewals ago; each renewal builds on the lease its last write returned, so none
// fails on an old resourceVersion. After another writer's change, one renewal fails and the
// next reads the lease from the API server again.
func TestRenewalDoesNotTrustTheCache(t *testing.T) {
	ctx := context.Background()
	api := fake.NewClientBuilder().Build()
	h := &heartbeat{client: &staleCache{Client: api, seen: map[client.ObjectKey]*coordinationv1.Lease{}}, reader: api,
		namespace: "metallb-system", node: "lb1", logger: log.NewNopLogger()}
	key := client.ObjectKey{Namespace: "metallb-system", Name: "maglb-speaker-lb1"}
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	renewedAt := func(at time.Time) {
		t.Helper()
		var l coordinationv1.Lease
		if err := api.Get(ctx, key, &l); err != nil {
			t.Fatal(err)
		}
		if !l.Spec.RenewTime.Equal(&metav1.MicroTime{Time: at}) || ptr.Deref(l.Spec.HolderIdentity, "") != "lb1" {
			t.Fatalf("the lease: renewed %v by %q, want %v by lb1", l.Spec.RenewTime, ptr.Deref(l.Spec.HolderIdentity, ""), at)
		}
	}
	for i := range 5 {
		at := start.Add(time.Duration(i) * time.Second)
		if err := h.renew(ctx, at); err != nil {
			t.Fatalf("renewal %d: %v", i, err)
		}
		renewedAt(at)
	}

	var l coordinationv1.Lease
	if err := api.Get(ctx, key, &l); err != nil {
		t.Fatal(err)
	}
	l.Spec.HolderIdentity = ptr.To("someone else")
	if err := api.Update(ctx, &l); err != nil {
		t.Fatal(err)
	}
	if err := h.renew(ctx, start.Add(10*time.Second)); !apierrors.IsConflict(err) {
		t.Fatalf("the renewal after another writer's change: %v, want a conflict", err)
	}
	if err := h.renew(ctx, start.Add(11*time.Second)); err != nil {
		t.Fatalf("the renewal after the conflict: %v", err)
	}
	renewedAt(start.Add(11 * time.Second))
}

// staleCache answers a Get with the first version of each object it read, as a cache whose
// watch lags far behind the writes.
type staleCache struct {
	client.Client
	seen map[client.ObjectKey]*coordinationv1.Lease
}

func (c *staleCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if l, ok := c.seen[key]; ok {
		l.DeepCopyInto(obj.(*coordinationv1.Lease))
		return nil
	}
	if err := c.Client.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	c.seen[key] = obj.(*coordinationv1.Lease).DeepCopy()
	return nil
}
