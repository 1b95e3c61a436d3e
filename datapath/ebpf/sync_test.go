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

// TestSyncReportsFailedServices: a service that cannot be programmed (invalid, listed twice,
// or past MaxServices) is reported alone; every other one is programmed.
func TestSyncReportsFailedServices(t *testing.T) {
	env := newLBEnv(t, Options{MaxServices: 4})
	backends := backendRange(t, env, 1)
	service := func(vip string, port uint16) datapath.Service {
		return datapath.Service{VIP: netip.MustParseAddr(vip), Protocol: datapath.TCP, Port: port, Backends: backends}
	}
	mixed := service("fd10::1", 80)
	twice := service("10.10.1.9", 80)
	var want []datapath.Service
	for i := range 6 {
		want = append(want, service("10.10.1.1", uint16(80+i)))
	}
	want = append(want, mixed, twice, twice)
	err := env.ns.Do(func() error { return env.dp.Sync(t.Context(), want) })
	var syncErr *datapath.SyncError
	if !errors.As(err, &syncErr) {
		t.Fatalf("Sync error %v, want a *datapath.SyncError", err)
	}
	wantFailed := map[datapath.ServiceKey]string{
		mixed.Key():   "not a plain address",
		twice.Key():   "listed twice",
		want[4].Key(): "all 4 service ids are in use",
		want[5].Key(): "all 4 service ids are in use",
	}
	if len(syncErr.Services) != len(wantFailed) {
		t.Errorf("failed %v, want %d services", syncErr.Services, len(wantFailed))
	}
	for key, reason := range wantFailed {
		if err := syncErr.Services[key]; err == nil || !strings.Contains(err.Error(), reason) {
			t.Errorf("%s: error %v, want %q", key, err, reason)
		}
	}
	for _, s := range want[:4] {
		env.meta(t, s.Key()) // fails the test when the service is not in the VIPs map
	}
	if env.dp.serviceIDs.inUse != 4 {
		t.Errorf("%d service ids in use, want 4", env.dp.serviceIDs.inUse)
	}

	// Removals come last, so the id of a removed service is free from the next Sync on: then
	// the refused service gets it, and nothing is left of the removed one.
	next := append(want[1:5:5], twice)
	for range 2 {
		err = env.ns.Do(func() error { return env.dp.Sync(t.Context(), next) })
	}
	if !errors.As(err, &syncErr) || len(syncErr.Services) != 1 || syncErr.Services[twice.Key()] == nil {
		t.Fatalf("third Sync: %v, want only %s refused, for want of an id", err, twice.Key())
	}
	for _, s := range want[1:5] {
		env.meta(t, s.Key())
	}
	if _, ok := env.dp.vips[vipKey(want[0].Key())]; ok {
		t.Error("the removed service is still programmed")
	}
	stats, err := env.dp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if stats.ServiceIDs != 4 || stats.ServiceIDCapacity != 4 {
		t.Errorf("stats say %d of %d service ids in use, want 4 of 4", stats.ServiceIDs, stats.ServiceIDCapacity)
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

// TestNewRecreatesMapsOfAnotherSize: a restart with another MaxServices recreates the pinned
// maps instead of failing, and the new capacity holds.
func TestNewRecreatesMapsOfAnotherSize(t *testing.T) {
	env := newLBEnv(t, Options{MaxServices: 2, KeepOnClose: true})
	backends := backendRange(t, env, 1)
	var services []datapath.Service
	for i := range 4 {
		services = append(services, datapath.Service{VIP: netip.MustParseAddr("10.10.1.1"), Protocol: datapath.UDP, Port: uint16(53 + i), Backends: backends})
	}
	env.sync(t, services[:2])
	if err := env.dp.Close(); err != nil {
		t.Fatal(err)
	}
	opts := env.opts
	opts.MaxServices, opts.KeepOnClose = 4, false
	if err := env.ns.Do(func() (err error) { env.dp, err = New(opts); return err }); err != nil {
		t.Fatalf("New with another MaxServices: %v", err)
	}
	env.sync(t, services)
	stats, err := env.dp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if stats.ServiceIDs != 4 || stats.ServiceIDCapacity != 4 {
		t.Errorf("%d of %d service ids in use, want 4 of 4", stats.ServiceIDs, stats.ServiceIDCapacity)
	}
}
