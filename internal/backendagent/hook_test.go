// SPDX-License-Identifier: Apache-2.0

package backendagent

import (
	"context"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf/link"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	dpebpf "github.com/maglb/maglb/datapath/ebpf"
	"github.com/maglb/maglb/internal/netlab"
)

func lbNode(name string, addrs ...string) *corev1.Node {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	return node
}

func TestDecapHook(t *testing.T) {
	own := []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")}
	for _, tc := range []struct {
		name  string
		hook  dpebpf.DecapHook
		nodes []*corev1.Node
		want  dpebpf.DecapHook
	}{
		{"auto, no LB nodes known", dpebpf.DecapAuto, nil, dpebpf.DecapAuto},
		{"auto, other LB nodes", dpebpf.DecapAuto, []*corev1.Node{lbNode("a", "10.0.0.1")}, dpebpf.DecapAuto},
		{"auto, this node an LB by IPv4", dpebpf.DecapAuto, []*corev1.Node{lbNode("a", "10.0.0.1"), lbNode("b", "10.0.0.5")}, dpebpf.DecapTCX},
		{"auto, this node an LB by IPv6", dpebpf.DecapAuto, []*corev1.Node{lbNode("b", "fd00::5")}, dpebpf.DecapTCX},
		{"xdp asked on an LB node", dpebpf.DecapXDP, []*corev1.Node{lbNode("b", "10.0.0.5")}, dpebpf.DecapXDP},
		{"tcx asked", dpebpf.DecapTCX, nil, dpebpf.DecapTCX},
	} {
		if got := decapHook(tc.hook, own, tc.nodes); got != tc.want {
			t.Errorf("%s: decapHook = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestLBNodeDecapsulatesAtTCX: on a node that is one of the load balancers, auto leaves the
// XDP hook to the speaker and attaches at TCX ingress; a restart adopts the pinned link, and
// one asking for XDP replaces it.
func TestLBNodeDecapsulatesAtTCX(t *testing.T) {
	netlab.Require(t)
	ns := backendNamespace(t)
	pins := pinPath(t)
	cfg := Config{
		Interfaces: []string{"eth0"}, XDPMode: dpebpf.XDPGeneric, PinPath: pins, KeepOnExit: true,
		LBNodes: func() ([]*corev1.Node, error) { return []*corev1.Node{lbNode("this", "10.77.0.2")}, nil },
	}
	start := func() {
		ctx, cancel := context.WithCancel(t.Context())
		stopped := runAgent(t, ctx, cancel, ns, cfg)
		cancel()
		<-stopped
	}
	linkType := func() link.Type { return pinnedLink(t, pins).Type }

	start()
	if id := attachedProgram(t, ns); id != 0 {
		t.Errorf("XDP program %d on eth0 of an LB node", id)
	}
	if got := linkType(); got != link.TCXType {
		t.Fatalf("pinned link of type %v, want TCX", got)
	}
	first := pinnedLinkID(t, pins)
	start()
	if got := pinnedLinkID(t, pins); got != first {
		t.Errorf("restart replaced link %d with %d instead of adopting it", first, got)
	}
	cfg.DecapHook, cfg.KeepOnExit = dpebpf.DecapXDP, false
	ctx, cancel := context.WithCancel(t.Context())
	runAgent(t, ctx, cancel, ns, cfg)
	if attachedProgram(t, ns) == 0 || linkType() != link.XDPType {
		t.Error("asked for XDP, the agent did not replace the TCX link with an XDP one")
	}
}
