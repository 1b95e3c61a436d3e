// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"maps"
	"net/netip"
	"testing"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
)

// TestMapEntriesFollowServices: the kernel-side counts of the stats follow what is programmed
// through adds, backend changes and removals, and return to zero when nothing is: the churn
// soak's check that nothing leaked.
func TestMapEntriesFollowServices(t *testing.T) {
	env := newLBEnv(t, Options{Interface: "lb0", XDPMode: XDPGeneric})
	backends := backendRange(t, env, 6)
	vip1, vip2 := netip.MustParseAddr("10.10.3.1"), netip.MustParseAddr("10.10.3.2")
	steps := []struct {
		name     string
		services []datapath.Service
		want     map[string]int
	}{
		{"two VIPs, three services, four backends", []datapath.Service{
			{VIP: vip1, Protocol: datapath.TCP, Port: 80, Backends: backends[:3]},
			{VIP: vip1, Protocol: datapath.UDP, Port: 53, Backends: backends[:2]},
			{VIP: vip2, Protocol: datapath.TCP, Port: 443, Backends: backends[3:4]},
		}, map[string]int{bpf.LBMapVipAddresses: 2, bpf.LBMapBackends: 4, bpf.LBMapRings: 3}},
		{"backends replaced, one service gone", []datapath.Service{
			{VIP: vip1, Protocol: datapath.TCP, Port: 80, Backends: backends[4:6]},
			{VIP: vip2, Protocol: datapath.TCP, Port: 443, Backends: backends[3:4]},
		}, map[string]int{bpf.LBMapVipAddresses: 2, bpf.LBMapBackends: 3, bpf.LBMapRings: 2}},
		{"nothing", nil, map[string]int{bpf.LBMapVips: 0, bpf.LBMapVipAddresses: 0, bpf.LBMapBackends: 0, bpf.LBMapRings: 0}},
	}
	for _, step := range steps {
		env.sync(t, step.services)
		got := env.stats(t).MapEntries
		if got[bpf.LBMapVips] != len(env.dp.vips) {
			t.Errorf("%s: the kernel holds %d VIP entries, the datapath programmed %d", step.name, got[bpf.LBMapVips], len(env.dp.vips))
		}
		want := maps.Clone(step.want)
		if _, ok := want[bpf.LBMapVips]; !ok {
			want[bpf.LBMapVips] = got[bpf.LBMapVips]
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s: map entries %v, want %v", step.name, got, want)
		}
	}
}
