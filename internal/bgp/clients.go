// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"google.golang.org/protobuf/proto"
)

// clientGroup is the GoBGP peer group of a reflector's clients.
const clientGroup = "maglb-clients"

// Clients are the LB nodes a reflector accepts iBGP sessions from: any address inside
// Prefixes (a /32 or /128 names one node), in the reflector's own ASN. They connect; the
// reflector never does.
type Clients struct {
	ASN      uint32
	Prefixes []netip.Prefix
	// HoldTime and KeepaliveTime are offered to the clients; zero keeps GoBGP's defaults.
	HoldTime, KeepaliveTime time.Duration
	Password                string
}

// SetClients makes the speaker accept sessions from clients; their routes are recorded
// (Received), never reflected nor installed. Before the first peer starts GoBGP, they
// are kept and applied then. A change restarts the clients' sessions.
func (s *Speaker) SetClients(ctx context.Context, clients Clients) error {
	for _, p := range clients.Prefixes {
		if !p.IsValid() || p != p.Masked() {
			return fmt.Errorf("invalid client prefix %q", p)
		}
	}
	if len(clients.Prefixes) > 0 && clients.ASN == 0 {
		return errors.New("the clients' ASN is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	old := s.clients
	s.clients = clients
	if !s.started {
		return nil
	}
	return s.syncClients(ctx, old)
}

// syncClients makes GoBGP's client peer group that of s.clients, which was old.
func (s *Speaker) syncClients(ctx context.Context, old Clients) error {
	want, had := clientPeerGroup(s.clients), clientPeerGroup(old)
	if len(old.Prefixes) > 0 && (len(s.clients.Prefixes) == 0 || !proto.Equal(want, had)) {
		if err := s.server.DeletePeerGroup(ctx, &api.DeletePeerGroupRequest{Name: clientGroup}); err != nil {
			return fmt.Errorf("removing the clients' peer group: %w", err)
		}
		old = Clients{}
	}
	if len(s.clients.Prefixes) == 0 {
		return nil
	}
	if len(old.Prefixes) == 0 {
		if err := s.server.AddPeerGroup(ctx, &api.AddPeerGroupRequest{PeerGroup: want}); err != nil {
			return fmt.Errorf("adding the clients' peer group: %w", err)
		}
	}
	var errs []error
	for _, p := range old.Prefixes {
		if !slices.Contains(s.clients.Prefixes, p) {
			err := s.server.DeleteDynamicNeighbor(ctx, &api.DeleteDynamicNeighborRequest{Prefix: p.String(), PeerGroup: clientGroup})
			errs = append(errs, err)
		}
	}
	for _, p := range s.clients.Prefixes {
		if !slices.Contains(old.Prefixes, p) {
			err := s.server.AddDynamicNeighbor(ctx, &api.AddDynamicNeighborRequest{DynamicNeighbor: &api.DynamicNeighbor{Prefix: p.String(), PeerGroup: clientGroup}})
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func clientPeerGroup(c Clients) *api.PeerGroup {
	var afiSafis []*api.AfiSafi
	for _, f := range []*api.Family{ipv4Unicast, ipv6Unicast} {
		afiSafis = append(afiSafis, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}})
	}
	return &api.PeerGroup{
		Conf: &api.PeerGroupConf{PeerGroupName: clientGroup, PeerAsn: c.ASN, LocalAsn: c.ASN, AuthPassword: c.Password},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          uint64(c.HoldTime / time.Second),
			KeepaliveInterval: uint64(c.KeepaliveTime / time.Second),
		}},
		Transport: &api.Transport{PassiveMode: true},
		AfiSafis:  afiSafis,
	}
}

// Received returns, by next hop, the prefixes the clients announce now. A client whose
// session is not established announces nothing.
func (s *Speaker) Received() map[netip.Addr][]netip.Prefix {
	return s.received.snapshot()
}

// ReceivedChanged receives a value (at most one waits) after the routes of Received change.
func (s *Speaker) ReceivedChanged() <-chan struct{} { return s.received.changed }

// receivedRoutes records the routes of the established clients, from GoBGP's events: a
// session's state and the UPDATEs it receives come in order from one watch.
type receivedRoutes struct {
	changed chan struct{}

	mu sync.Mutex
	// byClient holds each established client's routes: prefix → next hop.
	byClient map[netip.Addr]map[netip.Prefix]netip.Addr
}

func newReceivedRoutes() *receivedRoutes {
	return &receivedRoutes{changed: make(chan struct{}, 1), byClient: map[netip.Addr]map[netip.Prefix]netip.Addr{}}
}

func (r *receivedRoutes) peerEvent(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE || ev.Peer.State.PeerGroup != clientGroup {
		return
	}
	addr := ev.Peer.State.NeighborAddress.Unmap()
	r.mu.Lock()
	defer r.mu.Unlock()
	_, had := r.byClient[addr]
	if ev.Peer.State.SessionState != bgp.BGP_FSM_ESTABLISHED {
		delete(r.byClient, addr)
		if had {
			r.notify()
		}
		return
	}
	if !had {
		r.byClient[addr] = map[netip.Prefix]netip.Addr{}
	}
}

func (r *receivedRoutes) pathUpdate(paths []*apiutil.Path, _ time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	for _, p := range paths {
		routes := r.byClient[p.PeerAddress.Unmap()]
		prefix, ok := unicastPrefix(p)
		if routes == nil || !ok {
			continue // not a client's, or not unicast
		}
		if p.Withdrawal {
			if _, had := routes[prefix]; had {
				delete(routes, prefix)
				changed = true
			}
			continue
		}
		if nh := nextHop(p); nh.IsValid() && routes[prefix] != nh {
			routes[prefix] = nh
			changed = true
		}
	}
	if changed {
		r.notify()
	}
}

func (r *receivedRoutes) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *receivedRoutes) snapshot() map[netip.Addr][]netip.Prefix {
	r.mu.Lock()
	defer r.mu.Unlock()
	byNextHop := map[netip.Addr][]netip.Prefix{}
	for _, routes := range r.byClient {
		for prefix, nh := range routes {
			byNextHop[nh] = append(byNextHop[nh], prefix)
		}
	}
	for nh := range maps.Keys(byNextHop) {
		slices.SortFunc(byNextHop[nh], func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	}
	return byNextHop
}

func unicastPrefix(p *apiutil.Path) (netip.Prefix, bool) {
	if p.Family != bgp.RF_IPv4_UC && p.Family != bgp.RF_IPv6_UC {
		return netip.Prefix{}, false
	}
	n, ok := p.Nlri.(*bgp.IPAddrPrefix)
	if !ok {
		return netip.Prefix{}, false
	}
	return n.Prefix.Masked(), true
}

func nextHop(p *apiutil.Path) netip.Addr {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			return a.Value.Unmap()
		case *bgp.PathAttributeMpReachNLRI:
			return a.Nexthop.Unmap()
		}
	}
	return netip.Addr{}
}
