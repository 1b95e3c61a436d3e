// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// readyAnnotation set to "false" on a Pod holding a slot makes it not Ready (its containers
// keep running), which is how the e2e suites flip an endpoint's readiness.
const readyAnnotation = "lab.maglb.io/ready"

// slotReason is the Ready condition's reason on a Pod that got no slot.
const slotReason = "NoPodSlot"

// podSlot is a pod namespace of the lab behind a node, its echo servers already running: the
// Pod of the slot's name bound to the slot's node runs there.
type podSlot struct {
	node  string
	addrs []string
}

// podSlots are the slots by name.
type podSlots map[string]podSlot

func (s *podSlots) String() string { return fmt.Sprint(map[string]podSlot(*s)) }

func (s *podSlots) Set(v string) error {
	name, rest, ok := strings.Cut(v, "=")
	fields := strings.Split(rest, ",")
	if !ok || name == "" || len(fields) < 2 || slices.Contains(fields, "") {
		return fmt.Errorf("%q is not NAME=NODE,ADDR[,ADDR]", v)
	}
	if *s == nil {
		*s = podSlots{}
	}
	(*s)[name] = podSlot{node: fields[0], addrs: fields[1:]}
	return nil
}

// kubelet plays the kubelets of a workload cluster's nodes for the Pods bound to them: a Pod
// runs in the slot of its name on its node; without one it stays Pending.
type kubelet struct {
	kubeconfig string
	nodes      nodeAddrs
	slots      podSlots
}

func (k *kubelet) run(ctx context.Context, logger log.Logger) error {
	if len(k.nodes) == 0 {
		return errors.New("no --node to play the kubelet of")
	}
	for name, s := range k.slots {
		if _, ok := k.nodes[s.node]; !ok {
			return fmt.Errorf("slot %s is on %s, not one of the --node", name, s.node)
		}
	}
	clients, err := clientset(k.kubeconfig)
	if err != nil {
		return err
	}
	changed := make(chan struct{}, 1)
	pods := kickingStore{Store: cache.NewStore(cache.MetaNamespaceKeyFunc), kick: func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}}
	// A reflector of its own rather than an informer's: after the API server comes back, the
	// Pods are watched again within seconds, where an informer's backoff reaches a minute.
	reflector := cache.NewReflectorWithOptions(
		cache.NewListWatchFromClient(clients.CoreV1().RESTClient(), "pods", metav1.NamespaceAll, fields.Everything()),
		&corev1.Pod{}, pods, cache.ReflectorOptions{Name: "kubelet", Backoff: &wait.Backoff{
			Duration: 500 * time.Millisecond, Cap: 2 * time.Second, Factor: 2, Jitter: 0.2, Steps: math.MaxInt32}})
	go reflector.RunWithContext(ctx)
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return reflector.LastSyncResourceVersion() != "", nil
	}); err != nil {
		return nil
	}
	level.Info(logger).Log("op", "startup", "msg", "running the Pods bound to", "nodes", fmt.Sprint(k.nodes), "slots", len(k.slots))
	held := map[string]types.UID{}
	// The tick ends the grace period of terminating Pods, as a kubelet does once their
	// containers have stopped.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		var bound []*corev1.Pod
		for _, o := range pods.List() {
			if p := o.(*corev1.Pod); k.nodes[p.Spec.NodeName] != nil {
				bound = append(bound, p)
			}
		}
		held = claimSlots(k.slots, bound, held)
		for _, p := range bound {
			if err := k.sync(ctx, logger, clients, p, held); err != nil && ctx.Err() == nil {
				level.Error(logger).Log("op", "sync", "pod", p.Namespace+"/"+p.Name, "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
		}
	}
}

// kickingStore is the cache of Pods; every change to it wakes the sync loop.
type kickingStore struct {
	cache.Store
	kick func()
}

func (s kickingStore) Add(o any) error {
	defer s.kick()
	return s.Store.Add(o)
}

func (s kickingStore) Update(o any) error {
	defer s.kick()
	return s.Store.Update(o)
}

func (s kickingStore) Delete(o any) error {
	defer s.kick()
	return s.Store.Delete(o)
}

func (s kickingStore) Replace(list []any, resourceVersion string) error {
	defer s.kick()
	return s.Store.Replace(list, resourceVersion)
}

// sync deletes a Pod whose grace period is over, or writes the status it should have.
func (k *kubelet) sync(ctx context.Context, logger log.Logger, clients kubernetes.Interface, p *corev1.Pod, held map[string]types.UID) error {
	if p.DeletionTimestamp != nil && !time.Now().Before(p.DeletionTimestamp.Time) {
		err := clients.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To(int64(0)), Preconditions: &metav1.Preconditions{UID: &p.UID}})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		if err == nil {
			level.Info(logger).Log("op", "delete", "pod", p.Namespace+"/"+p.Name, "msg", "grace period over")
		}
		return err
	}
	want := podStatus(p, k.slots, held, k.nodes[p.Spec.NodeName], time.Now())
	if statusEqual(want, p.Status) {
		return nil
	}
	updated := p.DeepCopy()
	updated.Status = want
	_, err := clients.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // the informer brings the newer Pod
	}
	if err == nil {
		level.Info(logger).Log("op", "status", "pod", p.Namespace+"/"+p.Name, "phase", want.Phase, "ready", podReady(want),
			"podIPs", fmt.Sprint(want.PodIPs))
	}
	return err
}

