// SPDX-License-Identifier: Apache-2.0

package main

import (
	"maps"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

var testSlots = podSlots{
	"n1-pod1": {node: "n1", addrs: []string{"10.244.31.1", "fd00:244:31::1"}},
	"n1-pod2": {node: "n1", addrs: []string{"10.244.31.2"}},
}

func boundPod(namespace, name, node string, uid types.UID, created int64) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: uid, CreationTimestamp: metav1.Unix(created, 0)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "echo", Image: "lab"}}},
	}
}

func TestClaimSlots(t *testing.T) {
	for _, tc := range []struct {
		name string
		pods []*corev1.Pod
		held map[string]types.UID
		want map[string]types.UID
	}{
		{name: "a pod takes the slot of its name on its node",
			pods: []*corev1.Pod{boundPod("demo", "n1-pod1", "n1", "a", 1)},
			want: map[string]types.UID{"n1-pod1": "a"}},
		{name: "a pod on another node or of another name takes none",
			pods: []*corev1.Pod{boundPod("demo", "n1-pod1", "n2", "a", 1), boundPod("demo", "web", "n1", "b", 1)},
			want: map[string]types.UID{}},
		{name: "the oldest of two claimants gets a free slot",
			pods: []*corev1.Pod{boundPod("x", "n1-pod1", "n1", "new", 2), boundPod("y", "n1-pod1", "n1", "old", 1)},
			want: map[string]types.UID{"n1-pod1": "old"}},
		{name: "a holder keeps its slot against an older claimant",
			pods: []*corev1.Pod{boundPod("x", "n1-pod1", "n1", "new", 2), boundPod("y", "n1-pod1", "n1", "old", 1)},
			held: map[string]types.UID{"n1-pod1": "new"},
			want: map[string]types.UID{"n1-pod1": "new"}},
		{name: "a deleted holder frees its slot for the next claimant",
			pods: []*corev1.Pod{boundPod("x", "n1-pod1", "n1", "next", 2)},
			held: map[string]types.UID{"n1-pod1": "gone", "n1-pod2": "gone2"},
			want: map[string]types.UID{"n1-pod1": "next"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := claimSlots(testSlots, tc.pods, tc.held); !maps.Equal(got, tc.want) {
				t.Errorf("claimSlots = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPodStatus(t *testing.T) {
	now := time.Unix(100, 0)
	hostIPs := []string{"172.31.0.31", "fd00:31::31"}
	notReady := boundPod("demo", "n1-pod1", "n1", "a", 1)
	notReady.Annotations = map[string]string{readyAnnotation: "false"}
	for _, tc := range []struct {
		name      string
		pod       *corev1.Pod
		held      map[string]types.UID
		phase     corev1.PodPhase
		ready     corev1.ConditionStatus
		reason    string
		podIPs    []corev1.PodIP
		container bool
	}{
		{name: "in its slot: Running, Ready, the slot's addresses",
			pod: boundPod("demo", "n1-pod1", "n1", "a", 1), held: map[string]types.UID{"n1-pod1": "a"},
			phase: corev1.PodRunning, ready: corev1.ConditionTrue,
			podIPs: []corev1.PodIP{{IP: "10.244.31.1"}, {IP: "fd00:244:31::1"}}, container: true},
		{name: "annotated not ready: Running, not Ready",
			pod: notReady, held: map[string]types.UID{"n1-pod1": "a"},
			phase: corev1.PodRunning, ready: corev1.ConditionFalse, reason: "ContainersNotReady",
			podIPs: []corev1.PodIP{{IP: "10.244.31.1"}, {IP: "fd00:244:31::1"}}, container: true},
		{name: "no slot of its name: Pending, saying why",
			pod: boundPod("demo", "web", "n1", "b", 1), held: map[string]types.UID{},
			phase: corev1.PodPending, ready: corev1.ConditionFalse, reason: slotReason},
		{name: "its slot held by another: Pending",
			pod: boundPod("other", "n1-pod1", "n1", "c", 2), held: map[string]types.UID{"n1-pod1": "a"},
			phase: corev1.PodPending, ready: corev1.ConditionFalse, reason: slotReason},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := podStatus(tc.pod, testSlots, tc.held, hostIPs, now)
			if s.Phase != tc.phase {
				t.Errorf("phase %s, want %s", s.Phase, tc.phase)
			}
			if len(s.PodIPs) != len(tc.podIPs) || (len(s.PodIPs) > 0 && (s.PodIPs[0] != tc.podIPs[0] || s.PodIP != tc.podIPs[0].IP)) {
				t.Errorf("podIP %q podIPs %v, want %v", s.PodIP, s.PodIPs, tc.podIPs)
			}
			if s.HostIP != hostIPs[0] || len(s.HostIPs) != 2 {
				t.Errorf("hostIP %q hostIPs %v, want %v", s.HostIP, s.HostIPs, hostIPs)
			}
			if (len(s.ContainerStatuses) == 1) != tc.container {
				t.Errorf("container statuses %v, want one: %v", s.ContainerStatuses, tc.container)
			}
			var ready *corev1.PodCondition
			for i := range s.Conditions {
				if s.Conditions[i].Type == corev1.PodReady {
					ready = &s.Conditions[i]
				}
			}
			if ready == nil || ready.Status != tc.ready || ready.Reason != tc.reason {
				t.Fatalf("Ready condition %+v, want status %s reason %q", ready, tc.ready, tc.reason)
			}
			// Written back unchanged, the status is what the next pass wants: no update loop.
			tc.pod.Status = s
			if again := podStatus(tc.pod, testSlots, tc.held, hostIPs, now.Add(time.Minute)); !statusEqual(again, s) {
				t.Errorf("second pass changed the status:\n%+v\n%+v", again, s)
			}
		})
	}
}
