// SPDX-License-Identifier: Apache-2.0

package projection

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// Tally counts a workload cluster's taken Services, those projected (projected holds the
// projections by the key of their workload Service) and those showing their VIP.
type Tally struct {
	Taken, Projected, WithVIP int
}

// Count tallies services, the workload cluster's, against their projections.
func Count(services []corev1.Service, projected map[types.NamespacedName]*corev1.Service, class string, selector labels.Selector) Tally {
	var t Tally
	for i := range services {
		svc := &services[i]
		if svc.DeletionTimestamp != nil || !Taken(svc, class, selector) {
			continue
		}
		t.Taken++
		p, ok := projected[types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}]
		if !ok {
			continue
		}
		t.Projected++
		if ingress := Ingress(p); len(ingress) > 0 && IngressEqual(ingress, svc.Status.LoadBalancer.Ingress) {
			t.WithVIP++
		}
	}
	return t
}

// SyncState is what a WorkloadCluster's Synced condition is decided from.
type SyncState struct {
	CacheSynced bool // the workload cluster's cache has synced
	Connected   bool
	Tally       Tally
	// Failures are the last errors of the Services that could not be projected, by key.
	Failures map[string]string
}

// Synced decides the Synced condition: true when every taken Service is projected from a
// synced cache of a cluster that answers; else why not, in words.
func Synced(s SyncState) (metav1.ConditionStatus, string, string) {
	switch {
	case !s.CacheSynced:
		return metav1.ConditionFalse, "CacheNotSynced", "waiting for the workload cluster's Services, EndpointSlices and Nodes"
	case len(s.Failures) > 0:
		keys := slices.SortedFunc(maps.Keys(s.Failures), cmp.Compare[string])
		return metav1.ConditionFalse, "ProjectionFailed", fmt.Sprintf("%d Services not projected; %s: %s", len(keys), keys[0], s.Failures[keys[0]])
	case s.Tally.Projected < s.Tally.Taken:
		return metav1.ConditionFalse, "Projecting", fmt.Sprintf("%d of %d taken Services projected", s.Tally.Projected, s.Tally.Taken)
	case !s.Connected:
		return metav1.ConditionFalse, "NotConnected", "projections are kept as last seen until the workload cluster answers"
	}
	return metav1.ConditionTrue, "Synced", fmt.Sprintf("every taken Service (%d) is projected", s.Tally.Taken) + pendingVIPs(s.Tally)
}

func pendingVIPs(t Tally) string {
	if t.WithVIP == t.Taken {
		return ""
	}
	return fmt.Sprintf("; %d without a VIP yet", t.Taken-t.WithVIP)
}
