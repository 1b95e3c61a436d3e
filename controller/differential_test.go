// SPDX-License-Identifier: Apache-2.0

package main

// TestDifferentialAgainstUpstream plays one scripted sequence of pool and Service events
// against upstream MetalLB's controller and against MagLB's, each with an API server of its
// own, and compares what every Service shows after every step: its ingress IPs and its
// metallb.io/ip-allocated-from-pool annotation, plus every pool's status counters. A MetalLB
// user who swaps in MagLB must see the same IPs on the same Services.
//
// What is deliberately not compared, or not scripted, and why:
//
//	| Where                                  | Upstream                             | Here                                   |
//	|----------------------------------------|--------------------------------------|----------------------------------------|
//	| Events (reasons, messages, counts)     | IPAllocated without a shard          | not compared: MagLB names the shard,   |
//	|                                        |                                      | and the event spam filter drops events |
//	|                                        |                                      | after a burst; events only count as    |
//	|                                        |                                      | activity when waiting for quiescence   |
//	| Several default pools (autoAssign, no  | tried in Go map order: random        | not scripted: one default pool only    |
//	| allocateTo) with free addresses        |                                      |                                        |
//	| Pinned pools of equal priority         | sort.Slice of map-ordered pools      | not scripted: distinct priorities, at  |
//	|                                        |                                      | most one priority-0 pool per namespace |
//	| Several pending Services that one      | retried in cache (map) order         | not scripted: at most one pending      |
//	| event could satisfy                    |                                      | Service can use what an event frees,   |
//	|                                        |                                      | except holders vs pending, which both  |
//	|                                        |                                      | order holders first                    |
//	| Admission webhooks                     | not run (--webhook-mode=disabled)    | both run without webhooks: the script  |
//	|                                        |                                      | compares allocation, not admission     |
//	| Leader election                        | none                                 | MagLB runs with it disabled too        |
//	| legacy .../ip-allocated-from-pool key  | never written                        | not compared (MagLB removes it)        |
//
// Each step is also checked against the upstream semantics it exercises (want), in both runs,
// so that two controllers doing nothing alike cannot pass.

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/testenv"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// The annotations a user writes, spelled out rather than taken from our allocator so that a
// renamed constant cannot make both sides agree.
const (
	annPool         = "metallb.io/address-pool"
	annIPs          = "metallb.io/loadBalancerIPs"
	annShared       = "metallb.io/allow-shared-ip"
	annFromPool     = "metallb.io/ip-allocated-from-pool"
	legacyAnnPool   = "metallb.universe.tf/address-pool"
	legacyAnnIPs    = "metallb.universe.tf/loadBalancerIPs"
	legacyAnnShared = "metallb.universe.tf/allow-shared-ip"
)

const (
	// settlePeriod is how long nothing may change (Services, pools, events, the controller's
	// log) before a step counts as done. Both controllers react within milliseconds here.
	settlePeriod = 600 * time.Millisecond
	// settleTimeout bounds the wait for quiescence.
	settleTimeout = 30 * time.Second
	// diffNamespacePrefix marks the namespaces the script's Services live in.
	diffNamespacePrefix = "diff-"
)

// action is one scripted change, made through c.
type action func(ctx context.Context, c client.Client) error

// step is one event of the script. want lists states ("IPs pool=NAME", "-" for no IP) that
// upstream's semantics dictate for some Services after the step.
type step struct {
	name string
	do   action
	want map[string]string
}

