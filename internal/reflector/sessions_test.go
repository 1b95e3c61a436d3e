// SPDX-License-Identifier: Apache-2.0

package reflector

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/bgp"
	"github.com/maglb/maglb/internal/config"
)

func TestSessions(t *testing.T) {
	rr := announce.Node{Name: "rr-a", Labels: map[string]string{"maglb.io/reflector": ""}, Addrs: []netip.Addr{addr("10.0.0.101"), addr("fd00::101")}}
	nodes := []announce.Node{
		{Name: "lb1", Labels: map[string]string{"role": "lb"}, Addrs: []netip.Addr{addr("10.0.0.1"), addr("fd00::1")}},
		{Name: "lb2", Labels: map[string]string{"role": "lb"}, Addrs: []netip.Addr{addr("10.0.0.2")}},
		{Name: "other", Labels: map[string]string{}, Addrs: []netip.Addr{addr("10.0.0.50")}},
		rr,
		{Name: "rr-b", Labels: map[string]string{"maglb.io/reflector": ""}, Addrs: []netip.Addr{addr("10.0.0.102")}},
	}
	peer := func(name, address string, asn uint32, selector map[string]string) metallbv1beta2.BGPPeer {
		p := metallbv1beta2.BGPPeer{ObjectMeta: meta(name), Spec: metallbv1beta2.BGPPeerSpec{MyASN: 64512, ASN: asn, Address: address,
			HoldTime: &metav1.Duration{Duration: 9 * time.Second}}}
		if selector != nil {
			p.Spec.NodeSelectors = []metav1.LabelSelector{{MatchLabels: selector}}
		}
		return p
	}
	lbs := map[string]string{"role": "lb"}
	reflectors := map[string]string{"maglb.io/reflector": ""}
	for _, tc := range []struct {
		name         string
		peers        []metallbv1beta2.BGPPeer
		wantUpstream []string
		wantClients  bgp.Clients
	}{{
		name: "the ToR peers select the reflectors; the LB nodes' peers addressed to this one name its clients, both families",
		peers: []metallbv1beta2.BGPPeer{
			peer("tor", "10.0.0.254", 64500, reflectors), peer("tor-v6", "fd00::fe", 64500, reflectors),
			peer("rr-a", "10.0.0.101", 64512, lbs), peer("rr-a-v6", "fd00::101", 64512, lbs),
			peer("rr-b", "10.0.0.102", 64512, lbs),
		},
		wantUpstream: []string{"tor", "tor-v6"},
		wantClients: bgp.Clients{ASN: 64512, HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second,
			Addrs: []netip.Addr{addr("10.0.0.1"), addr("10.0.0.2"), addr("fd00::1")}},
	}, {
		name: "a peer to this reflector selecting every node: every node but its own",
		peers: []metallbv1beta2.BGPPeer{
			peer("tor", "10.0.0.254", 64500, reflectors), peer("rr-a", "10.0.0.101", 64512, nil),
		},
		wantUpstream: []string{"tor"},
		wantClients: bgp.Clients{ASN: 64512, HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, Addrs: []netip.Addr{
			addr("10.0.0.1"), addr("10.0.0.2"), addr("10.0.0.50"), addr("10.0.0.102"), addr("fd00::1"),
		}},
	}, {
		name:         "no peer addressed to this reflector: no clients",
		peers:        []metallbv1beta2.BGPPeer{peer("tor", "10.0.0.254", 64500, reflectors), peer("rr-b", "10.0.0.102", 64512, lbs)},
		wantUpstream: []string{"tor"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.For(config.ClusterResources{Peers: tc.peers}, config.DontValidate)
			if err != nil {
				t.Fatal(err)
			}
			upstream, clients := Sessions(cfg, nodes, rr)
			var names []string
			for _, p := range upstream {
				names = append(names, p.Name)
			}
			if diff := cmp.Diff(tc.wantUpstream, names); diff != "" {
				t.Errorf("upstream peers (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantClients, clients, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("clients (-want +got):\n%s", diff)
			}
		})
	}
}
