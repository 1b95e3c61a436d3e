//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/k8s/configstate"
	"github.com/maglb/maglb/internal/netlab"
)

// The BFD spec fails an LB node hard: its uplink goes down and its speaker says nothing, so
// only BFD (or, without it, the hold time) tells the ToR the node is gone.
var _ = Describe("BFD", Label("bfd"), Ordered, func() {
	const ns = "e2e-bfd"
	ctx := context.Background()
	var vip, profile string
	var holdTime time.Duration

	BeforeAll(func() {
		requireProtocol("bgp")
		Expect(env.NodeUplinkDown).NotTo(BeEmpty(), "the environment's description has no node_uplink_down command")
		holdTime, profile = torBFD(ctx)
		Eventually(bfdSessionsUp("tor")).Should(ConsistOf(lbSessionAddresses()), "the ToR's BFD sessions, both families")
		// The datapath specs' block: the two containers never run at once.
		_, vip = createSpreadService(ctx, ns, "e2e-bfd", testCIDR(2))
		Eventually(forwardingNexthops("tor", vip)).Should(Equal(lbAddresses(lbNames()...)), "the ToR's kernel route before the failure")
	})

	It("takes an LB node whose uplink fails out of the ToR's kernel route, and keeps long-lived connections", func() {
		var failure hardFailure
		result := bfdResult{BFD: profile}
		result.survivalResult = survival(vip, 200, func(node string) { failure = failUplink(node, vip) })
		result.NextHopGoneMillis = failure.nextHopGone.Milliseconds()
		result.UplinkCommandMillis = failure.command.Milliseconds()
		AddReportEntry("bfd", result)
		writeReport("bfd-"+env.Datapath, result)
		Expect(result.Established).To(Equal(200))
		Expect(failure.nextHopGone).To(BeNumerically("<", holdTime), "BFD, not the hold time, took the node out (goal: under 1 s)")
		if env.Datapath == "ebpf" {
			Expect(result.Percent).To(BeNumerically(">=", 99), "the other LB nodes pick the same backends")
		}
	})
})

// bfdResult is the hard-failure figure of one run.
type bfdResult struct {
	survivalResult
	BFD string `json:"bfd"` // the ToR peers' BFD profile and its timers
	// NextHopGoneMillis is the time from the uplink command's return until the ToR's kernel
	// route to the VIP had no next hop through the node; the link went down at most
	// UplinkCommandMillis before that return (in the lab: at its very end).
	NextHopGoneMillis   int64 `json:"next_hop_gone_ms"`
	UplinkCommandMillis int64 `json:"uplink_command_ms"`
}

type hardFailure struct {
	command, nextHopGone time.Duration
}

// failUplink cuts node off with the environment's command, and measures how long until the
// ToR no longer forwards vip to it. At the end of the spec it reconnects the node and waits
// until the ToR forwards through every LB node again, their BFD sessions are up and each of
// them forwards vip.
func failUplink(node, vip string) hardFailure {
	GinkgoHelper()
	var f hardFailure
	started := time.Now()
	runCommand(env.NodeUplinkDown, node)
	down := time.Now()
	f.command = down.Sub(started)
	DeferCleanup(func() {
		runCommand(env.NodeUplinkUp, node)
		Eventually(forwardingNexthops("tor", vip)).Should(Equal(lbAddresses(lbNames()...)))
		Eventually(bfdSessionsUp("tor")).Should(ConsistOf(lbSessionAddresses()))
		everyNodeForwards(vip)
	})
	Eventually(forwardingNexthops("tor", vip)).WithPolling(10*time.Millisecond).
		ShouldNot(ContainElement(nodeAddress(node, corev1.IPv4Protocol)), "the ToR still forwards %s to %s", vip, node)
	f.nextHopGone = time.Since(down)
	return f
}

// torBFD returns the hold time and BFD profile of the BGPPeers the LB nodes have with the ToR,
// and skips when one of them runs without BFD.
func torBFD(ctx context.Context) (time.Duration, string) {
	GinkgoHelper()
	tor := env.Routers["tor"]
	var peers metallbv1beta2.BGPPeerList
	Expect(cs.List(ctx, &peers, client.InNamespace(env.Namespace))).To(Succeed())
	holdTime, profile := 90*time.Second, ""
	for _, p := range peers.Items {
		if p.Spec.Address != tor.Address && p.Spec.Address != tor.Address6 {
			continue
		}
		if p.Spec.BFDProfile == "" {
			Skip("the BGPPeer " + p.Name + " with the ToR has no bfdProfile")
		}
		if p.Spec.HoldTime != nil {
			holdTime = min(holdTime, p.Spec.HoldTime.Duration)
		}
		profile = p.Spec.BFDProfile
	}
	if profile == "" {
		Skip("no BGPPeer with the ToR")
	}
	var bfd metallbv1beta1.BFDProfile
	Expect(cs.Get(ctx, client.ObjectKey{Namespace: env.Namespace, Name: profile}, &bfd)).To(Succeed())
	// Upstream's defaults for unset timers.
	interval := max(valueOr(bfd.Spec.ReceiveInterval, 300), valueOr(bfd.Spec.TransmitInterval, 300))
	return holdTime, fmt.Sprintf("%s: %d ms x %d", profile, interval, valueOr(bfd.Spec.DetectMultiplier, 3))
}

