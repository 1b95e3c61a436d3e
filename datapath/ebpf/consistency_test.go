// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
)

// backendRange returns n backend addresses 10.0.1.1.. on lb0's link, each a permanent
// neighbour of env.
func backendRange(t testing.TB, env *lbEnv, n int) []datapath.Backend {
	t.Helper()
	env.ns.Run(t, "ip", "addr", "replace", "10.0.0.1/16", "dev", "lb0")
	backends := make([]datapath.Backend, n)
	for i := range backends {
		addr := netip.AddrFrom4([4]byte{10, 0, 1, byte(1 + i)})
		env.ns.Run(t, "ip", "neigh", "replace", addr.String(), "lladdr", neighbourMAC(addr).String(), "dev", "lb0", "nud", "permanent")
		backends[i] = datapath.Backend{Addr: addr, Weight: 1}
	}
	return backends
}

func neighbourMAC(addr netip.Addr) mac {
	b := addr.As4()
	return mac{0x02, 0, b[0], b[1], b[2], b[3]}
}

// randomFlows returns n TCP frames to vip:80 from random clients; syn selects SYN or ACK.
func randomFlows(seed uint64, n int, vip netip.Addr, syn bool) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed))
	flags := uint8(tcpACK)
	if syn {
		flags = tcpSYN
	}
	frames := make([][]byte, n)
	for i := range frames {
		src := netip.AddrFrom4([4]byte{198, 18, byte(r.IntN(256)), byte(r.IntN(256))})
		h := ipv4Header{src: src, dst: vip, proto: protoTCP, ttl: 64}
		frames[i] = concat(ethernet(lb0MAC, clientMAC, etherIPv4, -1), ipv4(h, tcp(uint16(1024+r.IntN(64000)), 80, flags, nil)))
	}
	return frames
}