// differentialScript is the sequence both controllers go through. Comments give the rule
// each step exercises; the general pool is the only default pool throughout.
func differentialScript() []step {
	gold := map[string]string{"tier": "gold"}
	return []step{
		// Pools by annotation, autoAssign=false, legacy keys.
		{name: "default pool general (dual-stack) created", do: addPool("general", []string{"10.20.0.0/28", "fd00:20::/124"}, nil)},
		{name: "plain service takes the default pool's first address", do: addService("diff-b", "first", nil),
			want: map[string]string{"diff-b/first": "10.20.0.0 pool=general"}},
		{name: "pool manual with autoAssign=false created", do: addPool("manual", []string{"10.20.1.0/29"}, notAutoAssign)},
		{name: "plain service skips the autoAssign=false pool", do: addService("diff-b", "plain2", nil),
			want: map[string]string{"diff-b/plain2": "10.20.0.1 pool=general"}},
		{name: "address-pool annotation picks the autoAssign=false pool", do: addService("diff-b", "bypool", annotate(annPool, "manual")),
			want: map[string]string{"diff-b/bypool": "10.20.1.0 pool=manual"}},
		{name: "legacy address-pool annotation", do: addService("diff-b", "legacy-pool", annotate(legacyAnnPool, "manual")),
			want: map[string]string{"diff-b/legacy-pool": "10.20.1.1 pool=manual"}},
		{name: "metallb.io key wins over the legacy key", do: addService("diff-b", "both-pool-keys", annotate(annPool, "general", legacyAnnPool, "manual")),
			want: map[string]string{"diff-b/both-pool-keys": "10.20.0.2 pool=general"}},

		// Requested addresses.
		{name: "loadBalancerIPs annotation bypasses autoAssign=false", do: addService("diff-b", "req-ann", annotate(annIPs, "10.20.1.5")),
			want: map[string]string{"diff-b/req-ann": "10.20.1.5 pool=manual"}},
		{name: "spec.loadBalancerIP", do: addService("diff-b", "req-spec", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "10.20.0.9" }),
			want: map[string]string{"diff-b/req-spec": "10.20.0.9 pool=general"}},
		{name: "legacy loadBalancerIPs annotation", do: addService("diff-b", "req-legacy", annotate(legacyAnnIPs, "10.20.1.6")),
			want: map[string]string{"diff-b/req-legacy": "10.20.1.6 pool=manual"}},
		{name: "annotation and spec.loadBalancerIP together are refused", do: addService("diff-b", "req-conflict", func(s *corev1.Service) {
			annotate(annIPs, "10.20.0.10")(s)
			s.Spec.LoadBalancerIP = "10.20.0.10"
		}), want: map[string]string{"diff-b/req-conflict": "-"}},
		{name: "requested IP outside the requested pool is refused", do: addService("diff-b", "req-pool-mismatch", annotate(annIPs, "10.20.0.11", annPool, "manual")),
			want: map[string]string{"diff-b/req-pool-mismatch": "-"}},
		{name: "changing the requested IP moves the service", do: changeService("diff-b", "req-ann", annotate(annIPs, "10.20.1.7")),
			want: map[string]string{"diff-b/req-ann": "10.20.1.7 pool=manual"}},
		{name: "changing the pool annotation moves the service", do: changeService("diff-b", "bypool", annotate(annPool, "general")),
			want: map[string]string{"diff-b/bypool": "10.20.0.3 pool=general"}},
		{name: "removing the pool annotation keeps the address", do: changeService("diff-b", "bypool", unannotate(annPool)),
			want: map[string]string{"diff-b/bypool": "10.20.0.3 pool=general"}},

		// avoidBuggyIPs and namespaces.
		{name: "pool buggy (avoidBuggyIPs, namespace diff-c only) created", do: addPool("buggy", []string{"10.20.4.0/24"}, func(s *maglbv1beta1.IPAddressPoolSpec) {
			s.AvoidBuggyIPs = true
			s.AllocateTo = &metallbAllocateTo{Namespaces: []string{"diff-c"}}
		})},
		{name: "avoidBuggyIPs skips .0, namespace pins the pool", do: addService("diff-c", "buggy-first", nil),
			want: map[string]string{"diff-c/buggy-first": "10.20.4.1 pool=buggy"}},
		{name: "a buggy .255 cannot be requested", do: addService("diff-c", "buggy-req", annotate(annIPs, "10.20.4.255")),
			want: map[string]string{"diff-c/buggy-req": "-"}},
		{name: "a pool restricted to another namespace cannot be requested", do: addService("diff-b", "buggy-by-pool", annotate(annPool, "buggy")),
			want: map[string]string{"diff-b/buggy-by-pool": "-"}},

		// serviceAllocation priorities, namespaces, namespaceSelectors, serviceSelectors.
		{name: "pool sel5 (priority 5, namespaceSelector team=a) created", do: addPool("sel5", []string{"10.20.11.1-10.20.11.2"}, allocateTo(5, nil, map[string]string{"team": "a"}, nil))},
		{name: "pool ns10 (priority 10, namespace diff-a) created", do: addPool("ns10", []string{"10.20.10.1-10.20.10.1"}, allocateTo(10, []string{"diff-a"}, nil, nil))},
		{name: "pool zero (no priority, namespace diff-a) created", do: addPool("zero", []string{"10.20.12.0/30"}, allocateTo(0, []string{"diff-a"}, nil, nil))},
		{name: "lowest priority value wins", do: addService("diff-a", "p1", nil),
			want: map[string]string{"diff-a/p1": "10.20.11.1 pool=sel5"}},
		{name: "lowest priority value wins again", do: addService("diff-a", "p2", nil),
			want: map[string]string{"diff-a/p2": "10.20.11.2 pool=sel5"}},
		{name: "next priority when the best pool is full", do: addService("diff-a", "p3", nil),
			want: map[string]string{"diff-a/p3": "10.20.10.1 pool=ns10"}},
		{name: "priority 0 comes last", do: addService("diff-a", "p4", nil),
			want: map[string]string{"diff-a/p4": "10.20.12.0 pool=zero"}},
		{name: "pool gold (priority 1, serviceSelector tier=gold) created", do: addPool("gold", []string{"10.20.13.0/30"}, allocateTo(1, nil, nil, gold))},
		{name: "service selector with the best priority wins in diff-a", do: addService("diff-a", "gold1", labelled(gold)),
			want: map[string]string{"diff-a/gold1": "10.20.13.0 pool=gold"}},
		{name: "service selector applies in any namespace", do: addService("diff-b", "gold2", labelled(gold)),
			want: map[string]string{"diff-b/gold2": "10.20.13.1 pool=gold"}},
		{name: "unlabelled service ignores the service-selector pool", do: addService("diff-b", "plain-after-gold", nil),
			want: map[string]string{"diff-b/plain-after-gold": "10.20.0.4 pool=general"}},
		// Upstream keeps addresses the namespaceSelector no longer covers: a pool whose
		// namespace set is empty passes its compatibility check.
		{name: "namespace loses its label: allocations stay", do: labelNamespace("diff-a", map[string]string{"team": "x"}),
			want: map[string]string{"diff-a/p1": "10.20.11.1 pool=sel5", "diff-a/p2": "10.20.11.2 pool=sel5"}},
		{name: "an address of the namespaceSelector pool is freed", do: removeService("diff-a", "p2"),
			want: map[string]string{"diff-a/p1": "10.20.11.1 pool=sel5"}},
		{name: "unlabelled namespace no longer gets the namespaceSelector pool", do: addService("diff-a", "p5", nil),
			want: map[string]string{"diff-a/p5": "10.20.12.1 pool=zero"}},
		{name: "namespace label back: allocations stay", do: labelNamespace("diff-a", map[string]string{"team": "a"}),
			want: map[string]string{"diff-a/p5": "10.20.12.1 pool=zero"}},
		{name: "namespaceSelector pool serves again", do: addService("diff-a", "p6", nil),
			want: map[string]string{"diff-a/p6": "10.20.11.2 pool=sel5"}},

		// IP sharing.
		{name: "sharing key web, port 80", do: addService("diff-b", "share-http", shared("web", 80)),
			want: map[string]string{"diff-b/share-http": "10.20.0.5 pool=general"}},
		{name: "same key, another port: shares the address", do: addService("diff-b", "share-https", shared("web", 443)),
			want: map[string]string{"diff-b/share-https": "10.20.0.5 pool=general"}},
		{name: "same key, clashing port: takes another address", do: addService("diff-b", "share-clash-auto", shared("web", 443)),
			want: map[string]string{"diff-b/share-clash-auto": "10.20.0.6 pool=general"}},
		{name: "same key, clashing port on a requested address: pending", do: addService("diff-b", "share-clash-req", shared("web", 80), annotate(annIPs, "10.20.0.5")),
			want: map[string]string{"diff-b/share-clash-req": "-"}},
		{name: "port holder deleted: the pending one gets the address", do: removeService("diff-b", "share-http"),
			want: map[string]string{"diff-b/share-clash-req": "10.20.0.5 pool=general", "diff-b/share-https": "10.20.0.5 pool=general"}},
		{name: "ETP=Local sharing", do: addService("diff-b", "local-a", shared("local", 80), local("local-a"), annotate(annIPs, "10.20.0.7")),
			want: map[string]string{"diff-b/local-a": "10.20.0.7 pool=general"}},
		{name: "ETP=Local with other selector is refused", do: addService("diff-b", "local-b", shared("local", 81), local("local-b"), annotate(annIPs, "10.20.0.7")),
			want: map[string]string{"diff-b/local-b": "-"}},
		{name: "ETP=Local with the same selector shares", do: addService("diff-b", "local-same", shared("local", 82), local("local-a"), annotate(annIPs, "10.20.0.7")),
			want: map[string]string{"diff-b/local-same": "10.20.0.7 pool=general"}},
		{name: "refused one gets the same selector and shares", do: changeService("diff-b", "local-b", local("local-a")),
			want: map[string]string{"diff-b/local-b": "10.20.0.7 pool=general"}},
		{name: "sharing key k1 holds an address", do: addService("diff-b", "key-holder", shared("k1", 90), annotate(annIPs, "10.20.0.8")),
			want: map[string]string{"diff-b/key-holder": "10.20.0.8 pool=general"}},
		{name: "other sharing key is refused", do: addService("diff-b", "key-wanter", shared("k2", 91), annotate(annIPs, "10.20.0.8")),
			want: map[string]string{"diff-b/key-wanter": "-"}},
		{name: "holder switches to the wanter's key: both share", do: changeService("diff-b", "key-holder", annotate(annShared, "k2")),
			want: map[string]string{"diff-b/key-holder": "10.20.0.8 pool=general", "diff-b/key-wanter": "10.20.0.8 pool=general"}},
		{name: "legacy allow-shared-ip annotation", do: addService("diff-b", "legacy-share", func(s *corev1.Service) {
			annotate(legacyAnnShared, "k2", annIPs, "10.20.0.8")(s)
			s.Spec.Ports[0].Port = 92
		}), want: map[string]string{"diff-b/legacy-share": "10.20.0.8 pool=general"}},

		// Dual-stack.
		{name: "IPv6 single-stack", do: addService("diff-b", "v6-single", families(corev1.IPFamilyPolicySingleStack, corev1.IPv6Protocol)),
			want: map[string]string{"diff-b/v6-single": "fd00:20:: pool=general"}},
		{name: "RequireDualStack", do: addService("diff-b", "dual-require", families(corev1.IPFamilyPolicyRequireDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol)),
			want: map[string]string{"diff-b/dual-require": "10.20.0.10,fd00:20::1 pool=general"}},
		{name: "PreferDualStack, IPv6 first", do: addService("diff-b", "dual-prefer", families(corev1.IPFamilyPolicyPreferDualStack, corev1.IPv6Protocol, corev1.IPv4Protocol)),
			want: map[string]string{"diff-b/dual-prefer": "10.20.0.11,fd00:20::2 pool=general"}},
		{name: "two requested IPs", do: addService("diff-b", "dual-two-ips", families(corev1.IPFamilyPolicyRequireDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol), annotate(annIPs, "10.20.0.12,fd00:20::c")),
			want: map[string]string{"diff-b/dual-two-ips": "10.20.0.12,fd00:20::c pool=general"}},
		{name: "pool v4only (autoAssign=false) created", do: addPool("v4only", []string{"10.20.40.0/30"}, notAutoAssign)},
		{name: "PreferDualStack from an IPv4-only pool gets IPv4 only", do: addService("diff-b", "prefer-v4only", families(corev1.IPFamilyPolicyPreferDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol), annotate(annPool, "v4only")),
			want: map[string]string{"diff-b/prefer-v4only": "10.20.40.0 pool=v4only"}},
		{name: "RequireDualStack from an IPv4-only pool is pending", do: addService("diff-b", "require-v4only", families(corev1.IPFamilyPolicyRequireDualStack, corev1.IPv4Protocol, corev1.IPv6Protocol), annotate(annPool, "v4only")),
			want: map[string]string{"diff-b/require-v4only": "-"}},
		{name: "pool gains IPv6: PreferDualStack adds it, RequireDualStack is served", do: changePool("v4only", func(s *maglbv1beta1.IPAddressPoolSpec) {
			s.Addresses = []string{"10.20.40.0/30", "fd00:40::/126"}
		}), want: map[string]string{"diff-b/prefer-v4only": "10.20.40.0,fd00:40:: pool=v4only", "diff-b/require-v4only": "10.20.40.1,fd00:40::1 pool=v4only"}},

		// loadBalancerClass: neither controller runs with --lb-class.
		{name: "service with a loadBalancerClass is ignored", do: addService("diff-b", "other-class", func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/other") }),
			want: map[string]string{"diff-b/other-class": "-"}},

		// Pool changes.
		{name: "pool shrinking created", do: addPool("shrinking", []string{"10.20.30.0/30", "10.20.31.0/30"}, notAutoAssign)},
		{name: "service pinned to pool shrinking", do: addService("diff-b", "shrink-pinned", annotate(annPool, "shrinking")),
			want: map[string]string{"diff-b/shrink-pinned": "10.20.30.0 pool=shrinking"}},
		{name: "service requesting an address of pool shrinking", do: addService("diff-b", "shrink-req", annotate(annIPs, "10.20.30.1")),
			want: map[string]string{"diff-b/shrink-req": "10.20.30.1 pool=shrinking"}},
		{name: "pool shrinks: pinned service re-homed, requested one pending", do: changePool("shrinking", func(s *maglbv1beta1.IPAddressPoolSpec) {
			s.Addresses = []string{"10.20.31.0/30"}
		}), want: map[string]string{"diff-b/shrink-pinned": "10.20.31.0 pool=shrinking", "diff-b/shrink-req": "-"}},
		{name: "pool deleted: its service is cleared", do: removePool("shrinking"),
			want: map[string]string{"diff-b/shrink-pinned": "-"}},
		{name: "service waiting for a pool that does not exist yet", do: addService("diff-b", "wants-late", annotate(annPool, "late")),
			want: map[string]string{"diff-b/wants-late": "-"}},
		{name: "the awaited pool is created", do: addPool("late", []string{"10.20.50.0/30"}, notAutoAssign),
			want: map[string]string{"diff-b/wants-late": "10.20.50.0 pool=late"}},
		{name: "deleted pool comes back smaller", do: addPool("shrinking", []string{"10.20.31.0/30"}, notAutoAssign),
			want: map[string]string{"diff-b/shrink-pinned": "10.20.31.0 pool=shrinking", "diff-b/shrink-req": "-"}},

		// A requested IP taken, released later.
		{name: "holder takes a requested IP", do: addService("diff-b", "holder", annotate(annIPs, "10.20.0.13")),
			want: map[string]string{"diff-b/holder": "10.20.0.13 pool=general"}},
		{name: "second request for the same IP is pending", do: addService("diff-b", "wanter", annotate(annIPs, "10.20.0.13")),
			want: map[string]string{"diff-b/wanter": "-"}},
		{name: "holder deleted: the pending request is served", do: removeService("diff-b", "holder"),
			want: map[string]string{"diff-b/wanter": "10.20.0.13 pool=general"}},
		{name: "third request for the same IP is pending", do: addService("diff-b", "next-wanter", annotate(annIPs, "10.20.0.13")),
			want: map[string]string{"diff-b/next-wanter": "-"}},
		{name: "type LoadBalancer to ClusterIP releases the IP", do: changeService("diff-b", "wanter", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeClusterIP
			s.Spec.AllocateLoadBalancerNodePorts = nil
		}), want: map[string]string{"diff-b/wanter": "-", "diff-b/next-wanter": "10.20.0.13 pool=general"}},
		{name: "back to LoadBalancer: its IP is taken now", do: changeService("diff-b", "wanter", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.AllocateLoadBalancerNodePorts = ptr.To(false)
		}), want: map[string]string{"diff-b/wanter": "-"}},

		// An invalid configuration leaves the last valid one in effect.
		{name: "overlapping pool makes the configuration invalid", do: addPool("overlap", []string{"10.20.1.4/30"}, notAutoAssign)},
		{name: "allocation goes on with the last valid configuration", do: addService("diff-b", "during-invalid", annotate(annPool, "manual")),
			want: map[string]string{"diff-b/during-invalid": "10.20.1.0 pool=manual"}},
		{name: "overlapping pool deleted", do: removePool("overlap")},

		// Freed addresses are reused lowest first.
		{name: "first service deleted", do: removeService("diff-b", "first")},
		{name: "new service reuses the freed lowest address", do: addService("diff-b", "after-free", nil),
			want: map[string]string{"diff-b/after-free": "10.20.0.0 pool=general"}},
	}
}