func valueOr(p *uint32, unset uint32) uint32 {
	if p == nil {
		return unset
	}
	return *p
}

// lbSessionAddresses are the addresses of the LB nodes' sessions with the ToR, both families.
func lbSessionAddresses() []string {
	return append(lbAddresses(lbNames()...), nodeAddressesOf(corev1.IPv6Protocol, lbNames()...)...)
}

// bfdSessionsUp returns, for Eventually, the sorted peers of the router's BFD sessions that
// are up.
func bfdSessionsUp(routerName string) func() ([]string, error) {
	return func() ([]string, error) {
		out, err := vtysh(routerName, "show bfd peers json")
		if err != nil {
			return nil, err
		}
		var sessions []netlab.BFDPeer
		if err := json.Unmarshal([]byte(out), &sessions); err != nil {
			return nil, fmt.Errorf("decoding BFD peers: %w: %s", err, out)
		}
		up := []string{}
		for _, s := range sessions {
			if s.Status == "up" {
				up = append(up, s.Peer)
			}
		}
		slices.Sort(up)
		return up, nil
	}
}

// forwardingNexthops returns, for Eventually, the sorted next hops of the router's kernel
// route to vip, from the router's kernel_routes command.
func forwardingNexthops(routerName, vip string) func() ([]string, error) {
	return func() ([]string, error) {
		routes, err := kernelRoutes(routerName, vip)
		hops := []string{}
		for _, h := range routes {
			hops = append(hops, h...)
		}
		slices.Sort(hops)
		return hops, err
	}
}

// kernelRoutes runs the router's kernel_routes command with args appended (none: every
// route) and returns the gateways of each route, by destination.
func kernelRoutes(routerName string, args ...string) (map[string][]string, error) {
	command := env.Routers[routerName].KernelRoutes
	if len(command) == 0 {
		return nil, fmt.Errorf("the environment's router %q has no kernel_routes command", routerName)
	}
	out, err := exec.Command(command[0], append(slices.Clone(command[1:]), args...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", strings.Join(command, " "), strings.Join(args, " "), err)
	}
	// One next hop is the route's own gateway; several are its nexthops.
	type nexthop struct {
		Gateway string `json:"gateway"`
	}
	var routes []struct {
		nexthop
		Dst      string    `json:"dst"`
		Nexthops []nexthop `json:"nexthops"`
	}
	if err := json.Unmarshal(out, &routes); err != nil {
		return nil, fmt.Errorf("decoding the routes of %s: %w: %s", strings.Join(args, " "), err, out)
	}
	gateways := map[string][]string{}
	for _, r := range routes {
		for _, h := range append(r.Nexthops, r.nexthop) {
			if h.Gateway != "" {
				gateways[r.Dst] = append(gateways[r.Dst], h.Gateway)
			}
		}
	}
	return gateways, nil
}

// Upstream MetalLB's own BFD sample, applied as it is: a BFDProfile (380 ms receive, 270 ms
// transmit) and a BGPPeer naming it, iBGP with 172.30.0.3 in AS 64512, where the lab's rr answers.
var _ = Describe("BFD: upstream's sample configuration", Label("bfd"), Ordered, func() {
	const sample = "bgppeer_with_bfdprofile.yaml"
	ctx := context.Background()
	var peer metallbv1beta2.BGPPeer
	var profile metallbv1beta1.BFDProfile

	BeforeAll(func() {
		requireProtocol("bgp")
		rr := env.Routers["rr"]
		if rr.UpstreamSampleAddress == "" {
			Skip("the environment's rr does not answer at the address of upstream's samples")
		}
		objects := upstreamSample(sample)
		Expect(objects).To(HaveLen(2), "%s: a BFDProfile and a BGPPeer", sample)
		Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(objects[0].Object, &profile)).To(Succeed())
		Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(objects[1].Object, &peer)).To(Succeed())
		Expect(peer.Namespace).To(Equal(env.Namespace), "the sample's namespace is the lab's")
		Expect(peer.Spec.Address).To(Equal(rr.UpstreamSampleAddress))
		Expect(peer.Spec.ASN).To(Equal(rr.ASN))
		for _, obj := range objects {
			Expect(cs.Create(ctx, obj)).To(Succeed(), "%s %s, unchanged", obj.GetKind(), obj.GetName())
			DeferCleanup(func() { Expect(client.IgnoreNotFound(cs.Delete(ctx, obj))).To(Succeed()) })
		}
	})

	It("brings up every LB node's session and its BFD session with the sample's timers", func() {
		rr := env.Routers["rr"]
		Eventually(sessionsWith("rr", rr.UpstreamSampleAddress)).Should(Equal(lbAddresses(lbNames()...)),
			"rr's established sessions on %s", rr.UpstreamSampleAddress)
		Eventually(bfdSessionsUp("rr")).Should(Equal(lbAddresses(lbNames()...)))
		out, err := vtysh("rr", "show bfd peers json")
		Expect(err).NotTo(HaveOccurred())
		var sessions []netlab.BFDPeer
		Expect(json.Unmarshal([]byte(out), &sessions)).To(Succeed())
		// What the speakers sent: the sample's intervals, upstream's default multiplier.
		Expect(sessions).To(HaveEach(And(
			HaveField("Local", rr.UpstreamSampleAddress),
			HaveField("RemoteReceiveInterval", BeEquivalentTo(*profile.Spec.ReceiveInterval)),
			HaveField("RemoteTransmitInterval", BeEquivalentTo(*profile.Spec.TransmitInterval)),
			HaveField("RemoteDetectMultiplier", BeEquivalentTo(3)),
		)))
		for _, lb := range lbNames() {
			Expect(speakerSettingsHonoured(ctx, lb)).To(Succeed(), "%s honours every setting of the sample", lb)
		}
	})

	It("announces to the sample's peer", func() {
		ensureNamespace(ctx, "e2e-bfd")
		createAdvertisedPool(ctx, "e2e-bfd-sample", testCIDR(3))
		svc := createBackedService(ctx, "e2e-bfd", "sample", map[string]string{"metallb.io/address-pool": "e2e-bfd-sample"}, nil)
		vip := vipOf(ctx, svc)
		Eventually(nexthops("rr", vip)).Should(Equal(lbAddresses(lbNames()...)))
		Eventually(nexthops("tor", vip)).Should(Equal(lbAddresses(lbNames()...)), "the lab's own peers are unaffected")
	})
})

