// SPDX-License-Identifier: Apache-2.0

// Package bgp is the speaker's BGP: one embedded GoBGP server per process keeps the
// sessions with the configured peers and announces routes to them, with upstream
// MetalLB's session semantics and metrics. In reflector mode it also accepts the LB
// nodes' sessions, records their routes, and sends several paths of a prefix (ADD-PATH).
package bgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"google.golang.org/protobuf/proto"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/config"
)

// Options configure a Speaker.
type Options struct {
	// ListenPort is the TCP port the speaker accepts sessions on: 0 is 179, -1 does not
	// listen (the speaker only connects out, like upstream's native speaker).
	ListenPort int32
	// ListenAddresses are where it accepts sessions; empty is every address.
	ListenAddresses []string
	// Reflector makes it a route reflector's speaker: it sends every path of a prefix
	// (ADD-PATH) to the peers that take them, and accepts sessions from the clients that
	// SetClients names, whose routes it records (Received).
	Reflector bool
}

// PeerStatus is the state of the session with one configured peer.
type PeerStatus struct {
	Name string
	Addr netip.Addr
	Port uint16
	Up   bool
	// State is the BGP FSM state: idle, connect, active, opensent, openconfirm, established.
	State string
	// Advertised is the number of prefixes sent on the session, Wanted the number that
	// should be, and UpdatesSent the number of UPDATE messages sent.
	Advertised, Wanted, UpdatesSent uint64
}

// Speaker announces routes to BGP peers. Its methods are safe for concurrent use.
type Speaker struct {
	logger  log.Logger
	opts    Options
	server  *server.BgpServer
	metrics *collector
	bfd     *bfdWatch
	// stopWatching ends the watching of GoBGP's BFD and BGP sessions.
	stopWatching context.CancelFunc

	mu       sync.Mutex
	closed   bool
	started  bool       // GoBGP runs: a router ID is known
	routerID netip.Addr // of the running GoBGP
	sessions map[string]session
	// established holds the peers whose BGP session is established; bfdOn the BFD
	// configuration each session runs with.
	established map[netip.Addr]bool
	bfdOn       map[string]*api.BfdPeerConfig
	// redialed holds when each session was last re-created after it went down (redial).
	redialed map[string]time.Time
	paths    []Path
	// announced holds the tags of each path in GoBGP's RIB.
	announced map[pathKey][]tag
	tags      *exportTags
	policy    *api.SetPoliciesRequest // last installed
	clients   Clients
	received  *receivedRoutes
}

// New returns a Speaker with no peers. It registers the speaker's metrics, so a process
// runs one Speaker at a time.
func New(logger log.Logger, opts Options) (*Speaker, error) {
	s := &Speaker{
		logger:      logger,
		opts:        opts,
		server:      server.NewBgpServer(server.LoggerOption(newGoBGPLogger(logger), nil)),
		sessions:    map[string]session{},
		established: map[netip.Addr]bool{},
		bfdOn:       map[string]*api.BfdPeerConfig{},
		redialed:    map[string]time.Time{},
		announced:   map[pathKey][]tag{},
		tags:        newExportTags(),
		received:    newReceivedRoutes(),
	}
	s.metrics = &collector{speaker: s}
	if err := s.metrics.register(); err != nil {
		return nil, err
	}
	// Serve runs GoBGP's event loop; GoBGP offers no way to end it, the process exit does.
	go s.server.Serve()
	ctx, stop := context.WithCancel(context.Background())
	s.bfd, s.stopWatching = &bfdWatch{sessions: map[string]*BFDStatus{}}, stop
	go s.bfd.run(ctx, s.server.ListBfdPeer)
	if err := s.server.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnPeerUpdate: s.peerEvent}, server.WatchPeer()); err != nil {
		stop()
		s.metrics.unregister()
		return nil, fmt.Errorf("watching the BGP sessions: %w", err)
	}
	if opts.Reflector {
		err := s.server.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnPeerUpdate: s.received.peerEvent, OnPathUpdate: s.received.pathUpdate},
			server.WatchPeer(), server.WatchUpdate(false, "", ""))
		if err != nil {
			stop()
			s.metrics.unregister()
			return nil, fmt.Errorf("watching the clients' routes: %w", err)
		}
	}
	return s, nil
}

