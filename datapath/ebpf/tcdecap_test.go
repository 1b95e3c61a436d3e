// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

// TCX verdicts as BPF_PROG_RUN returns them.
const (
	tcxNext = 0xffffffff // -1
	tcxDrop = 2
)

// TestTCXDecapFixtures runs the XDP decapsulation fixtures through the TCX program: the same
// frames are opened, rejected or left alone, and the maps and counters are the same.
func TestTCXDecapFixtures(t *testing.T) {
	env := newFixtureEnv(t)
	d := newTestDecap(t, env, []netip.Prefix{env.opts.TunnelSource4, env.opts.TunnelSource6}, backend2, backendV2)
	var rejected, opened uint64
	for _, f := range decapFixtures(env.opts, env.lb0) {
		want, verdict := f.out, uint32(tcxNext)
		switch {
		case f.verdict == xdpDrop:
			verdict = tcxDrop
			rejected++
		case strings.Contains(f.name, "802.1Q"):
			// At TC ingress the stack has already untagged the frame; one still tagged is
			// left alone.
			want = nil
		case want != nil:
			opened++
		}
		if want == nil {
			want = f.in
		}
		t.Run(f.name, func(t *testing.T) {
			got, out := env.runWith(t, d.objs.TcDecap, f.in, nil)
			if got != verdict {
				t.Errorf("verdict %d, want %d", int32(got), int32(verdict))
			}
			if verdict != tcxDrop && !bytes.Equal(out, want) {
				t.Errorf("output differs\n got: %s\nwant: %s", hex.EncodeToString(out), hex.EncodeToString(want))
			}
		})
	}
	c, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if c.Rejected != rejected || c.IPIP+c.GUE != opened || c.GUE == 0 || c.IPIP == 0 {
		t.Errorf("counters %+v, want %d rejected and %d opened (IPIP and GUE)", c, rejected, opened)
	}

	// Inner and outer families differ: the link layer takes the inner family's type. Both
	// programs count in the same map.
	syn, synV6 := frame4(vipTCP80, syn80, nil)[14:], frame6(vip6, syn443, nil)[14:]
	outer6 := ipv6(ipv6Header{src: env.opts.TunnelSource6.Addr(), dst: backendV2, next: protoIPIP, hopLimit: 64}, syn)
	outer4 := ipv4Header{src: env.opts.TunnelSource4.Addr(), dst: backend2, proto: protoIPv6, ttl: 64}.bytes(len(synV6))
	crossed := []struct {
		name    string
		in, out []byte
	}{
		{"4in6", concat(ethernet(backend2MAC, lb0MAC, etherIPv6, -1), outer6), concat(ethernet(backend2MAC, lb0MAC, etherIPv4, -1), syn)},
		{"6in4", concat(ethernet(backend2MAC, lb0MAC, etherIPv4, -1), outer4, synV6), concat(ethernet(backend2MAC, lb0MAC, etherIPv6, -1), synV6)},
	}
	for _, f := range crossed {
		t.Run("XDP decap IPIP "+f.name, func(t *testing.T) {
			if verdict, out := env.run(t, d.objs.XdpDecap, f.in, env.lb0); verdict != xdpPass || !bytes.Equal(out, f.out) {
				t.Errorf("verdict %s, output\n got: %s\nwant: %s", verdictNames[verdict], hex.EncodeToString(out), hex.EncodeToString(f.out))
			}
		})
		t.Run("TCX decap IPIP "+f.name, func(t *testing.T) {
			if verdict, out := env.runWith(t, d.objs.TcDecap, f.in, nil); verdict != tcxNext || !bytes.Equal(out, f.out) {
				t.Errorf("verdict %d, output\n got: %s\nwant: %s", int32(verdict), hex.EncodeToString(out), hex.EncodeToString(f.out))
			}
		})
	}
	after, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if want := c.IPIP + 2*uint64(len(crossed)); after.IPIP != want {
		t.Errorf("IPIP counter %d after the family changes, want %d", after.IPIP, want)
	}
}

func TestResolveHook(t *testing.T) {
	for _, tc := range []struct {
		hook     DecapHook
		attached string
		want     DecapHook
	}{
		{DecapAuto, "", DecapXDP},
		{DecapAuto, decapXDPName, DecapXDP}, // its own, from before a restart
		{DecapAuto, "xdp_balance", DecapTCX},
		{DecapXDP, "xdp_balance", DecapXDP},
		{DecapTCX, "", DecapTCX},
	} {
		if got := resolveHook(tc.hook, tc.attached); got != tc.want {
			t.Errorf("resolveHook(%s, %q) = %s, want %s", tc.hook, tc.attached, got, tc.want)
		}
	}
}
