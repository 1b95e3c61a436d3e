// SPDX-License-Identifier: Apache-2.0

package speakercontroller

import (
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
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
