// SPDX-License-Identifier: Apache-2.0

package bgp_test

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/testenv"
)

func TestRoutesCarryAttributesAndAreWithdrawn(t *testing.T) {
	t.Parallel()
	l := newLab(t,
		frrNeighbor{addr: "10.0.0.2", asn: speakerASN, families: []string{"ipv4"}},
		frrNeighbor{addr: "10.0.0.3", asn: routerASN, families: []string{"ipv4"}})
	speaker := startSpeaker(t, l.speakerNS)
	ibgp := peer("ibgp", "10.0.0.11", "10.0.0.3")
	ibgp.MyASN = routerASN
	speaker.setPeers(routerID, peer("ebgp", "10.0.0.1", "10.0.0.2"), ibgp)
	vip := announce.Route{
		Prefix:      netip.MustParsePrefix("192.0.2.10/32"),
		Communities: []config.Community{{Global: 65000<<16 | 1}, {Large: true, Global: 1, LocalData1: 2, LocalData2: 3}},
		LocalPref:   200,
	}
	aggregate := announce.Route{Prefix: netip.MustParsePrefix("198.51.100.0/24")}
	speaker.setRoutes(vip, aggregate)

	testenv.Eventually(t, "the VIP at the router with its attributes", func() error {
		paths, err := l.paths("192.0.2.10/32")
		if err != nil {
			return err
		}
		ebgpPath, ibgpPath := paths["10.0.0.2"], paths["10.0.0.3"]
		switch {
		case len(paths) != 2:
			return fmt.Errorf("want paths from both sessions, got %+v", paths)
		case !ebgpPath.HasNexthop("10.0.0.2") || !ibgpPath.HasNexthop("10.0.0.3"):
			return fmt.Errorf("next hops are not the sessions' addresses: %+v", paths)
		case ebgpPath.ASPath.String != "64512" || ibgpPath.ASPath.String != "Local":
			return fmt.Errorf("unexpected AS paths: %+v", paths)
		case ebgpPath.Community.String != "65000:1" || ibgpPath.Community.String != "65000:1":
			return fmt.Errorf("unexpected communities: %+v", paths)
		case ebgpPath.LargeCommunity.String != "1:2:3" || ibgpPath.LargeCommunity.String != "1:2:3":
			return fmt.Errorf("unexpected large communities: %+v", paths)
		case ibgpPath.LocalPref == nil || *ibgpPath.LocalPref != 200:
			return fmt.Errorf("the iBGP path has not local preference 200: %+v", ibgpPath)
		}
		return nil
	})
	testenv.Eventually(t, "the aggregate at the router", func() error {
		paths, err := l.paths("198.51.100.0/24")
		if err != nil {
			return err
		}
		if len(paths) != 2 || !paths["10.0.0.2"].Valid || paths["10.0.0.2"].LargeCommunity.String != "" {
			return fmt.Errorf("want a valid path without communities from both sessions, got %+v", paths)
		}
		return nil
	})

	speaker.setRoutes(aggregate)
	testenv.Eventually(t, "the VIP withdrawn", func() error {
		paths, err := l.paths("192.0.2.10/32")
		if err != nil {
			return err
		}
		if len(paths) != 0 {
			return fmt.Errorf("still announced: %+v", paths)
		}
		return nil
	})
	testenv.Eventually(t, "one announced prefix in the metrics", func() error {
		got := speaker.status().Metrics[`metallb_bgp_announced_prefixes_total{peer="10.0.0.1:179"}`]
		if got != 1 {
			return fmt.Errorf("metallb_bgp_announced_prefixes_total is %v", got)
		}
		return nil
	})
	if paths, err := l.paths("198.51.100.0/24"); err != nil || len(paths) != 2 {
		t.Fatalf("the aggregate is no longer announced on both sessions: %+v, %v", paths, err)
	}
}

