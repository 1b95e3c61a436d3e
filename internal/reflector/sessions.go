// SPDX-License-Identifier: Apache-2.0

package reflector

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/bgp"
	"github.com/maglb/maglb/internal/config"
)

// Sessions returns the reflector's sessions, from upstream's kinds alone:
//   - its upstream peers (the ToRs): the BGPPeers whose node selectors select its node,
//     except those whose address is one of its node's (the LB nodes' sessions with it);
//   - its clients: the nodes, other than its own, that the BGPPeers addressed to it
//     select, each known by its InternalIPs; in the ASN of the first of those peers by
//     name (an iBGP session has one), with its timers, password and BFD profile.
func Sessions(cfg *config.Config, nodes []announce.Node, self announce.Node) ([]config.Peer, bgp.Clients) {
	toMe := func(p config.Peer) bool { return slices.Contains(self.Addrs, p.Addr.Unmap()) }
	upstream := slices.DeleteFunc(announce.PeersOf(cfg, self.Labels), toMe)
	var clients bgp.Clients
	for _, name := range slices.Sorted(maps.Keys(cfg.Peers)) {
		if p := cfg.Peers[name]; toMe(*p) {
			clients = bgp.Clients{ASN: p.MyASN, HoldTime: p.HoldTime, KeepaliveTime: p.KeepaliveTime, Password: p.Password, BFD: p.BFD}
			break
		}
	}
	for _, n := range nodes {
		if n.Name == self.Name || !slices.ContainsFunc(announce.PeersOf(cfg, n.Labels), toMe) {
			continue
		}
		clients.Addrs = append(clients.Addrs, n.Addrs...)
	}
	slices.SortFunc(clients.Addrs, netip.Addr.Compare)
	return upstream, clients
}