// SetPeers makes the sessions those of peers, matched by name: a new peer gets a session,
// a removed one loses it, a changed one is reconfigured (its session restarts, unless only
// its BFD profile changed: then only its BFD session restarts). routerID is
// used unless a peer sets one; GoBGP has one router ID for all sessions, so peers setting
// another one are refused, and changing it restarts every session. Peers that cannot be
// honoured are skipped and reported in the error; the others are configured.
func (s *Speaker) SetPeers(ctx context.Context, peers []config.Peer, routerID netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	want, routerID, errs := s.newSessions(peers, routerID)
	if len(want) > 0 {
		if err := s.start(ctx, routerID, want); err != nil {
			return errors.Join(append(errs, err)...)
		}
	}
	if !s.started {
		return errors.Join(errs...)
	}
	old := s.sessions
	s.sessions = want
	// A session must find its peer in the export policy when it comes up, since GoBGP
	// sends the table right then; a removed peer needs none, its session ends with no update.
	if err := s.installPolicy(ctx, s.tagsInUse(s.announced)); err != nil {
		errs = append(errs, err)
	}
	for name, o := range old {
		if w, ok := want[name]; !ok || !sameSession(o, w) {
			if err := s.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: o.export.addr.String()}); err != nil {
				errs = append(errs, fmt.Errorf("removing peer %s: %w", name, err))
			}
			delete(s.bfdOn, name)
			delete(s.redialed, name)
		}
	}
	withBFD := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		w := want[name]
		if o, ok := old[name]; !ok || !sameSession(o, w) {
			if err := s.server.AddPeer(ctx, &api.AddPeerRequest{Peer: w.peer}); err != nil {
				errs = append(errs, fmt.Errorf("adding peer %s: %w", name, err))
				delete(s.sessions, name)
				continue
			}
		}
		// A session kept may have another BFD profile.
		if err := s.syncBFD(ctx, name); err != nil {
			errs = append(errs, err)
		}
		if w.bfd != nil {
			withBFD[w.export.addr.String()] = true
		}
	}
	s.bfd.keep(withBFD)
	return errors.Join(errs...)
}

var errClosed = errors.New("bgp speaker closed")

// sameSession tells whether a and b are the same BGP session; their BFD may differ.
func sameSession(a, b session) bool { return a.export == b.export && proto.Equal(a.peer, b.peer) }

// syncBFD runs BFD on the session name, with its profile, while its BGP session is
// established, and stops it otherwise. FRR re-creates its BFD session with a neighbor when
// their BGP session first comes up (with the session's local address) and signals the
// old one AdminDown, which GoBGP takes for a failure (RFC 5882 says it is none) and resets
// the BGP session: BFD started before would restart every new session once.
func (s *Speaker) syncBFD(ctx context.Context, name string) error {
	sess := s.sessions[name]
	want := sess.bfd
	if !s.established[sess.export.addr] {
		want = nil
	}
	if proto.Equal(want, s.bfdOn[name]) {
		return nil
	}
	p := proto.CloneOf(sess.peer)
	p.Bfd = want
	if _, err := s.server.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: p}); err != nil {
		return fmt.Errorf("configuring BFD with peer %s: %w", name, err)
	}
	s.bfdOn[name] = want
	return nil
}

