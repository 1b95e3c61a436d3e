// SPDX-License-Identifier: Apache-2.0

package backendagent

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestAllowedSources(t *testing.T) {
	node := func(addrs ...corev1.NodeAddress) *corev1.Node {
		return &corev1.Node{Status: corev1.NodeStatus{Addresses: addrs}}
	}
	internal := func(a string) corev1.NodeAddress { return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a} }
	for _, tc := range []struct {
		name       string
		configured []string
		nodes      []*corev1.Node
		want       []string
	}{
		{name: "nothing", want: nil},
		{name: "configured prefixes masked", configured: []string{"100.64.1.7/16", "fd6d::1/64"}, want: []string{"100.64.0.0/16", "fd6d::/64"}},
		{
			name:  "InternalIPs of both families as single addresses",
			nodes: []*corev1.Node{node(internal("172.31.0.11"), internal("fd00:31::11")), node(internal("172.31.0.12"))},
			want:  []string{"172.31.0.11/32", "172.31.0.12/32", "fd00:31::11/128"},
		},
		{
			name: "other address types and garbage ignored",
			nodes: []*corev1.Node{node(corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.1"},
				corev1.NodeAddress{Type: corev1.NodeHostName, Address: "lb1"}, internal("not-an-ip"))},
			want: nil,
		},
		{
			name:       "duplicates once, IPv4-mapped unmapped",
			configured: []string{"172.31.0.11/32"},
			nodes:      []*corev1.Node{node(internal("172.31.0.11")), node(internal("::ffff:172.31.0.11"))},
			want:       []string{"172.31.0.11/32"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fmt.Sprint(allowedSources(parsePrefixes(tc.configured), tc.nodes))
			if want := fmt.Sprint(parsePrefixes(tc.want)); got != want {
				t.Errorf("got %s, want %s", got, want)
			}
		})
	}
}

func TestNodeAddresses(t *testing.T) {
	var in []netip.Addr
	for _, a := range []string{"fd00:31::21", "127.0.0.1", "::1", "fe80::1", "172.31.0.21", "224.0.0.1", "::ffff:172.31.0.21", "0.0.0.0", "10.0.0.1"} {
		in = append(in, netip.MustParseAddr(a))
	}
	want := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("172.31.0.21"), netip.MustParseAddr("fd00:31::21")}
	if got := nodeAddresses(in); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestRoleOf(t *testing.T) {
	for args, want := range map[string]string{
		"":                                    "",
		"--node-name lb1":                     "",
		"--role=backend-agent":                Role,
		"-role=backend-agent --port 1":        Role,
		"--port 1 --role backend-agent":       Role,
		"--role=speaker":                      "speaker",
		"--role reflector":                    "reflector",
		"--lb-class backend-agent":            "",
		"--role=backend-agent-and-more --x=y": "backend-agent-and-more",
	} {
		if got := RoleOf(strings.Fields(args)); got != want {
			t.Errorf("RoleOf(%q) = %q, want %q", args, got, want)
		}
	}
}

func parsePrefixes(s []string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}
