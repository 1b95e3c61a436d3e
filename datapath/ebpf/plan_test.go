// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/datapath/maglev"
)

func db(addr netip.Addr, weight uint32) datapath.Backend {
	return datapath.Backend{Addr: addr, Weight: weight}
}

func mb(addr netip.Addr, weight uint32) maglev.Backend {
	return maglev.Backend{Key: string(addr.AsSlice()), Weight: weight}
}

func TestMergeBackends(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	for _, tc := range []struct {
		name string
		in   []datapath.Backend
		want []maglev.Backend
	}{
		{"empty", nil, []maglev.Backend{}},
		{"sorted by address", []datapath.Backend{db(b, 1), db(a, 2)}, []maglev.Backend{mb(a, 2), mb(b, 1)}},
		{"repeats summed", []datapath.Backend{db(a, 1), db(b, 1), db(a, 3)}, []maglev.Backend{mb(a, 4), mb(b, 1)}},
		{"zero weight left out", []datapath.Backend{db(a, 0), db(b, 1)}, []maglev.Backend{mb(b, 1)}},
		{"sum capped", []datapath.Backend{db(a, 1<<31), db(a, 1<<31), db(a, 1<<31)}, []maglev.Backend{mb(a, 1<<32-1)}},
	} {
		if got := mergeBackends(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPlanDigest(t *testing.T) {
	vip := netip.MustParseAddr("10.10.0.1")
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	digest := func(backends []datapath.Backend, encap datapath.Encap, config maglev.Config) uint64 {
		wanted, failed := plan([]datapath.Service{{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: backends, Encap: encap}}, config)
		if len(failed) > 0 {
			t.Fatal(failed)
		}
		return wanted[vipKey(datapath.ServiceKey{VIP: vip, Protocol: datapath.TCP, Port: 80})].digest
	}
	base := digest([]datapath.Backend{db(a, 1), db(b, 1)}, datapath.EncapIPIP, maglev.DefaultConfig())
	otherSeed := maglev.DefaultConfig()
	otherSeed.Seed++
	for _, tc := range []struct {
		name string
		got  uint64
		same bool
	}{
		{"reordered", digest([]datapath.Backend{db(b, 1), db(a, 1)}, datapath.EncapIPIP, maglev.DefaultConfig()), true},
		{"encapsulation is not part of the ring", digest([]datapath.Backend{db(a, 1), db(b, 1)}, datapath.EncapGUE, maglev.DefaultConfig()), true},
		{"weight", digest([]datapath.Backend{db(a, 2), db(b, 1)}, datapath.EncapIPIP, maglev.DefaultConfig()), false},
		{"backend", digest([]datapath.Backend{db(a, 1)}, datapath.EncapIPIP, maglev.DefaultConfig()), false},
		{"seed", digest([]datapath.Backend{db(a, 1), db(b, 1)}, datapath.EncapIPIP, otherSeed), false},
	} {
		if (tc.got == base) != tc.same {
			t.Errorf("%s: digest equal %v, want %v", tc.name, tc.got == base, tc.same)
		}
	}
}

func TestFragmentOwners(t *testing.T) {
	v1, v2 := netip.MustParseAddr("10.10.0.1"), netip.MustParseAddr("10.10.0.2")
	key := func(vip netip.Addr, p datapath.Protocol, port uint16) bpf.LBVipKey {
		return vipKey(datapath.ServiceKey{VIP: vip, Protocol: p, Port: port})
	}
	services := []datapath.Service{
		{VIP: v1, Protocol: datapath.TCP, Port: 8080},
		{VIP: v1, Protocol: datapath.TCP, Port: 443},
		{VIP: v1, Protocol: datapath.TCP, Port: 1000},
		{VIP: v1, Protocol: datapath.UDP, Port: 53},
		{VIP: v2, Protocol: datapath.TCP},
		{VIP: v2, Protocol: datapath.TCP, Port: 80},
	}
	wanted, failed := plan(services, maglev.DefaultConfig())
	if len(failed) > 0 {
		t.Fatal(failed)
	}
	got := fragmentOwners(wanted)
	want := map[bpf.LBVipKey]bpf.LBVipKey{
		key(v1, datapath.TCP, 0): key(v1, datapath.TCP, 443),
		key(v1, datapath.UDP, 0): key(v1, datapath.UDP, 53),
	}
	if len(got) != len(want) {
		t.Fatalf("got %d fragment entries, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("fragments of %s go to %s, want %s", serviceKey(k), serviceKey(got[k]), serviceKey(v))
		}
	}
}

func TestSettings(t *testing.T) {
	opts, err := Options{
		TunnelSource4: netip.MustParsePrefix("100.64.0.0/16"),
		TunnelSource6: netip.MustParsePrefix("fd00:1::/112"),
		GUEPort:       6080,
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	s := settings(opts)
	for _, tc := range []struct {
		name      string
		got, want []byte
	}{
		{"source4", wordBytes(s.Source4), []byte{100, 64, 0, 0}},
		{"source4 mask", wordBytes(s.Source4Mask), []byte{0, 0, 0xff, 0xff}},
		{"source6 last word", wordBytes(s.Source6[3]), []byte{0, 0, 0, 0}},
		{"source6 mask", wordBytes(s.Source6Mask), []byte{0, 0, 0xff, 0xff}},
		{"GUE port", []byte{byte(s.GuePort), byte(s.GuePort >> 8)}, []byte{0x17, 0xc0}},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

// wordBytes is the memory layout of a host-order word on this (little-endian) host.
func wordBytes(w uint32) []byte {
	return []byte{byte(w), byte(w >> 8), byte(w >> 16), byte(w >> 24)}
}

func TestOptionsRejected(t *testing.T) {
	for name, opts := range map[string]Options{
		"unknown XDP mode":   {XDPMode: "offload"},
		"v6 tunnel source 4": {TunnelSource4: netip.MustParsePrefix("fd00::/64")},
		"bad maglev bounds":  {Maglev: maglev.Config{MinSize: 1000, MaxSize: 1000}},
	} {
		if _, err := opts.withDefaults(); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