func TestDifferentialAgainstUpstream(t *testing.T) {
	impls := implementations(t)
	steps := differentialScript()
	logDir := t.TempDir() // outlives the subtests: the comparison quotes their logs
	var runs []*scriptRun
	for _, impl := range impls {
		done := len(runs)
		t.Run(impl.name, func(t *testing.T) {
			runs = append(runs, playScript(t, impl, steps, filepath.Join(logDir, impl.name+".log")))
		})
		if len(runs) == done {
			t.Fatalf("the %s run stopped early", impl.name)
		}
	}
	for _, other := range runs[1:] {
		compareRuns(t, steps, runs[0], other)
	}
}

// scriptRun is what one controller showed after each step.
type scriptRun struct {
	impl    string
	logPath string
	// logAt[i] is the log's size when step i began; logAt[len(steps)] when the run ended.
	logAt []int64
	snaps []snapshot
}

// playScript runs steps against impl on a fresh API server and records a snapshot after each.
func playScript(t *testing.T, impl controllerImpl, steps []step, logPath string) *scriptRun {
	env := startAPIServer(t)
	for _, ns := range []struct {
		name   string
		labels map[string]string
	}{{"diff-a", map[string]string{"team": "a"}}, {"diff-b", nil}, {"diff-c", nil}} {
		createNamespace(t, env, ns.name, ns.labels)
	}
	impl.start(t, env, logPath)
	warmUp(t, env, logPath)

	ctx := context.Background()
	run := &scriptRun{impl: impl.name, logPath: logPath}
	for i, s := range steps {
		run.logAt = append(run.logAt, logSize(logPath))
		if err := s.do(ctx, env.Client); err != nil {
			t.Fatalf("step %d (%s): %v", i+1, s.name, err)
		}
		if err := settle(ctx, env.Client, logPath); err != nil {
			t.Fatalf("step %d (%s): waiting for quiescence: %v\n%s", i+1, s.name, err, logTail(logPath, 30))
		}
		snap, err := takeSnapshot(ctx, env.Client)
		if err != nil {
			t.Fatalf("step %d (%s): %v", i+1, s.name, err)
		}
		run.snaps = append(run.snaps, snap)
		var unmet []string
		for _, key := range slices.Sorted(maps.Keys(s.want)) {
			if got := snap["service "+key]; got != s.want[key] {
				unmet = append(unmet, fmt.Sprintf("%s shows %q, want %q", key, got, s.want[key]))
			}
		}
		if len(unmet) > 0 {
			t.Errorf("step %d (%s): %s\n  %s log during the step:\n%s", i+1, s.name, strings.Join(unmet, "; "),
				impl.name, indent(logExcerpt(logPath, run.logAt[i], logSize(logPath), 40), "    "))
		}
	}
	run.logAt = append(run.logAt, logSize(logPath))
	return run
}

