// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
)

// manyServices returns n TCP port-80 services on 10.64.0.0/10 with perVIP backends each, taken
// round-robin from pool.
func manyServices(n, perVIP int, pool []datapath.Backend) []datapath.Service {
	services := make([]datapath.Service, n)
	for i := range services {
		backends := make([]datapath.Backend, perVIP)
		for j := range backends {
			backends[j] = pool[(i+j)%len(pool)]
		}
		services[i] = datapath.Service{VIP: benchVIP(i), Protocol: datapath.TCP, Port: 80, Backends: backends}
	}
	return services
}

func benchVIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 64 + byte(i>>16), byte(i >> 8), byte(i)})
}

// loadBench loads the benchmark entry points on the maps of dp.
func loadBench(t testing.TB, dp *Datapath) *bpf.LBBenchPrograms {
	spec, err := bpf.LoadLBBench()
	if err != nil {
		t.Fatal(err)
	}
	if err := configureSpec(spec, dp.opts); err != nil {
		t.Fatal(err)
	}
	var progs bpf.LBBenchPrograms
	err = spec.LoadAndAssign(&progs, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		bpf.LBMapVips: dp.objs.Vips, bpf.LBMapVipAddresses: dp.objs.VipAddresses, bpf.LBMapRings: dp.objs.Rings, bpf.LBMapBackends: dp.objs.Backends,
		bpf.LBMapFlows: dp.objs.Flows, bpf.LBMapVipStats: dp.objs.VipStats, bpf.LBMapGlobalStats: dp.objs.GlobalStats,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = progs.Close() })
	return &progs
}

// BenchmarkProgRun times one packet through the balancer under BPF_PROG_RUN: a connection-table
// hit, a miss (ring lookup and insert) and non-VIP traffic, with 10 to 100,000 VIPs of two
// backends each programmed. prog-ns/pkt is the kernel's own measurement.
func BenchmarkProgRun(b *testing.B) {
	for _, vips := range []int{10, 1000, 10000, 100000} {
		b.Run(fmt.Sprintf("VIPs=%d", vips), func(b *testing.B) {
			env := newLBEnv(b, Options{MaxServices: 131072, MaxFlows: 1 << 20})
			env.sync(b, manyServices(vips, 2, backendRange(b, env, 16)))
			progs := loadBench(b, env.dp)
			vip := benchVIP(vips / 2)
			ack := concat(ethernet(lb0MAC, clientMAC, etherIPv4, -1),
				ipv4(ipv4Header{src: client4, dst: vip, proto: protoTCP, ttl: 64}, tcp(40000, 80, tcpACK, nil)))
			nonVIP := frame4(notVIP, syn80, nil)
			for _, path := range []struct {
				name    string
				prog    *ebpf.Program
				frame   []byte
				verdict uint32
			}{
				{"hit", progs.XdpBalanceSameFlow, ack, xdpRedirect},
				{"miss", progs.XdpBalanceNewFlows, ack, xdpRedirect},
				{"non-VIP", env.dp.objs.XdpBalance, nonVIP, xdpPass},
			} {
				b.Run(path.name, func(b *testing.B) {
					opts := &ebpf.RunOptions{Data: path.frame, Repeat: uint32(b.N)}
					b.ResetTimer()
					verdict, err := path.prog.Run(opts)
					if err != nil {
						b.Fatal(err)
					}
					if verdict != path.verdict {
						b.Fatalf("verdict %s, want %s", verdictNames[verdict], verdictNames[path.verdict])
					}
				})
			}
		})
	}
}

// BenchmarkSync times Sync of 10,000 VIPs with 10 backends each: unchanged (the diff alone),
// and with every backend set changed (all rings rebuilt and flipped).
func BenchmarkSync(b *testing.B) {
	env := newLBEnv(b, Options{})
	pool := backendRange(b, env, 100)
	services := [2][]datapath.Service{manyServices(10000, 10, pool), manyServices(10000, 10, pool[1:])}
	env.sync(b, services[0])
	b.Run("unchanged", func(b *testing.B) {
		for b.Loop() {
			env.sync(b, services[0])
		}
	})
	b.Run("all-changed", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			env.sync(b, services[i%2])
		}
	})
}

// BenchmarkMapMemory reports the kernel's memory accounting of every map, inner rings
// included, for 10,000 VIPs of 10 backends each with the default capacities.
func BenchmarkMapMemory(b *testing.B) {
	env := newLBEnv(b, Options{})
	services := manyServices(10000, 10, backendRange(b, env, 100))
	for b.Loop() {
		env.sync(b, services)
	}
	objs := env.dp.objs
	memory := map[string]uint64{}
	for name, m := range map[string]*ebpf.Map{
		"vips": objs.Vips, "rings-outer": objs.Rings, "backends": objs.Backends,
		"flows": objs.Flows, "vip_stats": objs.VipStats, "global_stats": objs.GlobalStats,
	} {
		memory[name] = memlock(b, m)
	}
	for _, meta := range env.dp.vips {
		if meta.Flags&bpf.LBVipFlagsVIP_FRAGMENTS_ONLY != 0 {
			continue // shares its owner's ring
		}
		var id ebpf.MapID
		if err := objs.Rings.Lookup(meta.Ring, &id); err != nil {
			b.Fatal(err)
		}
		ring, err := ebpf.NewMapFromID(id)
		if err != nil {
			b.Fatal(err)
		}
		memory["rings-inner"] += memlock(b, ring)
		_ = ring.Close()
	}
	var total uint64
	for name, bytes := range memory {
		total += bytes
		b.ReportMetric(float64(bytes)/(1<<20), name+"-MiB")
	}
	b.ReportMetric(float64(total)/(1<<20), "total-MiB")
	b.ReportMetric(float64(total-memory["flows"])/(1<<20), "without-flows-MiB")
}

func memlock(b *testing.B, m *ebpf.Map) uint64 {
	info, err := m.Info()
	if err != nil {
		b.Fatal(err)
	}
	bytes, ok := info.Memlock()
	if !ok {
		b.Fatal("kernel does not report map memory")
	}
	return bytes
}