// upstreamSample decodes a YAML file of upstream MetalLB's configsamples, from the module the
// project's API types come from.
func upstreamSample(name string) []*unstructured.Unstructured {
	GinkgoHelper()
	dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "go.universe.tf/metallb").Output()
	Expect(err).NotTo(HaveOccurred(), "locating upstream's module")
	file, err := os.Open(filepath.Join(strings.TrimSpace(string(dir)), "configsamples", name))
	Expect(err).NotTo(HaveOccurred())
	defer file.Close()
	var objects []*unstructured.Unstructured
	decoder := yaml.NewYAMLOrJSONDecoder(file, 4096)
	for {
		obj := &unstructured.Unstructured{}
		err := decoder.Decode(&obj.Object)
		if err == io.EOF {
			return objects
		}
		Expect(err).NotTo(HaveOccurred(), "decoding %s", name)
		if len(obj.Object) > 0 {
			objects = append(objects, obj)
		}
	}
}

// sessionsWith returns, for Eventually, the sorted peers of the router's established IPv4
// sessions whose local end is localAddress.
func sessionsWith(routerName, localAddress string) func() ([]string, error) {
	return func() ([]string, error) {
		out, err := vtysh(routerName, "show bgp neighbors json")
		if err != nil {
			return nil, err
		}
		var neighbors map[string]struct {
			State     string `json:"bgpState"`
			HostLocal string `json:"hostLocal"`
		}
		if err := json.Unmarshal([]byte(out), &neighbors); err != nil {
			return nil, fmt.Errorf("decoding BGP neighbors: %w: %s", err, out)
		}
		established := []string{}
		for address, n := range neighbors {
			if n.State == "Established" && n.HostLocal == localAddress {
				established = append(established, address)
			}
		}
		slices.Sort(established)
		return established, nil
	}
}

// speakerSettingsHonoured fails when the node's speaker reports its configuration invalid or
// a setting it ignores.
func speakerSettingsHonoured(ctx context.Context, node string) error {
	var state metallbv1beta1.ConfigurationState
	if err := cs.Get(ctx, client.ObjectKey{Namespace: env.Namespace, Name: "speaker-" + node}, &state); err != nil {
		return err
	}
	if state.Status.Result != metallbv1beta1.ConfigurationResultValid {
		return fmt.Errorf("result %s: %s", state.Status.Result, state.Status.ErrorSummary)
	}
	for _, c := range state.Status.Conditions {
		if c.Type == configstate.ConditionSettingsHonoured && c.Status != metav1.ConditionTrue {
			return fmt.Errorf("%s: %s", c.Reason, c.Message)
		}
	}
	return nil
}