// warmUp waits until the controller allocates, then removes what it used: the script starts
// with a controller whose caches are synced and whose configuration is loaded.
func warmUp(t *testing.T, env *testenv.Env, logPath string) {
	t.Helper()
	ctx := context.Background()
	createNamespace(t, env, "warmup", nil)
	pool := newPool("warmup", []string{"10.255.0.0/30"}, nil)
	svc := newService("warmup", "warmup", nil)
	for _, obj := range []client.Object{pool, svc} {
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}
	err := pollUntil(time.Minute, 100*time.Millisecond, func() (bool, error) {
		var got corev1.Service
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(svc), &got); err != nil {
			return false, err
		}
		return len(got.Status.LoadBalancer.Ingress) > 0, nil
	})
	if err != nil {
		t.Fatalf("warm-up: the controller gave no IP to a Service: %v", err)
	}
	for _, obj := range []client.Object{svc, pool} {
		if err := env.Client.Delete(ctx, obj); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
	}
	if err := settle(ctx, env.Client, logPath); err != nil {
		t.Fatalf("warm-up: %v", err)
	}
}

// snapshot maps "service NS/NAME" to "IPs pool=POOL" ("-" without IPs) and "pool NAME" to
// its status counters.
type snapshot map[string]string

func takeSnapshot(ctx context.Context, c client.Client) (snapshot, error) {
	snap := snapshot{}
	var services corev1.ServiceList
	if err := c.List(ctx, &services); err != nil {
		return nil, err
	}
	for _, svc := range services.Items {
		if strings.HasPrefix(svc.Namespace, diffNamespacePrefix) {
			snap["service "+svc.Namespace+"/"+svc.Name] = serviceState(&svc)
		}
	}
	var pools maglbv1beta1.IPAddressPoolList
	if err := c.List(ctx, &pools, client.InNamespace(metallbNamespace)); err != nil {
		return nil, err
	}
	for _, p := range pools.Items {
		st := p.Status
		snap["pool "+p.Name] = fmt.Sprintf("IPv4 %d assigned %d available, IPv6 %d assigned %d available",
			st.AssignedIPv4, st.AvailableIPv4, st.AssignedIPv6, st.AvailableIPv6)
	}
	return snap, nil
}