func TestPasswordsAndPeerSelection(t *testing.T) {
	t.Parallel()
	l := newLab(t,
		frrNeighbor{addr: "10.0.0.2", asn: speakerASN, families: []string{"ipv4"}},
		frrNeighbor{addr: "10.0.0.3", asn: speakerASN, password: "s3cret", families: []string{"ipv4"}},
		frrNeighbor{addr: "10.0.0.4", asn: speakerASN, password: "s3cret", families: []string{"ipv4"}})
	speaker := startSpeaker(t, l.speakerNS)
	md5 := peer("md5", "10.0.0.11", "10.0.0.3")
	md5.Password = "s3cret"
	wrong := peer("wrong", "10.0.0.12", "10.0.0.4")
	wrong.Password = "not-the-secret"
	speaker.setPeers(routerID, peer("plain", "10.0.0.1", "10.0.0.2"), md5, wrong)

	testenv.Eventually(t, "the sessions without and with a password up, the one with a wrong password down", func() error {
		for _, addr := range []string{"10.0.0.2", "10.0.0.3"} {
			if state, err := l.sessionState(addr); err != nil || state != "Established" {
				return fmt.Errorf("router session with %s: %q, %v", addr, state, err)
			}
		}
		status := speaker.status()
		up := map[string]bool{}
		for _, p := range status.Peers {
			up[p.Name] = p.Up
		}
		if !up["plain"] || !up["md5"] || up["wrong"] || len(up) != 3 {
			return fmt.Errorf("Peers(): %+v", status.Peers)
		}
		for peer, want := range map[string]float64{"10.0.0.1:179": 1, "10.0.0.11:179": 1, "10.0.0.12:179": 0} {
			key := fmt.Sprintf("metallb_bgp_session_up{peer=%q}", peer)
			if got, ok := status.Metrics[key]; !ok || got != want {
				return fmt.Errorf("%s is %v (present: %v), want %v", key, got, ok, want)
			}
		}
		return nil
	})
	if state, err := l.sessionState("10.0.0.4"); err != nil || state == "Established" {
		t.Fatalf("router session with the wrong password: %q, %v", state, err)
	}

	// A route for some peers only: moving it between peers withdraws it where it left.
	toAll := announce.Route{Prefix: netip.MustParsePrefix("192.0.2.21/32")}
	selected := announce.Route{Prefix: netip.MustParsePrefix("192.0.2.20/32"), Peers: []string{"plain"}}
	speaker.setRoutes(toAll, selected)
	waitForPeers(t, l, "192.0.2.20/32", "10.0.0.2")
	waitForPeers(t, l, "192.0.2.21/32", "10.0.0.2", "10.0.0.3")
	selected.Peers = []string{"md5"}
	speaker.setRoutes(toAll, selected)
	waitForPeers(t, l, "192.0.2.20/32", "10.0.0.3")
	waitForPeers(t, l, "192.0.2.21/32", "10.0.0.2", "10.0.0.3")
}

// waitForPeers waits until the router has prefix from exactly the neighbors peers.
func waitForPeers(t *testing.T, l *lab, prefix string, peers ...string) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("%s from %v only", prefix, peers), func() error {
		paths, err := l.paths(prefix)
		if err != nil {
			return err
		}
		if len(paths) != len(peers) {
			return fmt.Errorf("paths: %+v", paths)
		}
		for _, p := range peers {
			if !paths[p].Valid {
				return fmt.Errorf("no valid path from %s: %+v", p, paths)
			}
		}
		return nil
	})
}

func TestIPv6Routes(t *testing.T) {
	t.Parallel()
	l := newLab(t,
		frrNeighbor{addr: "fd00::2", asn: speakerASN, families: []string{"ipv6"}},
		frrNeighbor{addr: "10.0.0.2", asn: speakerASN, families: []string{"ipv4", "ipv6"}})
	speaker := startSpeaker(t, l.speakerNS)
	dualStack := peer("dual-stack", "10.0.0.1", "")
	dualStack.DualStackAddressFamily = true
	speaker.setPeers(routerID, peer("ipv6", "fd00::1", ""), dualStack)
	speaker.setRoutes(
		announce.Route{Prefix: netip.MustParsePrefix("2001:db8::10/128"), Peers: []string{"ipv6"}},
		announce.Route{Prefix: netip.MustParsePrefix("2001:db8::20/128"), Peers: []string{"dual-stack"}},
		announce.Route{Prefix: netip.MustParsePrefix("192.0.2.30/32"), Peers: []string{"dual-stack"}},
	)
	for _, c := range []struct{ prefix, peer, nexthop string }{
		{"2001:db8::10/128", "fd00::2", "fd00::2"},
		// An IPv6 route over an IPv4 session: the IPv6 address of the session's interface.
		{"2001:db8::20/128", "10.0.0.2", "fd00::2"},
		{"192.0.2.30/32", "10.0.0.2", "10.0.0.2"},
	} {
		testenv.Eventually(t, c.prefix+" at the router", func() error {
			paths, err := l.paths(c.prefix)
			if err != nil {
				return err
			}
			if p, ok := paths[c.peer]; len(paths) != 1 || !ok || !p.Valid || !p.HasNexthop(c.nexthop) {
				return fmt.Errorf("want one valid path from %s with next hop %s, got %+v", c.peer, c.nexthop, paths)
			}
			return nil
		})
	}
}