func statusEqual(a, b corev1.PodStatus) bool { return equality.Semantic.DeepEqual(a, b) }

func podReady(s corev1.PodStatus) bool {
	return slices.ContainsFunc(s.Conditions, func(c corev1.PodCondition) bool {
		return c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
	})
}

// claimSlots says which Pod holds each slot: the Pod of the slot's name bound to the slot's
// node. A slot held by a Pod that is still there stays with it; a free slot goes to the oldest
// claimant (Pods of the same name in other namespaces wait for it). held is not modified.
func claimSlots(slots podSlots, pods []*corev1.Pod, held map[string]types.UID) map[string]types.UID {
	claimants := map[string][]*corev1.Pod{}
	for _, p := range pods {
		if s, ok := slots[p.Name]; ok && s.node == p.Spec.NodeName {
			claimants[p.Name] = append(claimants[p.Name], p)
		}
	}
	next := map[string]types.UID{}
	for name, ps := range claimants {
		if i := slices.IndexFunc(ps, func(p *corev1.Pod) bool { return p.UID == held[name] }); i >= 0 {
			next[name] = ps[i].UID
			continue
		}
		sort.Slice(ps, func(i, j int) bool {
			a, b := ps[i].CreationTimestamp, ps[j].CreationTimestamp
			return a.Before(&b) || (a.Equal(&b) && ps[i].UID < ps[j].UID)
		})
		next[name] = ps[0].UID
	}
	return next
}

// podStatus is the status a Pod bound to one of the nodes has: Running in its slot (Ready
// unless its readyAnnotation says "false"), or Pending with a Ready condition saying why it
// got no slot. Fields a kubelet does not write (qosClass) and transition and start times where
// nothing changed are kept from the current status, so an unchanged Pod compares equal.
func podStatus(p *corev1.Pod, slots podSlots, held map[string]types.UID, hostIPs []string, now time.Time) corev1.PodStatus {
	s := *p.Status.DeepCopy()
	s.Phase, s.HostIP, s.HostIPs, s.PodIP, s.PodIPs, s.ContainerStatuses = corev1.PodPending, hostIPs[0], nil, "", nil, nil
	for _, ip := range hostIPs {
		s.HostIPs = append(s.HostIPs, corev1.HostIP{IP: ip})
	}
	if s.StartTime == nil {
		s.StartTime = &metav1.Time{Time: now}
	}
	since := metav1.Time{Time: now}
	slot, ok := slots[p.Name]
	switch {
	case !ok || slot.node != p.Spec.NodeName:
		s.Conditions = conditions(p, since, map[corev1.PodConditionType]corev1.ConditionStatus{
			corev1.PodScheduled: corev1.ConditionTrue, corev1.PodReady: corev1.ConditionFalse},
			fmt.Sprintf("node %s has no pod slot named %s (slots are named <node>-pod<n>)", p.Spec.NodeName, p.Name))
		return s
	case held[p.Name] != p.UID:
		s.Conditions = conditions(p, since, map[corev1.PodConditionType]corev1.ConditionStatus{
			corev1.PodScheduled: corev1.ConditionTrue, corev1.PodReady: corev1.ConditionFalse},
			fmt.Sprintf("pod slot %s on %s is held by another Pod of that name", p.Name, p.Spec.NodeName))
		return s
	}
	ready := corev1.ConditionTrue
	if p.Annotations[readyAnnotation] == "false" {
		ready = corev1.ConditionFalse
	}
	s.Phase = corev1.PodRunning
	s.PodIP = slot.addrs[0]
	for _, ip := range slot.addrs {
		s.PodIPs = append(s.PodIPs, corev1.PodIP{IP: ip})
	}
	s.Conditions = conditions(p, since, map[corev1.PodConditionType]corev1.ConditionStatus{
		corev1.PodReadyToStartContainers: corev1.ConditionTrue, corev1.PodInitialized: corev1.ConditionTrue,
		corev1.PodScheduled: corev1.ConditionTrue, corev1.ContainersReady: ready, corev1.PodReady: ready}, "")
	started := *s.StartTime
	for _, c := range p.Spec.Containers {
		s.ContainerStatuses = append(s.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: ready == corev1.ConditionTrue, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
		})
	}
	return s
}

// conditions builds the conditions of the given statuses in a fixed order; a false Ready
// condition carries message (with slotReason) when there is one, else the readiness
// annotation's reason.
func conditions(p *corev1.Pod, since metav1.Time, statuses map[corev1.PodConditionType]corev1.ConditionStatus, message string) []corev1.PodCondition {
	var out []corev1.PodCondition
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized,
		corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		status, ok := statuses[t]
		if !ok {
			continue
		}
		c := corev1.PodCondition{Type: t, Status: status, LastTransitionTime: since}
		if status == corev1.ConditionFalse && (t == corev1.PodReady || t == corev1.ContainersReady) {
			c.Reason, c.Message = "ContainersNotReady", fmt.Sprintf("%s is %q", readyAnnotation, "false")
			if message != "" {
				c.Reason, c.Message = slotReason, message
			}
		}
		for _, have := range p.Status.Conditions {
			if have.Type == t && have.Status == status {
				c.LastTransitionTime = have.LastTransitionTime
			}
		}
		out = append(out, c)
	}
	return out
}