func serviceState(svc *corev1.Service) string {
	var ips []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP)
	}
	state := "-"
	if len(ips) > 0 {
		state = strings.Join(ips, ",")
	}
	if pool, ok := svc.Annotations[annFromPool]; ok {
		state += " pool=" + pool
	}
	return state
}

// settle waits until Services, pools, events and the controller's log at logPath have not
// changed for settlePeriod. The log counts because upstream's client is limited to 20
// requests/s: a pass over every Service can take seconds, much of it no-op status writes
// that change nothing visible in the API.
func settle(ctx context.Context, c client.Client, logPath string) error {
	var last string
	changed := time.Now()
	return pollUntil(settleTimeout, 50*time.Millisecond, func() (bool, error) {
		now, err := activity(ctx, c, logPath)
		if err != nil {
			return false, err
		}
		if now != last {
			last, changed = now, time.Now()
			return false, nil
		}
		return time.Since(changed) >= settlePeriod, nil
	})
}

// activity fingerprints everything a controller writes: any write changes a resourceVersion,
// any work shows in its log.
func activity(ctx context.Context, c client.Client, logPath string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "log %d\n", logSize(logPath))
	var services corev1.ServiceList
	if err := c.List(ctx, &services); err != nil {
		return "", err
	}
	for _, o := range services.Items {
		fmt.Fprintf(&b, "s %s/%s %s\n", o.Namespace, o.Name, o.ResourceVersion)
	}
	var pools maglbv1beta1.IPAddressPoolList
	if err := c.List(ctx, &pools); err != nil {
		return "", err
	}
	for _, o := range pools.Items {
		fmt.Fprintf(&b, "p %s %s\n", o.Name, o.ResourceVersion)
	}
	var events corev1.EventList
	if err := c.List(ctx, &events); err != nil {
		return "", err
	}
	for _, o := range events.Items {
		fmt.Fprintf(&b, "e %s/%s %s\n", o.Namespace, o.Name, o.ResourceVersion)
	}
	return b.String(), nil
}

