// SPDX-License-Identifier: Apache-2.0

package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
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

func TestFailed(t *testing.T) {
	a := Service{VIP: netip.MustParseAddr("10.0.0.1"), Protocol: TCP, Port: 80}
	b := Service{VIP: netip.MustParseAddr("10.0.0.2"), Protocol: UDP, Port: 53}
	full := errors.New("no free id")
	perService := &SyncError{Services: map[ServiceKey]error{b.Key(): full}}
	for _, tc := range []struct {
		name string
		err  error
		want []ServiceKey
	}{
		{"no error", nil, nil},
		{"per service", perService, []ServiceKey{b.Key()}},
		{"per service, wrapped", fmt.Errorf("sync: %w", perService), []ServiceKey{b.Key()}},
		{"any other error fails all", errors.New("datapath closed"), []ServiceKey{a.Key(), b.Key()}},
	} {
		failed := Failed(tc.err, []Service{a, b})
		var got []ServiceKey
		for _, k := range []ServiceKey{a.Key(), b.Key()} {
			if failed[k] != nil {
				got = append(got, k)
			}
		}
		if len(failed) != len(got) || !slices.Equal(got, tc.want) {
			t.Errorf("%s: Failed = %v, want %v", tc.name, failed, tc.want)
		}
	}
	if msg := perService.Error(); msg != "1 services not programmed: 10.0.0.2:53/UDP: no free id" {
		t.Errorf("Error() = %q", msg)
	}
}