func TestGracefulRestartKeepsRoutes(t *testing.T) {
	t.Parallel()
	l := newLab(t, frrNeighbor{addr: "10.0.0.2", asn: speakerASN, families: []string{"ipv4"}})
	gr := peer("gr", "10.0.0.1", "")
	gr.EnableGracefulRestart = true
	kept := announce.Route{Prefix: netip.MustParsePrefix("192.0.2.40/32")}
	dropped := announce.Route{Prefix: netip.MustParsePrefix("192.0.2.41/32")}

	speaker := startSpeaker(t, l.speakerNS)
	speaker.setPeers(routerID, gr)
	speaker.setRoutes(kept, dropped)
	waitFresh := func(prefix string) {
		testenv.Eventually(t, prefix+" announced and not stale", func() error {
			paths, err := l.paths(prefix)
			if err != nil {
				return err
			}
			if p := paths["10.0.0.2"]; !p.Valid || p.Stale {
				return fmt.Errorf("paths: %+v", paths)
			}
			return nil
		})
	}
	waitStale := func() {
		testenv.Eventually(t, "the router keeping the route as stale", func() error {
			paths, err := l.paths(kept.Prefix.String())
			if err != nil {
				return err
			}
			if !paths["10.0.0.2"].Stale {
				return fmt.Errorf("paths: %+v", paths)
			}
			return nil
		})
	}
	waitFresh(kept.Prefix.String())
	waitFresh(dropped.Prefix.String())

	missing := watchRoute(t, l, kept.Prefix.String())

	// A speaker closed, then one restarted without the dropped route: the router keeps
	// the routes until the new speaker's End-of-RIB, then drops the stale one.
	speaker.close()
	waitStale()
	speaker = startSpeaker(t, l.speakerNS)
	speaker.setPeers(routerID, gr)
	speaker.setRoutes(kept)
	waitFresh(kept.Prefix.String())
	testenv.Eventually(t, "the route the restarted speaker does not announce withdrawn", func() error {
		paths, err := l.paths(dropped.Prefix.String())
		if err != nil {
			return err
		}
		if len(paths) != 0 {
			return fmt.Errorf("paths: %+v", paths)
		}
		return nil
	})

	// A speaker killed.
	speaker.kill()
	waitStale()
	speaker = startSpeaker(t, l.speakerNS)
	speaker.setPeers(routerID, gr)
	speaker.setRoutes(kept)
	waitFresh(kept.Prefix.String())

	if err := missing(); err != nil {
		t.Fatal(err)
	}
}

// watchRoute polls the router for prefix until the returned function is called, which
// reports the polls that did not find it.
func watchRoute(t *testing.T, l *lab, prefix string) func() error {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var errs []error
	polls := 0
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			polls++
			paths, err := l.paths(prefix)
			if err == nil && !paths["10.0.0.2"].Valid {
				err = fmt.Errorf("%s missing at the router: %+v", prefix, paths)
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	})
	var once sync.Once
	finish := func() error {
		once.Do(func() {
			close(stop)
			wg.Wait()
		})
		if polls == 0 {
			return errors.New("the router was never polled")
		}
		return errors.Join(errs...)
	}
	t.Cleanup(func() { _ = finish() })
	return finish
}

// TestDroppedSessionRedials: a session the router drops is dialled again at once, rather than
// after GoBGP's idle hold time (a fixed 5 s, during which it refuses the router's
// connections), and sends its routes at once; a session that drops again within the redial
// interval waits that time out.
func TestDroppedSessionRedials(t *testing.T) {
	t.Parallel()
	const idleHold = 5 * time.Second // GoBGP's, after a session went down
	l := newLab(t, frrNeighbor{addr: "10.0.0.2", asn: speakerASN, families: []string{"ipv4"}})
	speaker := startSpeaker(t, l.speakerNS)
	// With graceful restart, a new speaker announces itself restarting, and holds its routes
	// back until every peer sent its End-of-RIB or the selection deferral time passed (the
	// first announcement here: "silent" never answers). A session dialled again must not: this
	// speaker did not restart.
	router, silent := peer("router", "10.0.0.1", "10.0.0.2"), peer("silent", "10.0.0.12", "10.0.0.4")
	router.EnableGracefulRestart, silent.EnableGracefulRestart = true, true
	speaker.setPeers(routerID, router, silent)
	vip := "192.0.2.50/32"
	speaker.setRoutes(announce.Route{Prefix: netip.MustParsePrefix(vip)})
	waitForPeers(t, l, vip, "10.0.0.2")

	// clear drops the session at the router and returns how long until it was established
	// again with the route.
	clear := func() time.Duration {
		t.Helper()
		before, err := l.neighborState("10.0.0.2")
		if err != nil {
			t.Fatal(err)
		}
		dropped := time.Now()
		if _, err := l.router.Vtysh("clear bgp 10.0.0.2"); err != nil {
			t.Fatal(err)
		}
		for {
			now, err := l.neighborState("10.0.0.2")
			if err == nil && now.Established > before.Established {
				if paths, err := l.paths(vip); err == nil && paths["10.0.0.2"].Valid {
					return time.Since(dropped)
				}
			}
			if time.Since(dropped) > 30*time.Second {
				t.Fatalf("the session and %s not back 30 s after the session dropped (%v)", vip, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if back := clear(); back >= idleHold-time.Second {
		t.Errorf("the route came back %v after the drop: the speaker waited for GoBGP's idle hold (%v)", back, idleHold)
	}
	if back := clear(); back < idleHold-time.Second {
		t.Errorf("the route came back %v after a second drop within the redial interval: want GoBGP's idle hold (%v)", back, idleHold)
	}
}