// compareRuns reports, step by step, where ours differs from upstream. A difference is
// reported at the step where it appears or changes, not again at every later step.
func compareRuns(t *testing.T, steps []step, upstream, ours *scriptRun) {
	t.Helper()
	reported := map[string]string{} // key → the difference last reported for it
	firstBad := -1
	for i := range steps {
		var lines []string
		current := map[string]string{}
		for _, key := range unionKeys(upstream.snaps[i], ours.snaps[i]) {
			want, wok := upstream.snaps[i][key]
			got, gok := ours.snaps[i][key]
			if want == got && wok == gok {
				continue
			}
			d := fmt.Sprintf("%s: upstream %s, %s %s", key, orAbsent(want, wok), ours.impl, orAbsent(got, gok))
			current[key] = d
			if reported[key] != d {
				lines = append(lines, "    "+d)
			}
		}
		reported = current
		if len(lines) == 0 {
			continue
		}
		msg := fmt.Sprintf("step %d (%s): %s differs from upstream:\n%s", i+1, steps[i].name, ours.impl, strings.Join(lines, "\n"))
		if firstBad < 0 {
			firstBad = i
			for _, r := range []*scriptRun{upstream, ours} {
				msg += fmt.Sprintf("\n  %s log during the step:\n%s", r.impl, indent(logExcerpt(r.logPath, r.logAt[i], r.logAt[i+1], 40), "    "))
			}
		}
		t.Error(msg)
	}
}

