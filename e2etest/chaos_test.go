//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-cmp/cmp"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/promtext"
)

// The chaos suite inflicts, one after the other, the faults a load balancer meets on its worst
// day while traffic runs through every demo VIP: 200 long-lived TCP connections, and new HTTP
// requests and UDP echoes to each VIP every 100 and 200 ms. Per fault it measures what the
// clients lost and whether everything came back as it was, and checks the fault's goals on the
// environment's datapath. Each fault is a row of chaos-<datapath>.json, which `tasks.py
// e2etest` prints as a table.
//
// The LB nodes' sessions with the ToR run with graceful restart for the suite (BFD stays on):
// a crashed speaker's routes stay at the ToR until it is back, while a node that goes dark
// still leaves it by BFD.
var _ = Describe("Chaos", Label("chaos"), Ordered, ContinueOnFailure, func() {
	ctx := context.Background()
	var vips []string
	report := chaosReport{Connections: chaosConnections}

	BeforeAll(func() {
		requireProtocol("bgp")
		Expect(env.Chaos.KillSpeaker).NotTo(BeEmpty(), "the environment's description has no chaos commands")
		report.Datapath = env.Datapath
		vips = demoVIPs(ctx)
		Expect(vips).NotTo(BeEmpty(), "the Services of namespace %s", demoNamespace)
		withGracefulRestart(ctx)
	})

	DescribeTable("under live traffic through every demo VIP", func(f fault) {
		row := runFault(ctx, f, vips)
		report.Rows = append(report.Rows, row)
		writeReport("chaos-"+env.Datapath, report)
		AddReportEntry(f.name, row)
		if row.Verdict == verdictNotApplicable {
			Skip(f.name + ": " + row.Goal)
		}
		Expect(row.Missed).To(BeEmpty(), "%s on %s: goals missed; the row: %+v", f.name, env.Datapath, row)
	}, chaosEntries())
})

const (
	chaosConnections = 200
	// A long-lived connection is lost when it is reset or a request on it has no answer within
	// this time: TCP retransmits through a short outage.
	chaosRequestTimeout = 15 * time.Second
	// How long a fault's aftermath may take to come back as it was.
	recoveryTimeout = 2 * time.Minute
	// The lab's demo Services (python3 tasks.py dev-env).
	demoNamespace = "demo"

	verdictMet           = "met"
	verdictMissed        = "MISSED"
	verdictNotApplicable = "n/a"
)

// chaosCommands are the environment's commands for the faults, each with its target appended
// (the lab: hack/labchaos.py).
type chaosCommands struct {
	KillSpeaker        []string `json:"kill_speaker"`     // lbN or all
	StartSpeaker       []string `json:"start_speaker"`    // lbN or all: those not running
	KillController     []string `json:"kill_controller"`  // a replica, or leader; prints the replica killed
	StartController    []string `json:"start_controller"` // a replica not running; returns once it is ready
	StopController     []string `json:"stop_controller"`
	StopAPIServer      []string `json:"stop_apiserver"`  // kube-apiserver and etcd, data kept
	StartAPIServer     []string `json:"start_apiserver"` // returns once the API server is ready
	RestartRouter      []string `json:"restart_router"`  // tor: returns once its daemons answer
	RestartAgent       []string `json:"restart_agent"`   // a node's backend agent
	Pins               []string `json:"pins"`            // lbN: prints its speaker's pinned files
	RemovePins         []string `json:"remove_pins"`     // lbN
	ControllerReplicas []string `json:"controller_replicas"`
}

// chaosReport is chaos-<datapath>.json.
type chaosReport struct {
	Datapath    string     `json:"datapath"`
	Connections int        `json:"connections"`
	Rows        []chaosRow `json:"rows"`
}

