// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// FuzzBalance runs arbitrary frames through the load balancer: it must never abort, and a
// frame whose destination is not a VIP must pass unchanged.
func FuzzBalance(f *testing.F) {
	env := newFixtureEnv(f)
	vips := map[netip.Addr]bool{}
	for _, s := range fixtureServices {
		vips[s.VIP] = true
	}
	for _, fx := range lbFixtures(env.opts, env.lb0, env.lb1) {
		f.Add(fx.in)
	}
	prog := env.dp.objs.XdpBalance
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 || len(frame) > 1514 {
			return // BPF_PROG_RUN takes Ethernet frames only
		}
		verdict, out := env.run(t, prog, frame, env.lb0)
		if verdict == xdpAborted || verdict > xdpRedirect {
			t.Fatalf("verdict %d", verdict)
		}
		if dst, ok := destination(frame); !ok || !vips[dst] {
			if verdict != xdpPass || !bytes.Equal(out, frame) {
				t.Fatalf("non-VIP frame: verdict %s, changed %v", verdictNames[verdict], !bytes.Equal(out, frame))
			}
		}
	})
}

// destination reads the IP destination where the program looks for it, whatever the rest of
// the frame holds.
func destination(frame []byte) (netip.Addr, bool) {
	l3 := 14
	etherType := binary.BigEndian.Uint16(frame[12:])
	if etherType == ether8021Q || etherType == ether8021AD {
		if len(frame) < 18 {
			return netip.Addr{}, false
		}
		l3 = 18
		etherType = binary.BigEndian.Uint16(frame[16:])
	}
	switch {
	case etherType == etherIPv4 && len(frame) >= l3+20:
		return netip.AddrFrom4([4]byte(frame[l3+16 : l3+20])), true
	case etherType == etherIPv6 && len(frame) >= l3+40:
		return netip.AddrFrom16([16]byte(frame[l3+24 : l3+40])), true
	}
	return netip.Addr{}, false
}
