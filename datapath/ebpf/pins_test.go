// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"bytes"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/datapath/internal/netnstest"
)

// TestRemovedPinsRestoredAndAdopted: the pin directory removed under a running datapath
// (rm -rf, say by someone cleaning up bpffs) is pinned again, so that a restart still adopts
// the maps and the attached program, and established flows keep their backends.
func TestRemovedPinsRestoredAndAdopted(t *testing.T) {
	env := newLBEnv(t, Options{Interface: "lb0", XDPMode: XDPGeneric, KeepOnClose: true})
	backends := backendRange(t, env, 4)
	vip := netip.MustParseAddr("10.10.2.1")
	services := []datapath.Service{{VIP: vip, Protocol: datapath.TCP, Port: 80, Backends: backends}}
	env.sync(t, services)
	before := chosenBackends(t, env, env.dp.objs.XdpBalance, randomFlows(31, 300, vip, true))
	programmed := maps.Clone(env.dp.vips)
	wantPins := slices.Sorted(maps.Keys(env.dp.pinned()))
	if len(wantPins) != 8 {
		t.Fatalf("pinned objects %v, want the 7 maps and the link", wantPins)
	}

	if err := os.RemoveAll(env.opts.PinPath); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	guard := NewPinGuard(env.dp.RestorePins, log.NewLogfmtLogger(&logged))
	guard.Check()
	if got := testutil.ToFloat64(guard.restored); got != 8 {
		t.Fatalf("maglb_datapath_pins_restored_total = %v after removing the pin directory, want 8", got)
	}
	if !strings.Contains(logged.String(), "level=error") || !strings.Contains(logged.String(), "pinned again") {
		t.Fatalf("the restore was not logged as an error: %q", logged.String())
	}
	for _, path := range wantPins {
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s not pinned again: %v", path, err)
		}
	}
	if restored, err := env.dp.RestorePins(); err != nil || len(restored) != 0 {
		t.Fatalf("a second check restored %v (%v), want nothing", restored, err)
	}

	if err := env.dp.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(env.ns.Run(t, "ip", "link", "show", "lb0"), "xdpgeneric") {
		t.Fatal("the program was detached when the process with restored pins exited")
	}
	restarted := *env
	if err := env.ns.Do(func() (err error) { restarted.dp, err = New(env.opts); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restarted.dp.opts.KeepOnClose = false; _ = restarted.dp.Close() })
	if !maps.Equal(restarted.dp.vips, programmed) {
		t.Fatalf("the restart adopted %d VIP entries, want the %d programmed", len(restarted.dp.vips), len(programmed))
	}
	after := chosenBackends(t, &restarted, restarted.dp.objs.XdpBalance, randomFlows(31, 300, vip, false))
	for i := range before {
		if before[i] != after[i] {
			t.Fatalf("flow %d moved from %s to %s across the restart", i, before[i], after[i])
		}
	}
}

// TestPinTakenOverIsReported: a pin file that another object now holds is not overwritten;
// the guard reports it (gauge, one error log) until it is resolved.
func TestPinTakenOverIsReported(t *testing.T) {
	env := newLBEnv(t, Options{})
	vips := filepath.Join(env.opts.PinPath, bpf.LBMapVips)
	if err := os.Remove(vips); err != nil {
		t.Fatal(err)
	}
	other, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Pin(vips); err != nil {
		t.Fatal(err)
	}

	var logged bytes.Buffer
	guard := NewPinGuard(env.dp.RestorePins, log.NewLogfmtLogger(&logged))
	guard.Check()
	guard.Check()
	if got := testutil.ToFloat64(guard.lost); got != 1 {
		t.Fatalf("maglb_datapath_pins_unrestorable = %v with the vips pin taken over, want 1", got)
	}
	if n := strings.Count(logged.String(), "cannot restore"); n != 1 || !strings.Contains(logged.String(), vips) {
		t.Fatalf("want one error naming %s, logged: %q", vips, logged.String())
	}
	if loaded, err := ebpf.LoadPinnedMap(vips, nil); err != nil {
		t.Fatal(err)
	} else {
		info, _ := loaded.Info()
		if info.Type != ebpf.Array {
			t.Fatalf("the other object's pin was replaced by a %v", info.Type)
		}
		_ = loaded.Close()
	}

	if err := other.Unpin(); err != nil {
		t.Fatal(err)
	}
	guard.Check()
	if got := testutil.ToFloat64(guard.lost); got != 0 {
		t.Fatalf("maglb_datapath_pins_unrestorable = %v once the pin is free and restored, want 0", got)
	}
}

// TestDecapPinsRestored: the decapsulation program's pinned link and maps, removed under a
// running agent, are pinned again, and a restart adopts the link still attached.
func TestDecapPinsRestored(t *testing.T) {
	ns := netnstest.New(t, "decap-pins")
	ns.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
	ns.Run(t, "ip", "link", "set", "eth0", "up")
	opts := DecapOptions{Interfaces: []string{"eth0"}, Hook: DecapXDP, XDPMode: XDPGeneric, PinPath: testPinPath(t), KeepOnClose: true}
	var d *Decap
	if err := ns.Do(func() (err error) { d, err = NewDecap(opts); return err }); err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(maps.Keys(d.pinned()))
	if err := os.RemoveAll(opts.PinPath); err != nil {
		t.Fatal(err)
	}
	restored, err := d.RestorePins()
	if err != nil || !slices.Equal(restored, want) {
		t.Fatalf("restored %v (%v), want %v", restored, err, want)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ns.Run(t, "ip", "link", "show", "eth0"), "xdpgeneric") {
		t.Fatal("the decapsulation program was detached when the process with restored pins exited")
	}
	opts.KeepOnClose = false
	if err := ns.Do(func() (err error) { d, err = NewDecap(opts); return err }); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ns.Run(t, "ip", "link", "show", "eth0"), "xdp") {
		t.Fatal("the restarted agent did not adopt the restored link: closing it left a program attached")
	}
}
