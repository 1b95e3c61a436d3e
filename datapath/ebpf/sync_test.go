// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"errors"
	"maps"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/datapath/maglev"
)

func (e *lbEnv) meta(t testing.TB, key datapath.ServiceKey) bpf.LBVipMeta {
	t.Helper()
	var meta bpf.LBVipMeta
	if err := e.dp.objs.Vips.Lookup(vipKey(key), &meta); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return meta
}

// ringInstalled reports whether slot holds a ring rather than nothing or the empty placeholder.
func (e *lbEnv) ringInstalled(slot uint32) bool {
	var id ebpf.MapID
	if e.dp.objs.Rings.Lookup(slot, &id) != nil {
		return false
	}
	info, err := e.dp.emptyRing.Info()
	if err != nil {
		panic(err)
	}
	empty, _ := info.ID()
	return id != empty
}

func TestSyncDoubleBuffersRings(t *testing.T) {
	env := newLBEnv(t, Options{})
	backends := backendRange(t, env, 3)
	key := datapath.ServiceKey{VIP: netip.MustParseAddr("10.10.1.1"), Protocol: datapath.TCP, Port: 80}
	service := func(b []datapath.Backend, encap datapath.Encap) []datapath.Service {
		return []datapath.Service{{VIP: key.VIP, Protocol: key.Protocol, Port: key.Port, Backends: b, Encap: encap}}
	}

	env.sync(t, service(backends[:2], datapath.EncapIPIP))
	first := env.meta(t, key)
	if first.RingSize != maglev.BaseSize || !env.ringInstalled(first.Ring) || env.ringInstalled(first.Ring^1) {
		t.Fatalf("first ring: meta %+v, active installed %v, spare installed %v", first, env.ringInstalled(first.Ring), env.ringInstalled(first.Ring^1))
	}

	env.sync(t, service(backends[:2], datapath.EncapIPIP))
	if again := env.meta(t, key); again != first {
		t.Fatalf("an unchanged Sync rewrote the service: %+v, was %+v", again, first)
	}

	env.sync(t, service(backends, datapath.EncapIPIP))
	second := env.meta(t, key)
	if second.Ring != first.Ring^1 || second.Id != first.Id || second.Digest == first.Digest {
		t.Fatalf("a backend change must fill the spare ring and flip: %+v, was %+v", second, first)
	}
	if !env.ringInstalled(second.Ring) || env.ringInstalled(first.Ring) {
		t.Fatal("after the flip the old ring must be gone and the new one installed")
	}

	env.sync(t, service(backends, datapath.EncapGUE))
	third := env.meta(t, key)
	if third.Ring != second.Ring || third.Flags != bpf.LBVipFlagsVIP_GUE {
		t.Fatalf("an encapsulation change must keep the ring and change the flags: %+v", third)
	}

	env.sync(t, service(nil, datapath.EncapGUE))
	if empty := env.meta(t, key); empty.RingSize != 0 || env.ringInstalled(second.Ring) {
		t.Fatalf("a service without backends keeps no ring: %+v", empty)
	}

	env.sync(t, nil)
	if err := env.dp.objs.Vips.Lookup(vipKey(key), new(bpf.LBVipMeta)); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("removed service still present: %v", err)
	}
	if len(env.dp.backends) != 0 || len(env.dp.vips) != 0 {
		t.Fatalf("state left after removing everything: %d backends, %d VIP entries", len(env.dp.backends), len(env.dp.vips))
	}
}