// chaosRow is what one fault cost the clients, and whether its goals were met.
type chaosRow struct {
	Fault           string `json:"fault"`
	Goal            string `json:"goal"`
	Connections     int    `json:"connections"`
	ConnectionsLost int    `json:"connections_lost"`
	// Requests are the new HTTP requests and UDP echoes sent while the fault and its recovery ran.
	Requests   int `json:"requests"`
	FailedHTTP int `json:"failed_http"`
	FailedUDP  int `json:"failed_udp"`
	// LongestGapMillis is the longest time a VIP answered no new HTTP request.
	LongestGapMillis int64 `json:"longest_gap_ms"`
	// IPChanges are the Services whose IPs differed from before at some point.
	IPChanges []string `json:"ip_changes,omitempty"`
	// RouteChanges are the VIPs whose next hops in the ToR's kernel differed from before at
	// some point, with the first differing set.
	RouteChanges []string `json:"route_changes,omitempty"`
	StateEqual   bool     `json:"state_equal"`
	// StateDiffers names what differed after recovery; StateDiff says how (-before +after).
	StateDiffers string `json:"state_differs,omitempty"`
	StateDiff    string `json:"state_diff,omitempty"`
	// Recovery names what the fault measured itself ("routes back", "takeover", ...), and
	// RecoveryMillis how long it took (-1: not within its wait).
	Recovery       string   `json:"recovery,omitempty"`
	RecoveryMillis int64    `json:"recovery_ms"`
	Verdict        string   `json:"verdict"` // met, MISSED or n/a
	Missed         []string `json:"missed,omitempty"`
	Notes          []string `json:"notes,omitempty"`
}

func (r chaosRow) failedRequests() int { return r.FailedHTTP + r.FailedUDP }

// fault is a row of the table.
type fault struct {
	name string
	// goals are what MagLB must keep through the fault on a datapath, in words and as checks;
	// no checks: the fault does not apply there, and the goal says why.
	goals func(datapath string) (string, []goalCheck)
	// inflict causes the fault and undoes it, measuring what it measures itself against the
	// state before.
	inflict func(ctx context.Context, r *chaosRow, before chaosState)
}

// goalCheck returns what r missed, or "".
type goalCheck func(r chaosRow) string

func noConnectionLost(r chaosRow) string {
	if r.ConnectionsLost > 0 {
		return fmt.Sprintf("%d of %d connections lost", r.ConnectionsLost, r.Connections)
	}
	return ""
}

func connectionsKept(percent float64) goalCheck {
	return func(r chaosRow) string {
		if kept := 100 * float64(r.Connections-r.ConnectionsLost) / float64(r.Connections); kept < percent {
			return fmt.Sprintf("%.1f%% of connections kept, want %.0f%%", kept, percent)
		}
		return ""
	}
}

func noFailedRequest(r chaosRow) string {
	if r.failedRequests() > 0 {
		return fmt.Sprintf("%d HTTP and %d UDP requests failed", r.FailedHTTP, r.FailedUDP)
	}
	return ""
}

func noIPChanged(r chaosRow) string {
	if len(r.IPChanges) > 0 {
		return "IPs changed: " + strings.Join(r.IPChanges, "; ")
	}
	return ""
}

func routesKept(r chaosRow) string {
	if len(r.RouteChanges) > 0 {
		return "the ToR's routes changed: " + strings.Join(r.RouteChanges, "; ")
	}
	return ""
}

func recoveredWithin(limit time.Duration) goalCheck {
	return func(r chaosRow) string {
		if r.RecoveryMillis < 0 || time.Duration(r.RecoveryMillis)*time.Millisecond > limit {
			return fmt.Sprintf("%s: %s, want within %s", r.Recovery, millis(r.RecoveryMillis), limit)
		}
		return ""
	}
}

func millis(ms int64) string {
	if ms < 0 {
		return "never"
	}
	return fmt.Sprintf("%.1f s", float64(ms)/1000)
}

// keepsServing is the goal of a fault MagLB must ride out with nothing lost.
var keepsServing = []goalCheck{noConnectionLost, noFailedRequest, noIPChanged}

func onEveryDatapath(goal string, checks ...goalCheck) func(string) (string, []goalCheck) {
	return func(string) (string, []goalCheck) { return goal, checks }
}

func chaosEntries() []TableEntry {
	var entries []TableEntry
	for _, f := range chaosFaults() {
		entries = append(entries, Entry(f.name, f))
	}
	return entries
}

