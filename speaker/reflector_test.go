// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/testenv"
)

// The reflector role end to end, from upstream's kinds in a real API server: two LB nodes'
// speakers peer with the reflector (BGPPeer "rr", addressed to the reflector's node), the
// reflector with the ToR (BGPPeer "tor", selecting the reflector's node), and the ToR gets
// the pool's prefix from the reflector with one path per LB node.
func TestReflectorRole(t *testing.T) {
	nodes := map[string]string{"rlb1": "172.30.0.2", "rlb2": "172.30.0.3", "rr": "172.30.0.9"}
	lab := newBGPLab(t, nodes)
	ensureNamespace(t, metallbNamespace)
	labelNode(t, "rr", map[string]string{"maglb.io/reflector": ""})
	for _, n := range []string{"rlb1", "rlb2"} {
		labelNode(t, n, map[string]string{"role": "lb"})
	}
	hold := &metav1.Duration{Duration: 9 * time.Second}
	for _, obj := range []client.Object{
		pool("gold", "198.51.100.0/26", ""),
		&metallbv1beta2.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "rr", Namespace: metallbNamespace},
			Spec: metallbv1beta2.BGPPeerSpec{MyASN: nodeASN, ASN: nodeASN, Address: nodes["rr"], HoldTime: hold,
				NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"role": "lb"}}}}},
		&metallbv1beta2.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor", Namespace: metallbNamespace},
			Spec: metallbv1beta2.BGPPeerSpec{MyASN: nodeASN, ASN: torASN, Address: "172.30.0.1", HoldTime: hold,
				NodeSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "maglb.io/reflector", Operator: metav1.LabelSelectorOpExists}}}}}},
		&metallbv1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: metallbNamespace},
			Spec: metallbv1beta1.BGPAdvertisementSpec{Communities: []string{"64512:100"}}},
	} {
		create(t, obj)
	}
	loadBalancer(t, "web-a", "198.51.100.1", "gold", "rlb1")
	loadBalancer(t, "web-b", "198.51.100.2", "gold", "rlb2")

	lab.startProgram(t, "rr", binary(t), nil, "--role=reflector", "--node-name", "rr",
		"--kubeconfig", lab.env.Kubeconfig, "--namespace", metallbNamespace, "--log-level", "debug", "--metrics-secure=false")
	lab.startSpeaker(t, "rlb1")
	stopLB2 := lab.startSpeaker(t, "rlb2")

	aggregate := func(want ...string) {
		t.Helper()
		testenv.Eventually(t, fmt.Sprintf("198.51.100.0/26 via %v at the ToR", want), func() error {
			got := lab.route(t, "198.51.100.0/26")
			slices.Sort(got.nextHops)
			if !slices.Equal(got.nextHops, want) || got.communities != "64512:100" {
				return fmt.Errorf("next hops %v, communities %q", got.nextHops, got.communities)
			}
			for _, vip := range []string{"198.51.100.1/32", "198.51.100.2/32"} {
				if r := lab.route(t, vip); len(r.nextHops) > 0 {
					return fmt.Errorf("%s at the ToR via %v", vip, r.nextHops)
				}
			}
			return nil
		})
	}
	aggregate(nodes["rlb1"], nodes["rlb2"])
	waitForState(t, "reflector-rr", metallbv1beta1.ConfigurationResultValid)
	testenv.Eventually(t, "the reflector's metrics", func() error {
		out, err := lab.nodes["rr"].Run("curl", "-s", "http://127.0.0.1:7477/metrics")
		if err != nil {
			return err
		}
		// Each node announces both VIPs (ETP=Cluster).
		for _, want := range []string{"maglb_reflector_lb_nodes 2", "maglb_reflector_received_routes 4",
			`maglb_reflector_paths{kind="aggregate"} 2`, `maglb_reflector_paths{kind="host"} 0`, `metallb_bgp_session_up{peer="172.30.0.1:179"} 1`} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("no %s in the metrics:\n%s", want, grepLines(out, "maglb_reflector_", "metallb_bgp_session_up"))
			}
		}
		return nil
	})

	// An LB node's speaker stops: its path leaves the aggregate.
	stopLB2()
	aggregate(nodes["rlb1"])
}

// grepLines returns the lines of text that start with one of prefixes.
func grepLines(text string, prefixes ...string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(line, p) }) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
