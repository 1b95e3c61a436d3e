// SPDX-License-Identifier: Apache-2.0

package datapath

import (
	"net/netip"
	"testing"
)

func TestServiceValidate(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")
	b4 := []Backend{{Addr: netip.MustParseAddr("10.1.0.1"), Weight: 1}}
	b6 := []Backend{{Addr: netip.MustParseAddr("fd01::1"), Weight: 1}}
	for _, tc := range []struct {
		name  string
		s     Service
		valid bool
	}{
		{"v4 TCP", Service{VIP: v4, Protocol: TCP, Port: 80, Backends: b4}, true},
		{"v6 UDP GUE all ports", Service{VIP: v6, Protocol: UDP, Backends: b6, Encap: EncapGUE}, true},
		{"no backends", Service{VIP: v4, Protocol: TCP, Port: 80}, true},
		{"no VIP", Service{Protocol: TCP, Backends: b4}, false},
		{"mapped VIP", Service{VIP: netip.MustParseAddr("::ffff:10.0.0.1"), Protocol: TCP, Backends: b4}, false},
		{"zoned VIP", Service{VIP: netip.MustParseAddr("fe80::1%eth0"), Protocol: TCP, Backends: b6}, false},
		{"SCTP", Service{VIP: v4, Protocol: 132, Backends: b4}, false},
		{"unknown encap", Service{VIP: v4, Protocol: TCP, Backends: b4, Encap: 7}, false},
		{"backend of the other family", Service{VIP: v4, Protocol: TCP, Backends: b6}, false},
		{"invalid backend", Service{VIP: v4, Protocol: TCP, Backends: []Backend{{Weight: 1}}}, false},
	} {
		if err := tc.s.Validate(); (err == nil) != tc.valid {
			t.Errorf("%s: Validate() = %v, want valid %v", tc.name, err, tc.valid)
		}
	}
}

func TestStrings(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{TCP.String(), "TCP"},
		{Protocol(1).String(), "protocol(1)"},
		{EncapGUE.String(), "GUE"},
		{ServiceKey{VIP: netip.MustParseAddr("fd00::1"), Protocol: UDP, Port: 53}.String(), "[fd00::1]:53/UDP"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