// peerEvent follows the state of the BGP sessions, to run BFD on the established ones and
// to redial a session that went down.
func (s *Speaker) peerEvent(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.started {
		return
	}
	addr := ev.Peer.State.NeighborAddress.Unmap()
	wasUp, up := s.established[addr], ev.Peer.State.SessionState == bgp.BGP_FSM_ESTABLISHED
	s.established[addr] = up
	for name, sess := range s.sessions {
		if sess.export.addr != addr {
			continue
		}
		if err := s.syncBFD(context.Background(), name); err != nil {
			level.Error(s.logger).Log("op", "bfd", "peer", name, "error", err)
		}
		if wasUp && !up {
			s.redial(context.Background(), name, time.Now())
		}
	}
}

// redialInterval is the least time between two redials of a session: a session that keeps
// going down waits out GoBGP's idle hold time in between.
const redialInterval = retryTime * time.Second

// redial re-creates the GoBGP neighbor of the session name, which just went down, so that
// it connects and accepts connections at once. GoBGP keeps a neighbor whose session went down
// idle for a fixed 5 s, refusing the peer's connections meanwhile; a router that restarted
// (FRR starts in about a second) would get its routes back only after that. Its BFD session
// is already gone (syncBFD), so the removal waits on no BFD session.
func (s *Speaker) redial(ctx context.Context, name string, now time.Time) {
	if now.Sub(s.redialed[name]) < redialInterval || s.bfdOn[name] != nil {
		return
	}
	s.redialed[name] = now
	sess := s.sessions[name]
	if err := s.server.DeletePeer(ctx, &api.DeletePeerRequest{Address: sess.export.addr.String()}); err != nil {
		level.Error(s.logger).Log("op", "redial", "peer", name, "error", err)
		return
	}
	// This speaker did not restart: announced as restarting, GoBGP would hold our routes
	// back until every peer sent its End-of-RIB.
	peer := proto.CloneOf(sess.peer)
	if peer.GracefulRestart != nil {
		peer.GracefulRestart.LocalRestarting = false
	}
	if err := s.server.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
		level.Error(s.logger).Log("op", "redial", "peer", name, "error", err, "msg", "the peer has no session until its configuration changes")
		delete(s.sessions, name)
		return
	}
	level.Info(s.logger).Log("op", "redial", "peer", name, "msg", "session down: connecting again")
}

// newSessions converts peers, skipping (and reporting) those it cannot honour, and picks
// the router ID: the first one a peer sets, by peer name, else defaultRouterID.
func (s *Speaker) newSessions(peers []config.Peer, defaultRouterID netip.Addr) (map[string]session, netip.Addr, []error) {
	peers = slices.SortedFunc(slices.Values(peers), func(a, b config.Peer) int { return cmp.Compare(a.Name, b.Name) })
	routerID := defaultRouterID
	for _, p := range peers {
		if p.RouterID.IsValid() {
			routerID = p.RouterID
			break
		}
	}
	want := map[string]session{}
	byAddr := map[netip.Addr]string{}
	var errs []error
	for _, p := range peers {
		sess, err := newSession(s.logger, p)
		switch other, dup := byAddr[p.Addr.Unmap()]; {
		case err != nil:
		case want[p.Name].peer != nil:
			err = errors.New("duplicate peer name")
		case dup:
			err = fmt.Errorf("address %s already used by peer %s", p.Addr, other)
		case p.RouterID.IsValid() && p.RouterID != routerID:
			err = fmt.Errorf("router ID %s differs from %s, GoBGP runs with one router ID", p.RouterID, routerID)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", p.Name, err))
			continue
		}
		if s.opts.Reflector {
			for _, a := range sess.peer.AfiSafis {
				a.AddPaths = &api.AddPaths{Config: &api.AddPathsConfig{SendMax: addPathSendMax}}
			}
		}
		want[p.Name] = sess
		byAddr[sess.export.addr] = p.Name
	}
	return want, routerID, errs
}

