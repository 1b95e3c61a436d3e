// SPDX-License-Identifier: Apache-2.0

package reflector

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/config"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// BenchmarkAggregate measures one reflector pass at the scale benchmark's size: 50 LB nodes
// in 4 shards, 10,000 VIPs. "settled": every node of a shard announces every VIP of it, so
// 4 aggregates. "converging": half the VIPs are announced by half of their shard's nodes
// only, so they keep host routes, as while the speakers take new IPs.
func BenchmarkAggregate(b *testing.B) {
	const nodes, shards, vips = 50, 4, 10000
	cfg := testConfig(b, func(res *config.ClusterResources) {
		res.Pools = nil
		for s := range shards {
			p := maglbv1beta1.IPAddressPool{ObjectMeta: meta(fmt.Sprintf("shard%d", s))}
			p.Spec.Addresses, p.Spec.Shard = []string{fmt.Sprintf("10.%d.0.0/16", 100+s)}, p.Name
			res.Pools = append(res.Pools, p)
		}
		res.BGPAdvs = res.BGPAdvs[:1]
		res.BGPAdvs[0].Spec.IPAddressPools = nil
	})
	for _, tc := range []struct {
		name      string
		announces func(vipOfShard, nodeOfShard int) bool
	}{
		{"settled", func(int, int) bool { return true }},
		{"converging", func(vip, node int) bool { return vip%2 == 0 || node%2 == 0 }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			in := Input{Config: cfg, Upstream: []string{"tor"}, Received: map[netip.Addr][]netip.Prefix{}}
			for i := range vips {
				s, j := i%shards, i/shards+1
				ip := netip.AddrFrom4([4]byte{10, byte(100 + s), byte(j >> 8), byte(j)})
				in.Services = append(in.Services, announce.Service{Key: fmt.Sprintf("default/scale-%d", i), IPs: []netip.Addr{ip}, Pool: fmt.Sprintf("shard%d", s)})
				for n := s; n < nodes; n += shards {
					if tc.announces(j, n/shards) {
						nh := netip.AddrFrom4([4]byte{172, 30, 0, byte(10 + n)})
						in.Received[nh] = append(in.Received[nh], netip.PrefixFrom(ip, 32))
					}
				}
			}
			b.ReportAllocs()
			var paths int
			for b.Loop() {
				paths = len(Aggregate(in))
			}
			if paths < nodes {
				b.Fatalf("%d paths, want at least one per node", paths)
			}
			b.ReportMetric(float64(paths), "paths")
		})
	}
}