func TestSyncFragmentEntries(t *testing.T) {
	env := newLBEnv(t, Options{})
	backends := backendRange(t, env, 2)
	vip := netip.MustParseAddr("10.10.1.1")
	web := datapath.Service{VIP: vip, Protocol: datapath.TCP, Port: 443, Backends: backends}
	http := datapath.Service{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: backends[:1]}
	all := datapath.Service{VIP: vip, Protocol: datapath.TCP, Backends: backends[1:]}
	fragments := datapath.ServiceKey{VIP: vip, Protocol: datapath.TCP}

	env.sync(t, []datapath.Service{web, http})
	entry := env.meta(t, fragments)
	owner := env.meta(t, http.Key())
	if entry.Flags&bpf.LBVipFlagsVIP_FRAGMENTS_ONLY == 0 || entry.Ring != owner.Ring || entry.Id != owner.Id {
		t.Fatalf("fragments of %s must use the lowest port's ring: %+v, owner %+v", vip, entry, owner)
	}

	env.sync(t, []datapath.Service{web, http, all})
	if got := env.meta(t, fragments); got.Flags&bpf.LBVipFlagsVIP_FRAGMENTS_ONLY != 0 || got.Id == owner.Id {
		t.Fatalf("an all-ports service must replace the fragments entry: %+v", got)
	}

	env.sync(t, []datapath.Service{web})
	if got, webMeta := env.meta(t, fragments), env.meta(t, web.Key()); got.Ring != webMeta.Ring || got.Flags&bpf.LBVipFlagsVIP_FRAGMENTS_ONLY == 0 {
		t.Fatalf("with the all-ports service gone, fragments follow %s: %+v", web.Key(), got)
	}
	if len(env.dp.vips) != 2 {
		t.Fatalf("%d VIP entries, want the service and its fragments entry", len(env.dp.vips))
	}
	used := 0
	for _, u := range env.dp.serviceIDs.used {
		if u {
			used++
		}
	}
	if used != 1 {
		t.Fatalf("%d service ids in use, want 1", used)
	}
}

func TestSyncReportsInvalidServices(t *testing.T) {
	env := newLBEnv(t, Options{})
	backends := backendRange(t, env, 1)
	good := datapath.Service{VIP: netip.MustParseAddr("10.10.1.1"), Protocol: datapath.TCP, Port: 80, Backends: backends}
	mixed := datapath.Service{VIP: netip.MustParseAddr("fd10::1"), Protocol: datapath.TCP, Port: 80, Backends: backends}
	err := env.ns.Do(func() error { return env.dp.Sync(t.Context(), []datapath.Service{good, mixed, good}) })
	if err == nil || !strings.Contains(err.Error(), "fd10::1") || !strings.Contains(err.Error(), "listed twice") {
		t.Fatalf("Sync error %v, want the mixed-family and the duplicate service reported", err)
	}
	if _, ok := env.dp.vips[vipKey(good.Key())]; !ok {
		t.Fatal("the valid service was not programmed")
	}
}

// TestRestartAdoptsPinnedState: a process that closes with KeepOnClose leaves the program
// attached and forwarding; the next one adopts maps and link without rewriting anything.
func TestRestartAdoptsPinnedState(t *testing.T) {
	env := newLBEnv(t, Options{Interface: "lb0", XDPMode: XDPGeneric, KeepOnClose: true})
	backends := backendRange(t, env, 4)
	vip := netip.MustParseAddr("10.10.1.1")
	services := []datapath.Service{
		{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: backends},
		{VIP: vip, Protocol: datapath.UDP, Port: 53, Backends: backends[:2], Encap: datapath.EncapGUE},
	}
	env.sync(t, services)
	flows := randomFlows(30, 500, vip, true)
	before := chosenBackends(t, env, env.dp.objs.XdpBalance, flows)
	programmed := maps.Clone(env.dp.vips)

	if err := env.dp.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(env.ns.Run(t, "ip", "link", "show", "lb0"), "xdpgeneric") {
		t.Fatal("the program was detached by a Close with KeepOnClose")
	}

	restarted := *env
	if err := env.ns.Do(func() (err error) { restarted.dp, err = New(env.opts); return err }); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(restarted.dp.vips, programmed) || len(restarted.dp.backends) != len(backends) {
		t.Fatalf("adopted %d VIP entries and %d backends, want %d and %d", len(restarted.dp.vips), len(restarted.dp.backends), len(programmed), len(backends))
	}
	restarted.sync(t, services)
	if !maps.Equal(restarted.dp.vips, programmed) {
		t.Fatal("Sync after a restart rewrote unchanged services")
	}
	continuing := randomFlows(30, 500, vip, false)
	after := chosenBackends(t, &restarted, restarted.dp.objs.XdpBalance, continuing)
	for i := range before {
		if before[i] != after[i] {
			t.Fatalf("flow %d moved from %s to %s across the restart", i, before[i], after[i])
		}
	}

	restarted.dp.opts.KeepOnClose = false
	if err := restarted.dp.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(env.ns.Run(t, "ip", "link", "show", "lb0"), "xdp") {
		t.Fatal("Close without KeepOnClose left the program attached")
	}
	if _, err := os.Stat(env.opts.PinPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin path %s left behind: %v", env.opts.PinPath, err)
	}
}