// start runs GoBGP with routerID, restarting it (every session, an empty RIB) when it ran
// with another one.
func (s *Speaker) start(ctx context.Context, routerID netip.Addr, sessions map[string]session) error {
	if s.started && routerID == s.routerID {
		return nil
	}
	if !routerID.Is4() {
		return fmt.Errorf("router ID %q is not an IPv4 address", routerID)
	}
	if s.started {
		if err := s.server.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
			return fmt.Errorf("stopping BGP to change the router ID: %w", err)
		}
		s.started = false
		s.sessions = map[string]session{}
		s.established, s.bfdOn, s.redialed = map[netip.Addr]bool{}, map[string]*api.BfdPeerConfig{}, map[string]time.Time{}
		s.announced = map[pathKey][]tag{}
		s.policy = nil
	}
	// Every session sets its own local ASN; the global one only has to be valid.
	first := sessions[slices.Min(slices.Collect(maps.Keys(sessions)))]
	err := s.server.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:             first.peer.Conf.LocalAsn,
		RouterId:        routerID.String(),
		ListenPort:      cmp.Or(s.opts.ListenPort, defaultPort),
		ListenAddresses: s.opts.ListenAddresses,
	}})
	if err != nil {
		return fmt.Errorf("starting BGP: %w", err)
	}
	s.started, s.routerID = true, routerID
	if err := s.installPolicy(ctx, nil); err != nil {
		return err
	}
	for _, a := range policyAssignments {
		if err := s.server.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: a}); err != nil {
			return fmt.Errorf("assigning the policies: %w", err)
		}
	}
	if err := s.syncClients(ctx, Clients{}); err != nil {
		return err
	}
	return s.syncPaths(ctx)
}

// SetRoutes makes the announced routes those of routes. A prefix may appear in several
// routes: each peer gets the union of their communities and the highest local preference.
// Only what changed is announced or withdrawn. Before the first peer, routes are kept.
func (s *Speaker) SetRoutes(ctx context.Context, routes []announce.Route) error {
	paths := make([]Path, len(routes))
	for i, r := range routes {
		paths[i] = Path{Route: r}
	}
	return s.SetPaths(ctx, paths)
}

// SetPaths is SetRoutes for paths with their own next hops: the paths of one prefix
// and next hop merge as SetRoutes merges routes; those of other next hops are separate
// paths, sent together where the session has ADD-PATH (Options.AddPathSend).
func (s *Speaker) SetPaths(ctx context.Context, paths []Path) error {
	for _, p := range paths {
		if !p.Prefix.IsValid() || p.Prefix != p.Prefix.Masked() || p.Prefix.Addr().Is4In6() {
			return fmt.Errorf("invalid route prefix %q", p.Prefix)
		}
		if p.NextHop.IsValid() && p.NextHop.Is4() != p.Prefix.Addr().Is4() {
			return fmt.Errorf("next hop %s of %s is of another family", p.NextHop, p.Prefix)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	s.paths = slices.Clone(paths)
	if !s.started {
		return nil
	}
	return s.syncPaths(ctx)
}

// syncPaths makes GoBGP's RIB hold s.paths.
func (s *Speaker) syncPaths(ctx context.Context) error {
	want := s.tags.tagPaths(s.paths)
	// The export policy must know the tags of the new paths before they are added, and
	// those of the old ones until they are replaced or withdrawn: a withdrawal or an update
	// reaches the peers the old path was exported to.
	inUse := s.tagsInUse(want)
	maps.Copy(inUse, s.tagsInUse(s.announced))
	if err := s.installPolicy(ctx, inUse); err != nil {
		return err
	}
	var errs []error
	for key, tags := range s.announced {
		if _, ok := want[key]; ok {
			continue
		}
		if err := s.server.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{newPath(key, tags)}}); err != nil {
			errs = append(errs, fmt.Errorf("withdrawing %s: %w", key.prefix, err))
			continue
		}
		delete(s.announced, key)
	}
	for key, tags := range want {
		if old, ok := s.announced[key]; ok && slices.Equal(old, tags) {
			continue
		}
		// Adding a path of the same identifier replaces the previous one: peers get an update.
		if _, err := s.server.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{newPath(key, tags)}}); err != nil {
			errs = append(errs, fmt.Errorf("announcing %s: %w", key.prefix, err))
			continue
		}
		s.announced[key] = tags
	}
	inUse = s.tagsInUse(s.announced)
	s.tags.forget(inUse)
	return errors.Join(append(errs, s.installPolicy(ctx, inUse))...)
}