// chosenBackends runs every frame through the program and returns the outer destination of
// each forwarded one.
func chosenBackends(t testing.TB, env *lbEnv, prog *ebpf.Program, frames [][]byte) []netip.Addr {
	t.Helper()
	chosen := make([]netip.Addr, len(frames))
	out := make([]byte, 2048)
	err := env.ns.Do(func() error {
		for i, frame := range frames {
			opts := &ebpf.RunOptions{Data: frame, DataOut: out, Context: xdpContext{DataEnd: uint32(len(frame)), IngressIfindex: uint32(env.lb0)}}
			verdict, err := prog.Run(opts)
			if err != nil {
				return err
			}
			if verdict != xdpTX {
				return fmt.Errorf("flow %d: verdict %s", i, verdictNames[verdict])
			}
			chosen[i] = netip.AddrFrom4([4]byte(opts.DataOut[14+16 : 14+20]))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return chosen
}

// modelBackends returns the backend the Maglev table built in Go assigns to each new flow.
func modelBackends(t testing.TB, opts Options, backends []datapath.Backend, frames [][]byte) []netip.Addr {
	t.Helper()
	table, err := opts.Maglev.Build(mergeBackends(backends))
	if err != nil {
		t.Fatal(err)
	}
	chosen := make([]netip.Addr, len(frames))
	for i, frame := range frames {
		info, _ := readFrame(frame)
		hash := modelFlowHash(opts.FlowHashSeed, info.flowKeyBytes())
		chosen[i] = backendAddr(table.Backends[table.Entries[hash%uint32(len(table.Entries))]])
	}
	return chosen
}

func TestConsistencyAcrossNodes(t *testing.T) {
	vip := netip.MustParseAddr("10.10.1.1")
	nodeA := newLBEnv(t, Options{})
	nodeB := newLBEnv(t, Options{})
	backends := backendRange(t, nodeA, 10)
	backendRange(t, nodeB, 12)

	nodeA.sync(t, []datapath.Service{{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: backends}})
	// Node B first serves something else, so its ids differ, then gets the backends in
	// another order.
	nodeB.sync(t, []datapath.Service{{VIP: netip.MustParseAddr("10.10.1.2"), Protocol: datapath.UDP, Port: 53, Backends: backendRange(t, nodeB, 12)[9:]}})
	shuffled := slices.Clone(backends)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	nodeB.sync(t, []datapath.Service{{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: shuffled}})

	frames := randomFlows(1, 100_000, vip, true)
	a := chosenBackends(t, nodeA, nodeA.dp.objs.XdpBalance, frames)
	b := chosenBackends(t, nodeB, nodeB.dp.objs.XdpBalance, frames)
	model := modelBackends(t, nodeA.opts, backends, frames)
	used := map[netip.Addr]int{}
	for i := range frames {
		if a[i] != b[i] || a[i] != model[i] {
			t.Fatalf("flow %d: node A chose %s, node B %s, the Go table %s", i, a[i], b[i], model[i])
		}
		used[a[i]]++
	}
	if len(used) != len(backends) {
		t.Fatalf("flows reached %d of %d backends", len(used), len(backends))
	}
	for addr, n := range used {
		if n < 9000 || n > 11000 {
			t.Errorf("backend %s got %d of 100000 flows", addr, n)
		}
	}
}

func TestStickiness(t *testing.T) {
	vip := netip.MustParseAddr("10.10.1.1")
	env := newLBEnv(t, Options{})
	all := backendRange(t, env, 5)
	service := func(backends []datapath.Backend) []datapath.Service {
		return []datapath.Service{{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: backends}}
	}
	prog := env.dp.objs.XdpBalance

	env.sync(t, service(all[:4]))
	established := randomFlows(10, 3000, vip, true)
	before := chosenBackends(t, env, prog, established)

	env.sync(t, service(all))
	continuing := randomFlows(10, 3000, vip, false) // the same flows, past their SYN
	after := chosenBackends(t, env, prog, continuing)
	wouldMove := 0
	newTable := modelBackends(t, env.opts, all, established)
	for i := range established {
		if after[i] != before[i] {
			t.Fatalf("flow %d moved from %s to %s after a backend was added", i, before[i], after[i])
		}
		if newTable[i] != before[i] {
			wouldMove++
		}
	}
	if wouldMove == 0 {
		t.Fatal("the new table moves no flow: the test proves nothing")
	}
	t.Logf("%d of %d established flows stayed although the new table moves them", wouldMove, len(established))
	if s := env.stats(t); s.Global.LRUMisses != 0 {
		t.Errorf("%d connection-table misses for established flows", s.Global.LRUMisses)
	}

	fresh := randomFlows(11, 3000, vip, true)
	got := chosenBackends(t, env, prog, fresh)
	want := modelBackends(t, env.opts, all, fresh)
	if !slices.Equal(got, want) {
		t.Fatal("new flows do not follow the new table")
	}
	if !slices.Contains(got, all[4].Addr) {
		t.Fatal("no new flow reached the added backend")
	}

	// Removing a backend moves its flows only.
	removed := before[0]
	remaining := slices.DeleteFunc(slices.Clone(all), func(b datapath.Backend) bool { return b.Addr == removed })
	env.sync(t, service(remaining))
	final := chosenBackends(t, env, prog, continuing)
	for i := range continuing {
		switch {
		case before[i] == removed && final[i] == removed:
			t.Fatalf("flow %d still goes to the removed backend", i)
		case before[i] != removed && final[i] != before[i]:
			t.Fatalf("flow %d moved from %s to %s although its backend stayed", i, before[i], final[i])
		}
	}
}

// TestWeightsInDatapath checks that the kernel's ring follows the weights.
func TestWeightsInDatapath(t *testing.T) {
	vip := netip.MustParseAddr("10.10.1.1")
	env := newLBEnv(t, Options{})
	backends := backendRange(t, env, 3)
	backends[0].Weight, backends[1].Weight, backends[2].Weight = 1, 2, 5
	env.sync(t, []datapath.Service{{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: backends}})
	frames := randomFlows(20, 16000, vip, true)
	counts := map[netip.Addr]int{}
	for _, addr := range chosenBackends(t, env, env.dp.objs.XdpBalance, frames) {
		counts[addr]++
	}
	for _, b := range backends {
		share := float64(counts[b.Addr]) / float64(len(frames))
		if want := float64(b.Weight) / 8; share < want*0.9 || share > want*1.1 {
			t.Errorf("backend %s (weight %d) got %.3f of the flows, want %.3f", b.Addr, b.Weight, share, want)
		}
	}
}

func TestUnusedBackendIDsAreReused(t *testing.T) {
	env := newLBEnv(t, Options{})
	backends := backendRange(t, env, 3)
	vip := netip.MustParseAddr("10.10.1.1")
	env.sync(t, []datapath.Service{{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: backends[:2]}})
	first := env.backendEntry(t, backends[1].Addr)
	env.sync(t, []datapath.Service{{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: backends[:1]}})
	if _, ok := env.dp.backends[backends[1].Addr]; ok {
		t.Fatal("removed backend still programmed")
	}
	var freed bpf.LBBackend
	if err := env.dp.objs.Backends.Lookup(uint32(1), &freed); err != nil || freed.Generation != 0 {
		t.Fatalf("freed id 1 holds %+v (%v), want generation 0", freed, err)
	}
	env.sync(t, []datapath.Service{{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: []datapath.Backend{backends[0], backends[2]}}})
	reused := env.backendEntry(t, backends[2].Addr)
	if env.dp.backends[backends[2].Addr].id != 1 || reused.Generation == first.Generation {
		t.Fatalf("new backend got id %d generation %d; want the freed id 1 with a new generation (old %d)",
			env.dp.backends[backends[2].Addr].id, reused.Generation, first.Generation)
	}
}