// chaosFaults are the rows, in the order they run; the API server's outage, whose effects
// reach furthest, last.
func chaosFaults() []fault {
	return []fault{{
		// What the lab loses with nothing broken: the floor of every other row.
		name:    "no fault (10 s)",
		goals:   onEveryDatapath("0 connections lost, 0 failed requests", keepsServing...),
		inflict: func(context.Context, *chaosRow, chaosState) { time.Sleep(10 * time.Second) },
	}, {
		name: "kill -9 one speaker",
		goals: onEveryDatapath("0 connections lost, 0 failed requests, no IP changed (graceful restart keeps "+
			"the node's routes, its datapath keeps forwarding)", keepsServing...),
		inflict: func(context.Context, *chaosRow, chaosState) { crashSpeakers(lbNames()[len(lbNames())-1]) },
	}, {
		name: "kill -9 every speaker",
		goals: onEveryDatapath("0 connections lost, 0 failed requests, no IP changed (graceful restart keeps "+
			"the routes, the datapaths keep forwarding)", keepsServing...),
		inflict: func(context.Context, *chaosRow, chaosState) { crashSpeakers("all") },
	}, {
		name:    "kill -9 the controller",
		goals:   onEveryDatapath("no IP changed, 0 failed requests, 0 connections lost", keepsServing...),
		inflict: crashController,
	}, {
		name: "kill -9 the leader of two controllers",
		goals: onEveryDatapath("no IP changed, 0 failed requests, 0 connections lost; the other replica takes over",
			append(slices.Clone(keepsServing), recoveredWithin(time.Minute))...),
		inflict: crashLeader,
	}, {
		name: "a backend node's agent restarted",
		goals: onEveryDatapath("0 connections lost, 0 failed requests (decapsulation goes on)",
			keepsServing...),
		inflict: func(context.Context, *chaosRow, chaosState) { runCommand(env.Chaos.RestartAgent, backendNames()[0]) },
	}, {
		name: "the BPF pins of one LB node removed",
		goals: func(datapath string) (string, []goalCheck) {
			if datapath != "ebpf" {
				return "no pins: the kubeproxy datapath programs no BPF", nil
			}
			return "0 connections lost, 0 failed requests, the pins back within 10 s",
				append(slices.Clone(keepsServing), recoveredWithin(10*time.Second))
		},
		inflict: removePins,
	}, {
		name: "an LB node's uplink down and back",
		goals: func(datapath string) (string, []goalCheck) {
			if datapath != "ebpf" {
				return "the node out of the ToR's route within the hold time (BFD); connections through it: n/a " +
					"(another node's kube-proxy resets them)", []goalCheck{recoveredWithin(torHoldTime)}
			}
			return "≥ 99% of connections kept, the node out of the ToR's route within the hold time (BFD)",
				[]goalCheck{connectionsKept(99), recoveredWithin(torHoldTime)}
		},
		inflict: cutUplink,
	}, {
		name: "FRR on the ToR restarted",
		goals: onEveryDatapath("routes back within 5 s of FRR's start (the ToR forwards nothing while it is down: "+
			"losses n/a)", recoveredWithin(5*time.Second)),
		inflict: restartRouter,
	}, {
		name: "kube-apiserver and etcd down 60 s",
		goals: onEveryDatapath("forwarding and announcements unchanged: 0 connections lost, 0 failed requests, "+
			"the ToR's routes unchanged, no IP changed", append(slices.Clone(keepsServing), routesKept)...),
		inflict: func(context.Context, *chaosRow, chaosState) {
			runCommand(env.Chaos.StopAPIServer)
			time.Sleep(60 * time.Second)
			runCommand(env.Chaos.StartAPIServer)
		},
	}}
}

// torHoldTime is the hold time of the LB nodes' sessions with the ToR (the lab's BGPPeers).
const torHoldTime = 9 * time.Second

// runFault measures one row: the state before, traffic from 2 s before the fault until 3 s
// after everything is back as it was (or recoveryTimeout passed), and the goals.
func runFault(ctx context.Context, f fault, vips []string) chaosRow {
	GinkgoHelper()
	row := chaosRow{Fault: f.name, Connections: chaosConnections, RecoveryMillis: -1}
	goal, checks := f.goals(env.Datapath)
	row.Goal = goal
	if checks == nil {
		row.Verdict = verdictNotApplicable
		return row
	}
	before := settledState(ctx)
	DeferCleanup(restoreLab)
	traffic := startTraffic(ctx, vips, before)
	time.Sleep(2 * time.Second)
	f.inflict(ctx, &row, before)
	var after chaosState
	row.StateEqual, after = recovered(ctx, before)
	if !row.StateEqual {
		row.StateDiffers, row.StateDiff = before.differences(after), cmp.Diff(before, after)
	}
	time.Sleep(3 * time.Second)
	traffic.finish(&row)
	for _, check := range append(checks, stateRestored) {
		if missed := check(row); missed != "" {
			row.Missed = append(row.Missed, missed)
		}
	}
	row.Verdict = verdictMet
	if len(row.Missed) > 0 {
		row.Verdict = verdictMissed
	}
	return row
}