func orAbsent(v string, ok bool) string {
	if !ok {
		return "(absent)"
	}
	return v
}

func unionKeys(a, b snapshot) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

// Script actions.

func addPool(name string, addresses []string, mutate func(*maglbv1beta1.IPAddressPoolSpec)) action {
	return func(ctx context.Context, c client.Client) error {
		return c.Create(ctx, newPool(name, addresses, mutate))
	}
}

func changePool(name string, mutate func(*maglbv1beta1.IPAddressPoolSpec)) action {
	return func(ctx context.Context, c client.Client) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var pool maglbv1beta1.IPAddressPool
			if err := c.Get(ctx, client.ObjectKey{Namespace: metallbNamespace, Name: name}, &pool); err != nil {
				return err
			}
			mutate(&pool.Spec)
			return c.Update(ctx, &pool)
		})
	}
}

func removePool(name string) action {
	return func(ctx context.Context, c client.Client) error {
		return c.Delete(ctx, newPool(name, nil, nil))
	}
}

// addService creates a Service as main_test.go's createService does, changed by mutate.
func addService(namespace, name string, mutate ...func(*corev1.Service)) action {
	return func(ctx context.Context, c client.Client) error {
		return c.Create(ctx, newService(namespace, name, func(s *corev1.Service) {
			for _, m := range mutate {
				if m != nil {
					m(s)
				}
			}
		}))
	}
}

