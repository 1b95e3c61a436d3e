// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v4/api"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/maglb/maglb/internal/config"
)

func TestBFDOfPeers(t *testing.T) {
	fast := &config.BFDProfile{Name: "fast", ReceiveInterval: 50, TransmitInterval: 60, DetectMultiplier: 5, EchoInterval: 50, MinimumTTL: 254}
	defaults := &config.BFDProfile{Name: "defaults", ReceiveInterval: 300, TransmitInterval: 300, DetectMultiplier: 3, EchoInterval: 50, MinimumTTL: 254}
	echo, passive := *fast, *fast
	echo.EchoMode, passive.PassiveMode = true, true
	for _, tc := range []struct {
		name    string
		peer    func(*config.Peer)
		bfd     *api.BfdPeerConfig
		ignored []string
	}{
		{name: "no profile", peer: func(*config.Peer) {}},
		{
			name: "intervals and multiplier",
			peer: func(p *config.Peer) { p.BFD = fast },
			bfd:  &api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: 60000, RequiredMinimumReceive: 50000, DetectionMultiplier: 5},
		},
		{
			name: "upstream's defaults",
			peer: func(p *config.Peer) { p.BFD = defaults },
			bfd:  &api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: 300000, RequiredMinimumReceive: 300000, DetectionMultiplier: 3},
		},
		{
			name:    "echo mode",
			peer:    func(p *config.Peer) { p.BFD = &echo },
			bfd:     &api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: 60000, RequiredMinimumReceive: 50000, DetectionMultiplier: 5},
			ignored: []string{"peer 192.0.2.1 has bfd-profile fast with echo-mode set on native bgp mode, ignored"},
		},
		{
			name:    "passive mode",
			peer:    func(p *config.Peer) { p.BFD = &passive },
			bfd:     &api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: 60000, RequiredMinimumReceive: 50000, DetectionMultiplier: 5},
			ignored: []string{"peer 192.0.2.1 has bfd-profile fast with passive-mode set on native bgp mode, ignored"},
		},
		{
			name:    "multi-hop session",
			peer:    func(p *config.Peer) { p.BFD, p.EBGPMultiHop = &echo, true },
			ignored: []string{"peer 192.0.2.1 has bfd-profile fast set with ebgp-multihop on native bgp mode, which has single-hop bfd only: bfd is off for this peer"},
		},
		{
			name:    "hold time 0",
			peer:    func(p *config.Peer) { p.HoldTime, p.KeepaliveTime = 0, 0 },
			ignored: []string{"peer 192.0.2.1 has holdTime 0 set on native bgp mode, GoBGP cannot send it: the hold time is 90s"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := config.Peer{Name: "p", MyASN: 64512, ASN: 64513, Addr: netip.MustParseAddr("192.0.2.1"), HoldTime: 90 * time.Second, KeepaliveTime: 30 * time.Second}
			tc.peer(&p)
			sess, err := newSession(log.NewNopLogger(), p)
			if err != nil {
				t.Fatal(err)
			}
			if sess.peer.Bfd != nil {
				t.Errorf("the peer starts with BFD %v, before its session is established", sess.peer.Bfd)
			}
			if diff := cmp.Diff(tc.bfd, sess.bfd, protocmp.Transform()); diff != "" {
				t.Errorf("GoBGP's BFD configuration (-want +got):\n%s", diff)
			}
			got := Ignored(&config.Config{Peers: map[string]*config.Peer{"p": &p}})
			if diff := cmp.Diff(tc.ignored, got); diff != "" {
				t.Errorf("Ignored (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOnlyBFDChangesKeepTheSession(t *testing.T) {
	base := config.Peer{Name: "p", MyASN: 64512, ASN: 64513, Addr: netip.MustParseAddr("192.0.2.1"), HoldTime: 90 * time.Second}
	withBFD, otherBFD, otherHold := base, base, base
	withBFD.BFD = &config.BFDProfile{Name: "a", ReceiveInterval: 300, TransmitInterval: 300, DetectMultiplier: 3}
	otherBFD.BFD = &config.BFDProfile{Name: "a", ReceiveInterval: 100, TransmitInterval: 300, DetectMultiplier: 3}
	otherHold.BFD, otherHold.HoldTime = withBFD.BFD, 30*time.Second
	sessionOf := func(p config.Peer) session {
		s, err := newSession(log.NewNopLogger(), p)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name string
		a, b config.Peer
		want bool
	}{
		{"BFD added", base, withBFD, true},
		{"BFD removed", withBFD, base, true},
		{"intervals changed", withBFD, otherBFD, true},
		{"hold time changed too", otherBFD, otherHold, false},
	} {
		if got := sameSession(sessionOf(tc.a), sessionOf(tc.b)); got != tc.want {
			t.Errorf("%s: sameSession is %v, want %v", tc.name, got, tc.want)
		}
	}
}
