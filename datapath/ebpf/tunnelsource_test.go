// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestOwnSources(t *testing.T) {
	for _, tc := range []struct{ addrs, want4, want6 string }{
		{"", "invalid Prefix", "invalid Prefix"},
		{"fe80::1 172.31.0.11 172.31.0.12 fd00:31::11", "172.31.0.11/32", "fd00:31::11/128"},
		{"127.0.0.1 ::1 fe80::2 2001:db8::5", "invalid Prefix", "2001:db8::5/128"},
	} {
		var addrs []netip.Addr
		for _, a := range strings.Fields(tc.addrs) {
			addrs = append(addrs, netip.MustParseAddr(a))
		}
		v4, v6 := ownSources(addrs)
		if v4.String() != tc.want4 || v6.String() != tc.want6 {
			t.Errorf("ownSources(%s) = %s, %s; want %s, %s", tc.addrs, v4, v6, tc.want4, tc.want6)
		}
	}
}

func TestParseTunnelSources(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   string // v4 v6, or "error"
	}{
		{nil, "invalid Prefix invalid Prefix"},
		{[]string{"100.64.1.0/16"}, "100.64.0.0/16 invalid Prefix"},
		{[]string{"100.64.0.0/16,fd6d:6167:6c62::/64"}, "100.64.0.0/16 fd6d:6167:6c62::/64"},
		{[]string{"fd6d::/64", " 10.9.0.0/24"}, "10.9.0.0/24 fd6d::/64"},
		{[]string{"10.0.0.0/8,10.1.0.0/16"}, "error"},
		{[]string{"10.0.0.1"}, "error"},
	} {
		v4, v6, err := ParseTunnelSources(tc.values)
		got := fmt.Sprint(v4, " ", v6)
		if err != nil {
			got = "error"
		}
		if got != tc.want {
			t.Errorf("ParseTunnelSources(%q) = %s (%v), want %s", tc.values, got, err, tc.want)
		}
	}
}