// changeService updates a Service, retrying when a controller wrote it in between.
func changeService(namespace, name string, mutate func(*corev1.Service)) action {
	return func(ctx context.Context, c client.Client) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var svc corev1.Service
			if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &svc); err != nil {
				return err
			}
			mutate(&svc)
			return c.Update(ctx, &svc)
		})
	}
}

func removeService(namespace, name string) action {
	return func(ctx context.Context, c client.Client) error {
		return c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}})
	}
}

func labelNamespace(name string, labels map[string]string) action {
	return func(ctx context.Context, c client.Client) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var ns corev1.Namespace
			if err := c.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
				return err
			}
			ns.Labels = labels
			return c.Update(ctx, &ns)
		})
	}
}

// Pool and Service changes the script composes.

func notAutoAssign(s *maglbv1beta1.IPAddressPoolSpec) { s.AutoAssign = ptr.To(false) }

func allocateTo(priority int, namespaces []string, namespaceLabels, serviceLabels map[string]string) func(*maglbv1beta1.IPAddressPoolSpec) {
	return func(s *maglbv1beta1.IPAddressPoolSpec) {
		s.AllocateTo = &metallbAllocateTo{Priority: priority, Namespaces: namespaces}
		if namespaceLabels != nil {
			s.AllocateTo.NamespaceSelectors = []metav1.LabelSelector{{MatchLabels: namespaceLabels}}
		}
		if serviceLabels != nil {
			s.AllocateTo.ServiceSelectors = []metav1.LabelSelector{{MatchLabels: serviceLabels}}
		}
	}
}

// annotate sets annotations given as key, value pairs.
func annotate(kv ...string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			s.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func unannotate(key string) func(*corev1.Service) {
	return func(s *corev1.Service) { delete(s.Annotations, key) }
}

func labelled(labels map[string]string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Labels = labels }
}

// shared sets the sharing key and the Service's port.
func shared(key string, port int32) func(*corev1.Service) {
	return func(s *corev1.Service) {
		annotate(annShared, key)(s)
		s.Spec.Ports[0].Port = port
	}
}

// local sets externalTrafficPolicy=Local with a selector on app; sharing then requires the same
// selector.
func local(app string) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.Selector = map[string]string{"app": app}
	}
}

func families(policy corev1.IPFamilyPolicy, families ...corev1.IPFamily) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = &policy
		s.Spec.IPFamilies = families
	}
}
