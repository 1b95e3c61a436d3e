// SPDX-License-Identifier: Apache-2.0

package speakercontroller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Speakers prove they live by renewing a Lease each: a node whose lease expired is no longer
// elected to answer ARP/NDP, so another takes over its L2 VIPs. A crashed node is replaced
// within leaseDuration after its last renewal, plus leaseRecheck.
const (
	leasePrefix   = "maglb-speaker-"
	leaseDuration = 4 * time.Second
	leaseRenewal  = time.Second
	// leaseRecheck is the margin after a lease's expiry at which survivors look again.
	leaseRecheck = 100 * time.Millisecond
)

func leaseName(node string) string { return leasePrefix + node }

// nodeOfLease returns the node a speaker lease belongs to, or "" for another lease.
func nodeOfLease(l *coordinationv1.Lease) string {
	node, _ := strings.CutPrefix(l.Name, leasePrefix)
	if node == l.Name {
		return ""
	}
	return node
}

// liveAt reports whether the lease was renewed within its duration before now.
func liveAt(l *coordinationv1.Lease, now time.Time) bool {
	return now.Before(expiry(l))
}

// expiry is when the lease runs out unless renewed; the zero time for an incomplete lease.
func expiry(l *coordinationv1.Lease) time.Time {
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return time.Time{}
	}
	return l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
}

// heartbeat renews the node's lease until ctx ends. On a clean stop it releases the lease, so
// that survivors take over at once, and deletes the node's status objects, which would
// otherwise claim announcements nobody makes (upstream has them deleted with the speaker pod).
type heartbeat struct {
	client client.Client
	// reader reads the lease from the API server: the cache lags behind our own writes on a
	// loaded API server, and an update from its copy fails on the old resourceVersion.
	reader    client.Reader
	namespace string
	node      string
	logger    log.Logger
	// written is the lease as the last write returned it, the base of the next renewal;
	// nil after a failure, when the lease is read again.
	written *coordinationv1.Lease
}

func (h *heartbeat) Start(ctx context.Context) error {
	ticker := time.NewTicker(leaseRenewal)
	defer ticker.Stop()
	for {
		if err := h.renew(ctx, time.Now()); err != nil && ctx.Err() == nil {
			level.Error(h.logger).Log("op", "renewLease", "node", h.node, "error", err)
		}
		select {
		case <-ctx.Done():
			release, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = h.client.Delete(release, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: leaseName(h.node)}})
			_ = deleteStatuses(release, h.client, h.namespace, h.node)
			return nil
		case <-ticker.C:
		}
	}
}

// deleteStatuses deletes the node's ServiceL2Status and ServiceBGPStatus objects.
func deleteStatuses(ctx context.Context, c client.Client, namespace, node string) error {
	of := []client.DeleteAllOfOption{client.InNamespace(namespace), client.MatchingLabels{labelNode: node}}
	return errors.Join(
		c.DeleteAllOf(ctx, &metallbv1beta1.ServiceL2Status{}, of...),
		c.DeleteAllOf(ctx, &metallbv1beta1.ServiceBGPStatus{}, of...),
	)
}

// forgetSpeaker cleans up after a speaker whose lease expired, one that crashed or whose
// node went away: its status objects claim announcements nobody makes. The lease goes first,
// on the condition that it is still the expired one: so the speaker that deletes it is the
// one that cleans up, and a speaker that renewed meanwhile keeps its lease and its objects.
func forgetSpeaker(ctx context.Context, c client.Client, expired *coordinationv1.Lease) error {
	err := c.Delete(ctx, expired, client.Preconditions{UID: &expired.UID, ResourceVersion: &expired.ResourceVersion})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		return err
	}
	node := nodeOfLease(expired)
	if err := deleteStatuses(ctx, c, expired.Namespace, node); err != nil {
		return fmt.Errorf("deleting the status objects of the stopped speaker of %s: %w", node, err)
	}
	return nil
}

// cleansUp reports whether node is the speaker that cleans up after expired ones: the live
// speaker first by name. One cleaner, not every survivor: on a loaded cluster every survivor
// saw every late lease expire and raced to delete it, so the API server's load grew with the
// square of the nodes. Should the cleaner itself stop, its lease expires and the next one
// takes over.
func cleansUp(live map[string]bool, node string) bool {
	if !live[node] {
		return false
	}
	for other := range live {
		if other < node {
			return false
		}
	}
	return true
}

// NeedLeaderElection: every speaker beats.
func (h *heartbeat) NeedLeaderElection() bool { return false }

func (h *heartbeat) renew(ctx context.Context, now time.Time) error {
	key := client.ObjectKey{Namespace: h.namespace, Name: leaseName(h.node)}
	spec := coordinationv1.LeaseSpec{
		HolderIdentity:       ptr.To(h.node),
		LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
		RenewTime:            &metav1.MicroTime{Time: now},
	}
	lease := h.written
	h.written = nil
	write := func(l *coordinationv1.Lease) error { return h.client.Update(ctx, l) }
	if lease == nil {
		lease = &coordinationv1.Lease{}
		err := h.reader.Get(ctx, key, lease)
		switch {
		case apierrors.IsNotFound(err):
			lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: h.namespace, Name: key.Name}}
			write = func(l *coordinationv1.Lease) error { return h.client.Create(ctx, l) }
		case err != nil:
			return err
		}
	}
	lease.Spec = spec
	if err := write(lease); err != nil {
		return err
	}
	h.written = lease
	return nil
}
