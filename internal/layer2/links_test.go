// SPDX-License-Identifier: Apache-2.0

package layer2

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/sets"
)

func TestPlan(t *testing.T) {
	eth0 := link{iface: iface{index: 2, name: "eth0", mac: [6]byte{2, 0, 0, 0, 0, 2}, mtu: 1500}, arp: true, ndp: true}
	eth1 := link{iface: iface{index: 3, name: "eth1", mac: [6]byte{2, 0, 0, 0, 0, 3}, mtu: 1500}, arp: true, ndp: true}
	v4only := link{iface: iface{index: 4, name: "v4only", mac: [6]byte{2, 0, 0, 0, 0, 4}, mtu: 1500}, arp: true}
	noBroadcast := link{iface: iface{index: 5, name: "nobcast", mac: [6]byte{2, 0, 0, 0, 0, 5}, mtu: 1500}, ndp: true}
	links := []link{eth0, eth1, v4only, noBroadcast}

	v4a, v4b := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")
	v6 := netip.MustParseAddr("2001:db8::10")
	arpOn := func(l link) responderKey { return responderKey{iface: l.iface, protocol: arpProtocol} }
	ndpOn := func(l link) responderKey { return responderKey{iface: l.iface, protocol: ndpProtocol} }

	tests := []struct {
		name      string
		announced map[netip.Addr][]string
		want      map[responderKey]sets.Set[netip.Addr]
	}{
		{
			name:      "nothing announced, no responder",
			announced: map[netip.Addr][]string{},
			want:      map[responderKey]sets.Set[netip.Addr]{},
		},
		{
			name:      "no interface named: every capable one",
			announced: map[netip.Addr][]string{v4a: nil, v6: {}},
			want: map[responderKey]sets.Set[netip.Addr]{
				arpOn(eth0): sets.New(v4a), arpOn(eth1): sets.New(v4a), arpOn(v4only): sets.New(v4a),
				ndpOn(eth0): sets.New(v6), ndpOn(eth1): sets.New(v6), ndpOn(noBroadcast): sets.New(v6),
			},
		},
		{
			name:      "named interfaces only",
			announced: map[netip.Addr][]string{v4a: {"eth1"}, v4b: {"eth0", "eth1"}, v6: {"eth0"}},
			want: map[responderKey]sets.Set[netip.Addr]{
				arpOn(eth0): sets.New(v4b), arpOn(eth1): sets.New(v4a, v4b),
				ndpOn(eth0): sets.New(v6),
			},
		},
		{
			name:      "named interface not capable of the protocol",
			announced: map[netip.Addr][]string{v4a: {"nobcast"}, v6: {"v4only"}},
			want:      map[responderKey]sets.Set[netip.Addr]{},
		},
		{
			name:      "named interface missing",
			announced: map[netip.Addr][]string{v4a: {"eth9"}},
			want:      map[responderKey]sets.Set[netip.Addr]{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := plan(links, tc.announced)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(responderKey{}, iface{})); diff != "" {
				t.Errorf("plan() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
