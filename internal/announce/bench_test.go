// SPDX-License-Identifier: Apache-2.0

package announce

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/internal/config"
)

// BenchmarkDecide10000Services measures one speaker's decisions for 10,000 BGP Services with
// an endpoint each, in the lab's configuration with a /16 for the default pool: the pure part
// of a pass, which every speaker runs after each batch of changes.
func BenchmarkDecide10000Services(b *testing.B) {
	cfg := labConfig(b, func(res *config.ClusterResources) {
		res.Pools[1].Spec.Addresses = []string{"10.0.0.0/16"}
	})
	in := Input{NodeName: "lb1", Nodes: labNodes, Config: cfg}
	for i := range 10000 {
		in.Services = append(in.Services, Service{
			Key:       fmt.Sprintf("default/svc-%d", i),
			IPs:       []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})},
			Pool:      "default",
			Ports:     []Port{{Protocol: datapath.TCP, Port: 80}},
			Endpoints: []Endpoint{{Addr: netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)}), Node: "be1", Ready: true}},
		})
	}
	b.ReportAllocs()
	for b.Loop() {
		if plan := Decide(in); len(plan.Services) != 10000 || len(plan.Routes) == 0 {
			b.Fatalf("%d services decided and %d routes, want 10000 and some", len(plan.Services), len(plan.Routes))
		}
	}
}