func (s *Speaker) tagsInUse(paths map[pathKey][]tag) map[tag]bool {
	inUse := map[tag]bool{}
	for _, tags := range paths {
		for _, t := range tags {
			inUse[t] = true
		}
	}
	return inUse
}

// installPolicy installs the export policy for the current sessions and the tags inUse.
func (s *Speaker) installPolicy(ctx context.Context, inUse map[tag]bool) error {
	peers := make([]exportPeer, 0, len(s.sessions))
	for _, name := range slices.Sorted(maps.Keys(s.sessions)) {
		peers = append(peers, s.sessions[name].export)
	}
	policy := s.tags.policy(peers, inUse)
	if proto.Equal(policy, s.policy) {
		return nil
	}
	if err := s.server.SetPolicies(ctx, policy); err != nil {
		return fmt.Errorf("installing the export policy: %w", err)
	}
	s.policy = policy
	return nil
}

// Peers returns the state of the session with each configured peer, by name.
func (s *Speaker) Peers() []PeerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return nil
	}
	byAddr := map[string]*api.Peer{}
	err := s.server.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		byAddr[p.Conf.NeighborAddress] = p
	})
	if err != nil {
		return nil
	}
	statuses := make([]PeerStatus, 0, len(s.sessions))
	for _, name := range slices.Sorted(maps.Keys(s.sessions)) {
		sess := s.sessions[name]
		st := PeerStatus{Name: name, Addr: sess.export.addr, Port: uint16(sess.peer.Transport.RemotePort), State: "idle"}
		owner := s.tags.owner(name)
		for key, tags := range s.announced {
			if sess.carries(key.prefix) && slices.ContainsFunc(tags, func(t tag) bool { return t.owner == everyPeer || t.owner == owner }) {
				st.Wanted++
			}
		}
		if p := byAddr[sess.export.addr.String()]; p != nil && p.State != nil {
			st.State = strings.ToLower(strings.TrimPrefix(p.State.SessionState.String(), "SESSION_STATE_"))
			st.Up = p.State.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED
			if m := p.State.Messages; m != nil && m.Sent != nil {
				st.UpdatesSent = m.Sent.Update
			}
			for _, a := range p.AfiSafis {
				if a.State != nil {
					st.Advertised += a.State.Advertised
				}
			}
		}
		statuses = append(statuses, st)
	}
	return statuses
}

// BFD returns the state of the BFD sessions, by peer address.
func (s *Speaker) BFD() []BFDStatus { return s.bfd.statuses() }

// Close stops the speaker. Sessions with graceful restart end without a NOTIFICATION, so
// the peer keeps our routes (as stale) until a new speaker announces again; the others end
// with a Cease and the peer withdraws our routes at once.
func (s *Speaker) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.metrics.unregister()
	s.stopWatching()
	if !s.started {
		return nil
	}
	graceful := map[netip.Addr]uint16{}
	for _, sess := range s.sessions {
		if sess.peer.GracefulRestart != nil {
			graceful[sess.export.addr] = uint16(sess.peer.Transport.RemotePort)
		}
	}
	if err := shutdownConnections(graceful, s.opts.ListenPort); err != nil {
		// GoBGP would send a Cease: leave the sessions to the process exit instead.
		return fmt.Errorf("ending graceful-restart sessions: %w", err)
	}
	return s.server.StopBgp(ctx, &api.StopBgpRequest{})
}