func stateRestored(r chaosRow) string {
	if !r.StateEqual {
		return "not as before after " + recoveryTimeout.String() + ": " + r.StateDiffers
	}
	return ""
}

// restoreLab starts whatever a fault left stopped, so that the next row (or spec) finds the
// environment whole even when a row failed half-way: every command is a no-op for what runs.
func restoreLab() {
	runCommand(env.Chaos.StartAPIServer)
	runCommand(env.Chaos.StartSpeaker, "all")
	runCommand(env.Chaos.StartController, env.Chaos.ControllerReplicas[0])
	for _, replica := range env.Chaos.ControllerReplicas[1:] {
		runCommand(env.Chaos.StopController, replica)
	}
}

// ---------------------------------------------------------------------------------------------
// The faults

// crashSpeakers kills the speakers (an LB node's, or "all") with SIGKILL and starts them again
// a second later, as a kubelet restarts a crashed container.
func crashSpeakers(target string) {
	GinkgoHelper()
	runCommand(env.Chaos.KillSpeaker, target)
	time.Sleep(time.Second)
	runCommand(env.Chaos.StartSpeaker, target)
}

// crashController kills the one controller, starts it again a second later, and measures how
// long a Service created after the crash waits for its IP.
func crashController(ctx context.Context, r *chaosRow, _ chaosState) {
	GinkgoHelper()
	replica := env.Chaos.ControllerReplicas[0]
	runCommand(env.Chaos.KillController, replica)
	crashed := time.Now()
	time.Sleep(time.Second)
	runCommand(env.Chaos.StartController, replica)
	r.Recovery, r.RecoveryMillis = "a new Service's IP", allocationAfter(ctx, crashed)
}

// crashLeader starts a second controller replica, kills the one the Lease names leader, and
// measures until the other holds the Lease; then starts the killed one again (the second
// replica stops at the end of the row).
func crashLeader(ctx context.Context, r *chaosRow, _ chaosState) {
	GinkgoHelper()
	Expect(len(env.Chaos.ControllerReplicas)).To(BeNumerically(">=", 2), "the environment runs one controller replica")
	runCommand(env.Chaos.StartController, env.Chaos.ControllerReplicas[1])
	killed := strings.TrimSpace(commandOutput(env.Chaos.KillController, "leader"))
	crashed := time.Now()
	Expect(env.Chaos.ControllerReplicas).To(ContainElement(killed), "the replica the kill command names")
	r.Recovery, r.RecoveryMillis = "takeover", -1
	Eventually(leaderReplica(ctx)).WithTimeout(time.Minute).Should(And(Not(BeEmpty()), Not(Equal(killed))),
		"the Lease's holder after %s died", killed)
	r.RecoveryMillis = time.Since(crashed).Milliseconds()
	r.Notes = append(r.Notes, fmt.Sprintf("killed %s; a new Service got its IP after %s", killed,
		millis(allocationAfter(ctx, crashed))))
	runCommand(env.Chaos.StartController, killed)
}

// leaderReplica returns, for Eventually, the replica the controller's Lease names: its holder
// is the replica's pod name.
func leaderReplica(ctx context.Context) func() (string, error) {
	return func() (string, error) {
		var lease coordinationv1.Lease
		if err := cs.Get(ctx, client.ObjectKey{Namespace: env.Namespace, Name: "maglb-controller"}, &lease); err != nil {
			return "", err
		}
		if lease.Spec.HolderIdentity == nil {
			return "", nil
		}
		return *lease.Spec.HolderIdentity, nil
	}
}

// allocationAfter creates a Service from the first lab pool, and returns the milliseconds from
// since until it had its IP; the Service is deleted again.
func allocationAfter(ctx context.Context, since time.Time) int64 {
	GinkgoHelper()
	ensureNamespace(ctx, "e2e-chaos")
	pool := slices.Sorted(maps.Keys(env.Pools))[0]
	svc := createService(ctx, "e2e-chaos", "probe", map[string]string{"metallb.io/address-pool": pool}, env.HTTPPort)
	defer func() { Expect(client.IgnoreNotFound(cs.Delete(ctx, svc))).To(Succeed()) }()
	Eventually(ingressOf(ctx, svc)).WithTimeout(recoveryTimeout).Should(HaveLen(1), "an IP for the probe Service")
	return time.Since(since).Milliseconds()
}

