// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/maglb/maglb/internal/netlab"
	"github.com/maglb/maglb/internal/testenv"
)

// On the host network, every listener of the speaker, the backend agent and the reflector
// is bound to the node's address (--host, METALLB_HOST, which their manifests set to the
// node's IP): nothing listens on every address, the uplink's VIP side included.
func TestListenAddresses(t *testing.T) {
	netlab.Require(t, "ss")
	nodes := map[string]string{"listen-lb": "172.30.0.2", "listen-rr": "172.30.0.9"}
	lab := newBGPLab(t, nodes)
	ensureNamespace(t, metallbNamespace)
	labelNode(t, "listen-rr", map[string]string{"maglb.io/reflector": ""})
	// A ToR peer for the reflector, so that its BGP listener opens.
	create(t, &metallbv1beta2.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor", Namespace: metallbNamespace},
		Spec: metallbv1beta2.BGPPeerSpec{MyASN: nodeASN, ASN: torASN, Address: "172.30.0.1", HoldTime: &metav1.Duration{Duration: 9 * time.Second},
			NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"maglb.io/reflector": ""}}}}})

	lab.startSpeaker(t, "listen-lb", "--host", nodes["listen-lb"])
	lab.startProgram(t, "listen-lb", binary(t), []string{"METALLB_HOST=" + nodes["listen-lb"]}, "--role=backend-agent",
		"--backend-interfaces=eth0", "--xdp-mode=generic", "--decap-hook=xdp", "--tunnel-sources=172.30.0.0/24",
		"--datapath-pin-path", testBPFFS(t)+"/maglb", "--keep-datapath-on-exit=false")
	lab.startProgram(t, "listen-rr", binary(t), nil, "--role=reflector", "--node-name", "listen-rr", "--host", nodes["listen-rr"],
		"--kubeconfig", lab.env.Kubeconfig, "--namespace", metallbNamespace)

	api := apiServerHostPort(t, lab.env) // the test's relay to the API server
	for node, want := range map[string][]string{
		"listen-lb": {"172.30.0.2:17472", "172.30.0.2:7472", "172.30.0.2:7476"},
		"listen-rr": {"172.30.0.9:17472", "172.30.0.9:179", "172.30.0.9:7477"},
	} {
		testenv.Eventually(t, "the listeners of "+node, func() error {
			got, err := listeners(lab.nodes[node])
			if err != nil {
				return err
			}
			got = slices.DeleteFunc(got, func(a string) bool { return a == api })
			if !slices.Equal(got, want) {
				return fmt.Errorf("TCP listeners %v, want %v", got, want)
			}
			return nil
		})
	}
}

// listeners returns the sorted local addresses of the TCP sockets listening in ns.
func listeners(ns *netlab.Namespace) ([]string, error) {
	out, err := ns.Run("ss", "-ltnH")
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if fields := strings.Fields(line); len(fields) >= 4 {
			addrs = append(addrs, fields[3])
		}
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), nil
}
