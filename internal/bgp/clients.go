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

	"github.com/maglb/maglb/internal/config"
)

// clientGroup is the GoBGP peer group of a reflector's clients.
const clientGroup = "maglb-clients"

// Clients are the LB nodes a reflector accepts iBGP sessions from, by address, in the
// reflector's own ASN. They connect; the reflector never does. Each client is a GoBGP
// neighbor of its own (passive, configured from the clients' peer group), not a dynamic
// neighbor: GoBGP removes a dynamic neighbor whenever its session drops, and with it its
// BFD session, while holding the server's lock; a BFD session that fails resets its BGP
// session through that same lock. When several clients' BFD failed at once (a loaded
// reflector), a removal waited on a BFD session that waited on the lock the removal held,
// and the reflector stopped answering, its clients' paths frozen at the ToR.
type Clients struct {
	ASN   uint32
	Addrs []netip.Addr
	// HoldTime and KeepaliveTime are offered to the clients; zero keeps GoBGP's defaults.
	HoldTime, KeepaliveTime time.Duration
	Password                string
	// BFD runs on every client's session with this profile; nil: none.
	BFD *config.BFDProfile
}

// SetClients makes the speaker accept sessions from clients; their routes are recorded
// (Received), never reflected nor installed. Before the first peer starts GoBGP, they
// are kept and applied then. A change of anything but the addresses restarts every
// client's session.
func (s *Speaker) SetClients(ctx context.Context, clients Clients) error {
	for _, a := range clients.Addrs {
		if !a.IsValid() || a.Zone() != "" {
			return fmt.Errorf("invalid client address %q", a)
		}
	}
	if len(clients.Addrs) > 0 && clients.ASN == 0 {
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

// syncClients makes GoBGP's client peer group and its neighbors those of s.clients, which
// was old.
func (s *Speaker) syncClients(ctx context.Context, old Clients) error {
	want, had := clientPeerGroup(s.clients), clientPeerGroup(old)
	var errs []error
	removeClient := func(a netip.Addr) {
		if err := s.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
			errs = append(errs, fmt.Errorf("removing client %s: %w", a, err))
		}
	}
	if len(old.Addrs) > 0 && (len(s.clients.Addrs) == 0 || !proto.Equal(want, had)) {
		for _, a := range old.Addrs {
			removeClient(a)
		}
		if err := s.server.DeletePeerGroup(ctx, &api.DeletePeerGroupRequest{Name: clientGroup}); err != nil {
			return errors.Join(append(errs, fmt.Errorf("removing the clients' peer group: %w", err))...)
		}
		old = Clients{}
	}
	if len(s.clients.Addrs) == 0 {
		return errors.Join(errs...)
	}
	if len(old.Addrs) == 0 {
		if err := s.server.AddPeerGroup(ctx, &api.AddPeerGroupRequest{PeerGroup: want}); err != nil {
			return errors.Join(append(errs, fmt.Errorf("adding the clients' peer group: %w", err))...)
		}
	}
	for _, a := range old.Addrs {
		if !slices.Contains(s.clients.Addrs, a) {
			removeClient(a)
		}
	}
	for _, a := range s.clients.Addrs {
		if slices.Contains(old.Addrs, a) {
			continue
		}
		client := &api.Peer{Conf: &api.PeerConf{NeighborAddress: a.String(), PeerGroup: clientGroup}}
		if err := s.server.AddPeer(ctx, &api.AddPeerRequest{Peer: client}); err != nil {
			errs = append(errs, fmt.Errorf("adding client %s: %w", a, err))
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
			// A client's session that went down is accepted again after a second, not
			// GoBGP's 30: the client, not the reflector, waits before reconnecting.
			IdleHoldTimeAfterReset: 1,
		}},
		Transport: &api.Transport{PassiveMode: true},
		AfiSafis:  afiSafis,
		Bfd:       bfdConfig(config.Peer{BFD: c.BFD}),
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