// removePins removes the pins of the first LB node's speaker and measures until they are back.
func removePins(_ context.Context, r *chaosRow, _ chaosState) {
	GinkgoHelper()
	lb := lbNames()[0]
	pins := func() []string { return strings.Fields(commandOutput(env.Chaos.Pins, lb)) }
	before := pins()
	Expect(before).NotTo(BeEmpty(), "%s's speaker pins its datapath", lb)
	runCommand(env.Chaos.RemovePins, lb)
	removed := time.Now()
	r.Recovery = "pins back"
	deadline := removed.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if slices.Equal(pins(), before) {
			r.RecoveryMillis = time.Since(removed).Milliseconds()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.Notes = append(r.Notes, fmt.Sprintf("%s's pins were not back after 30 s: %v of %v", lb, pins(), before))
}

// cutUplink takes the last LB node's uplink down, measures until the ToR's kernel no longer
// routes a VIP through it, keeps it down 3 s more, and brings it back.
func cutUplink(_ context.Context, r *chaosRow, before chaosState) {
	GinkgoHelper()
	lb := lbNames()[len(lbNames())-1]
	address := nodeAddress(lb, corev1.IPv4Protocol)
	runCommand(env.NodeUplinkDown, lb)
	down := time.Now()
	DeferCleanup(runCommand, env.NodeUplinkUp, lb)
	r.Recovery = "node out"
	Eventually(func() ([]string, error) {
		routes, err := kernelRoutes("tor")
		var through []string
		for vip := range before.Forwarding {
			if slices.Contains(routes[vip], address) {
				through = append(through, vip)
			}
		}
		return through, err
	}).WithTimeout(2*torHoldTime).WithPolling(10*time.Millisecond).Should(BeEmpty(), "VIPs the ToR routes through %s", lb)
	r.RecoveryMillis = time.Since(down).Milliseconds()
	time.Sleep(3 * time.Second)
	runCommand(env.NodeUplinkUp, lb)
}

// restartRouter restarts the ToR's routing daemons and measures from their start until the
// ToR has every VIP's routes as before.
func restartRouter(_ context.Context, r *chaosRow, before chaosState) {
	GinkgoHelper()
	runCommand(env.Chaos.RestartRouter, "tor")
	started := time.Now()
	r.Recovery = "routes back"
	for time.Since(started) < recoveryTimeout {
		routes, forwarding, err := torRoutes(before.vips())
		if err == nil && cmp.Equal(routes, before.Routes) && cmp.Equal(forwarding, before.Forwarding) {
			r.RecoveryMillis = time.Since(started).Milliseconds()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------------------------
// What a fault must leave as it found it

// chaosState is what the environment looks like from outside: the Services' IPs, the ToR's
// routes, what each speaker announces and programs, the status objects, and whether the
// controller answers.
type chaosState struct {
	ServiceIPs map[string][]string // namespace/name -> ingress IPs
	Routes     map[string][]string // VIP -> the next hops of the ToR's valid BGP paths
	Forwarding map[string][]string // IPv4 VIP -> the next hops of the ToR's kernel route
	Programmed map[string][]string // LB node -> the services its speaker announces and (ebpf) programs
	// BGPStatus are the ServiceBGPStatus objects: node, Service and peers of each.
	BGPStatus []string
	// Configuration is each ConfigurationState's result, error summary and conditions.
	Configuration map[string]string
	ControllerUp  bool
}

// differences names the parts of the state that differ in other.
func (s chaosState) differences(other chaosState) string {
	var parts []string
	for _, p := range []struct {
		name  string
		equal bool
	}{
		{"the Services' IPs", cmp.Equal(s.ServiceIPs, other.ServiceIPs)},
		{"the ToR's BGP next hops", cmp.Equal(s.Routes, other.Routes)},
		{"the ToR's kernel next hops", cmp.Equal(s.Forwarding, other.Forwarding)},
		{"what the speakers announce and program", cmp.Equal(s.Programmed, other.Programmed)},
		{"the ServiceBGPStatus objects", cmp.Equal(s.BGPStatus, other.BGPStatus)},
		{"the ConfigurationStates", cmp.Equal(s.Configuration, other.Configuration)},
		{fmt.Sprintf("the controller answering (%v, then %v)", s.ControllerUp, other.ControllerUp), s.ControllerUp == other.ControllerUp},
	} {
		if !p.equal {
			parts = append(parts, p.name)
		}
	}
	return strings.Join(parts, ", ")
}

func (s chaosState) vips() []string {
	var vips []string
	for _, ips := range s.ServiceIPs {
		vips = append(vips, ips...)
	}
	slices.Sort(vips)
	return slices.Compact(vips)
}

func observeState(ctx context.Context) (chaosState, error) {
	s := chaosState{ServiceIPs: map[string][]string{}, Programmed: map[string][]string{}, Configuration: map[string]string{}}
	services, err := loadBalancerServices(ctx)
	if err != nil {
		return s, err
	}
	for _, svc := range services {
		for _, in := range svc.Status.LoadBalancer.Ingress {
			s.ServiceIPs[svc.Namespace+"/"+svc.Name] = append(s.ServiceIPs[svc.Namespace+"/"+svc.Name], in.IP)
		}
	}
	if s.Routes, s.Forwarding, err = torRoutes(s.vips()); err != nil {
		return s, err
	}
	for _, lb := range lbNames() {
		if s.Programmed[lb], err = programmed(lb); err != nil {
			return s, err
		}
	}
	var statuses metallbv1beta1.ServiceBGPStatusList
	if err := cs.List(ctx, &statuses, client.InNamespace(env.Namespace)); err != nil {
		return s, err
	}
	s.BGPStatus = []string{}
	for _, st := range statuses.Items {
		peers := slices.Sorted(slices.Values(st.Status.Peers))
		s.BGPStatus = append(s.BGPStatus, fmt.Sprintf("%s %s/%s %v", st.Status.Node, st.Status.ServiceNamespace, st.Status.ServiceName, peers))
	}
	slices.Sort(s.BGPStatus)
	var states metallbv1beta1.ConfigurationStateList
	if err := cs.List(ctx, &states, client.InNamespace(env.Namespace)); err != nil {
		return s, err
	}
	for _, st := range states.Items {
		conditions := []string{}
		for _, c := range st.Status.Conditions {
			conditions = append(conditions, fmt.Sprintf("%s=%s", c.Type, c.Status))
		}
		slices.Sort(conditions)
		s.Configuration[st.Name] = fmt.Sprintf("%s %q %s", st.Status.Result, st.Status.ErrorSummary, strings.Join(conditions, ","))
	}
	_, err = scrape(env.ControllerMetrics)
	s.ControllerUp = err == nil
	return s, nil
}

// loadBalancerServices are the LoadBalancer Services with an IP.
func loadBalancerServices(ctx context.Context) ([]corev1.Service, error) {
	var list corev1.ServiceList
	if err := cs.List(ctx, &list); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(list.Items, func(svc corev1.Service) bool {
		return svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Status.LoadBalancer.Ingress) == 0
	}), nil
}

// torRoutes returns the ToR's BGP next hops of each of vips, and its kernel next hops of the
// IPv4 ones.
func torRoutes(vips []string) (routes, forwarding map[string][]string, err error) {
	routes, forwarding = map[string][]string{}, map[string][]string{}
	kernel, err := kernelRoutes("tor")
	if err != nil {
		return nil, nil, err
	}
	for _, vip := range vips {
		if routes[vip], err = nexthops("tor", vip)(); err != nil {
			return nil, nil, err
		}
		if netip.MustParseAddr(vip).Is4() {
			forwarding[vip] = slices.Sorted(slices.Values(append([]string{}, kernel[vip]...)))
		}
	}
	return routes, forwarding, nil
}

// programmed lists what lb's speaker announces (metallb_speaker_announced) and, with the ebpf
// datapath, the VIP, protocol and port triples its datapath has (maglb_datapath_service_*).
func programmed(lb string) ([]string, error) {
	text, err := scrape(env.LBNodes[lb].Metrics)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for metric, prefix := range map[string]string{
		"metallb_speaker_announced": "announced ", "maglb_datapath_service_packets_total": "programmed ",
	} {
		samples, err := promtext.Samples(text, metric)
		if err != nil {
			return nil, err
		}
		for labels, v := range samples {
			if metric == "metallb_speaker_announced" && v == 0 {
				continue
			}
			out = append(out, prefix+labels)
		}
	}
	slices.Sort(out)
	return out, nil
}

// settledState waits until the environment's state is the same three times a second apart,
// and returns it.
func settledState(ctx context.Context) chaosState {
	GinkgoHelper()
	var last chaosState
	same := 0
	Eventually(func() (int, error) {
		s, err := observeState(ctx)
		if err != nil {
			same = 0
			return same, err
		}
		if same > 0 && cmp.Equal(s, last) {
			same++
		} else {
			same = 1
		}
		last = s
		return same, nil
	}).WithTimeout(recoveryTimeout).WithPolling(time.Second).Should(BeNumerically(">=", 3), "a settled state before the fault")
	Expect(last.ControllerUp).To(BeTrue(), "the controller answers before the fault")
	return last
}

// recovered waits until the state equals before, up to recoveryTimeout; whether it did, and
// the last state seen.
func recovered(ctx context.Context, before chaosState) (bool, chaosState) {
	deadline := time.Now().Add(recoveryTimeout)
	var s chaosState
	for {
		got, err := observeState(ctx)
		if err == nil {
			s = got
			if cmp.Equal(s, before) {
				return true, s
			}
		}
		if time.Now().After(deadline) {
			return false, s
		}
		time.Sleep(time.Second)
	}
}

// ---------------------------------------------------------------------------------------------
// The traffic

// traffic is the load of a row: held connections through every VIP, new HTTP requests (every
// 100 ms) and UDP echoes (every 200 ms) to each VIP, and watchers of the Services' IPs and the
// ToR's kernel routes, against the state before the fault.
type traffic struct {
	held     *heldConnections
	before   chaosState
	stop     chan struct{}
	stopOnce sync.Once
	running  sync.WaitGroup

	mu           sync.Mutex
	requests     int
	failedHTTP   int
	failedUDP    int
	lastAnswer   map[string]time.Time
	longestGap   time.Duration
	ipChanges    map[string]string
	routeChanges map[string]string
}

func startTraffic(ctx context.Context, vips []string, before chaosState) *traffic {
	GinkgoHelper()
	t := &traffic{
		held: holdConnections(vips, chaosConnections, chaosRequestTimeout), before: before, stop: make(chan struct{}),
		lastAnswer: map[string]time.Time{}, ipChanges: map[string]string{}, routeChanges: map[string]string{},
	}
	DeferCleanup(t.stopAll)
	now := time.Now()
	for _, vip := range vips {
		t.lastAnswer[vip] = now
		t.every(100*time.Millisecond, func() {
			_, _, err := fetch(vip, env.HTTPPort, "/", 0)
			t.answered(vip, err)
		})
		t.every(200*time.Millisecond, func() {
			_, err := udpEcho(vip, env.UDPPort)
			t.mu.Lock()
			defer t.mu.Unlock()
			t.requests++
			if err != nil {
				t.failedUDP++
			}
		})
	}
	t.every(time.Second, func() { t.watchIPs(ctx) })
	t.every(200*time.Millisecond, t.watchRoutes)
	return t
}

func (t *traffic) every(interval time.Duration, f func()) {
	t.running.Add(1)
	go func() {
		defer t.running.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			f()
			select {
			case <-t.stop:
				return
			case <-tick.C:
			}
		}
	}()
}

func (t *traffic) answered(vip string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.requests++
	if err != nil {
		t.failedHTTP++
		return
	}
	now := time.Now()
	t.longestGap = max(t.longestGap, now.Sub(t.lastAnswer[vip]))
	t.lastAnswer[vip] = now
}

func (t *traffic) watchIPs(ctx context.Context) {
	services, err := loadBalancerServices(ctx)
	if err != nil {
		return // the API server may be the fault
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, svc := range services {
		key := svc.Namespace + "/" + svc.Name
		want, known := t.before.ServiceIPs[key]
		var got []string
		for _, in := range svc.Status.LoadBalancer.Ingress {
			got = append(got, in.IP)
		}
		if _, seen := t.ipChanges[key]; known && !seen && !slices.Equal(got, want) {
			t.ipChanges[key] = fmt.Sprintf("%s %v -> %v", key, want, got)
		}
	}
}

func (t *traffic) watchRoutes() {
	routes, err := kernelRoutes("tor")
	if err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for vip, want := range t.before.Forwarding {
		got := slices.Sorted(slices.Values(append([]string{}, routes[vip]...)))
		if _, seen := t.routeChanges[vip]; !seen && !slices.Equal(got, want) {
			t.routeChanges[vip] = fmt.Sprintf("%s %v -> %v", vip, want, got)
		}
	}
}

func (t *traffic) stopAll() {
	t.stopOnce.Do(func() { close(t.stop) })
	t.running.Wait()
}

// finish stops the traffic and writes what it measured into r.
func (t *traffic) finish(r *chaosRow) {
	t.stopAll()
	r.ConnectionsLost = t.held.finish()
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	for _, last := range t.lastAnswer {
		t.longestGap = max(t.longestGap, now.Sub(last))
	}
	r.Requests, r.FailedHTTP, r.FailedUDP = t.requests, t.failedHTTP, t.failedUDP
	r.LongestGapMillis = t.longestGap.Milliseconds()
	r.IPChanges = slices.Sorted(maps.Values(t.ipChanges))
	r.RouteChanges = slices.Sorted(maps.Values(t.routeChanges))
}

// ---------------------------------------------------------------------------------------------
// The environment

// demoVIPs are the IPs of the demo Services.
func demoVIPs(ctx context.Context) []string {
	GinkgoHelper()
	var list corev1.ServiceList
	Expect(cs.List(ctx, &list, client.InNamespace(demoNamespace))).To(Succeed())
	var vips []string
	for _, svc := range list.Items {
		for _, in := range svc.Status.LoadBalancer.Ingress {
			vips = append(vips, in.IP)
		}
	}
	slices.Sort(vips)
	return vips
}

// withGracefulRestart turns graceful restart on in the LB nodes' BGPPeers with the ToR until
// the suite ends, and waits until the ToR has it from every LB node's session.
func withGracefulRestart(ctx context.Context) {
	GinkgoHelper()
	tor := env.Routers["tor"]
	var peers metallbv1beta2.BGPPeerList
	Expect(cs.List(ctx, &peers, client.InNamespace(env.Namespace))).To(Succeed())
	for _, p := range peers.Items {
		if p.Spec.Address != tor.Address && p.Spec.Address != tor.Address6 || p.Spec.EnableGracefulRestart {
			continue
		}
		setGracefulRestart(ctx, &p, true)
		DeferCleanup(func() {
			setGracefulRestart(ctx, &p, false)
			Eventually(sessionsWith("tor", tor.Address)).Should(Equal(lbAddresses(lbNames()...)))
		})
	}
	Eventually(gracefulRestartSessions("tor")).Should(Equal(lbAddresses(lbNames()...)),
		"the ToR's established IPv4 sessions with graceful restart")
}

func setGracefulRestart(ctx context.Context, p *metallbv1beta2.BGPPeer, on bool) {
	GinkgoHelper()
	Eventually(func() error {
		var current metallbv1beta2.BGPPeer
		if err := cs.Get(ctx, client.ObjectKeyFromObject(p), &current); err != nil {
			return err
		}
		current.Spec.EnableGracefulRestart = on
		return cs.Update(ctx, &current)
	}).Should(Succeed(), "BGPPeer %s: enableGracefulRestart %v", p.Name, on)
}

// gracefulRestartSessions returns, for Eventually, the sorted peers of the router's
// established IPv4 sessions that negotiated graceful restart.
func gracefulRestartSessions(routerName string) func() ([]string, error) {
	return func() ([]string, error) {
		var neighbors map[string]struct {
			State string `json:"bgpState"`
			// FRR names the capability gracefulRestart when both ends sent it, else
			// gracefulRestartCapability.
			Capabilities struct {
				Both     string `json:"gracefulRestart"`
				OneSided string `json:"gracefulRestartCapability"`
			} `json:"neighborCapabilities"`
		}
		out, err := vtysh(routerName, "show bgp neighbors json")
		if err == nil {
			err = json.Unmarshal([]byte(out), &neighbors)
		}
		if err != nil {
			return nil, err
		}
		peers := []string{}
		for address, n := range neighbors {
			if n.State == "Established" && strings.Contains(n.Capabilities.Both+n.Capabilities.OneSided, "eceived") &&
				netip.MustParseAddr(address).Is4() {
				peers = append(peers, address)
			}
		}
		slices.Sort(peers)
		return peers, nil
	}
}

// commandOutput runs one of the environment's commands, with args appended, and returns what it
// printed on its standard output.
func commandOutput(command []string, args ...string) string {
	GinkgoHelper()
	Expect(command).NotTo(BeEmpty(), "the environment's description has no command for this")
	cmd := exec.Command(command[0], append(slices.Clone(command[1:]), args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	Expect(err).NotTo(HaveOccurred(), "%s %s: %s", strings.Join(command, " "), strings.Join(args, " "), stderr.String())
	return string(out)
}
