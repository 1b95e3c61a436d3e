// SPDX-License-Identifier: Apache-2.0

package bgp_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/netlab"
	"github.com/maglb/maglb/internal/testenv"
)

// bfdMargin is what the router may take beyond BFD's detection time to drop the route.
const bfdMargin = 200 * time.Millisecond

func TestBFD(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		family, router, speaker, vip string
	}{
		{"ipv4", "10.0.0.1", "10.0.0.2", "192.0.2.50/32"},
		{"ipv6", "fd00::1", "fd00::2", "2001:db8::50/128"},
	} {
		// One after the other: the timing is measured, and other processes delay it.
		t.Run(tc.family, func(t *testing.T) {
			testBFD(t, tc.family, tc.router, tc.speaker, netip.MustParsePrefix(tc.vip))
		})
	}
}

func testBFD(t *testing.T, family, routerAddr, speakerAddr string, prefix netip.Prefix) {
	routerProfile := netlab.BFDProfile{Name: "router", ReceiveInterval: 100, TransmitInterval: 100, DetectMultiplier: 3}
	l := newLabWith(t, []netlab.FRROption{netlab.WithBFD(routerProfile)},
		frrNeighbor{addr: speakerAddr, asn: speakerASN, families: []string{family}, bfdProfile: routerProfile.Name})
	speaker := startSpeaker(t, l.speakerNS)
	p := peer("bfd", routerAddr, "")
	p.BFDProfile = "fast"
	p.BFD = &config.BFDProfile{Name: "fast", ReceiveInterval: 100, TransmitInterval: 100, DetectMultiplier: 3}
	speaker.setPeers(routerID, p)
	vip := announce.Route{Prefix: prefix}
	speaker.setRoutes(vip)
	metric := func(name string) string { return fmt.Sprintf(`%s{peer=%q,vrf="default"}`, name, routerAddr) }
	upMetric := metric("metallb_bfd_session_up")

	waitBFDUp := func(profile config.BFDProfile, upEvents float64) {
		t.Helper()
		testenv.Eventually(t, fmt.Sprintf("BFD up on both ends with %d ms × %d", profile.TransmitInterval, profile.DetectMultiplier), func() error {
			peers, err := l.router.BFDPeers()
			if err != nil {
				return err
			}
			if len(peers) != 1 {
				return fmt.Errorf("router BFD sessions: %+v", peers)
			}
			r := peers[0]
			want := netlab.BFDPeer{Peer: speakerAddr, Local: r.Local, Status: "up",
				ReceiveInterval: routerProfile.ReceiveInterval, TransmitInterval: routerProfile.TransmitInterval, DetectMultiplier: routerProfile.DetectMultiplier,
				RemoteReceiveInterval: profile.ReceiveInterval, RemoteTransmitInterval: profile.TransmitInterval, RemoteDetectMultiplier: profile.DetectMultiplier}
			if r != want {
				return fmt.Errorf("router BFD session %+v, want %+v", r, want)
			}
			m := speaker.status().Metrics
			for key, want := range map[string]float64{upMetric: 1, metric("metallb_bfd_session_up_events"): upEvents} {
				if m[key] != want {
					return fmt.Errorf("%s is %v, want %v", key, m[key], want)
				}
			}
			for _, key := range []string{"metallb_bfd_control_packet_input", "metallb_bfd_control_packet_output"} {
				if n := m[metric(key)]; n == 0 {
					return fmt.Errorf("%s is 0", key)
				}
			}
			return nil
		})
	}
	waitBFDUp(*p.BFD, 1)
	waitForPeers(t, l, prefix.String(), speakerAddr)
	// BFD starting with the session restarts nothing.
	var neighbors map[string]struct {
		Dropped int `json:"connectionsDropped"`
	}
	if err := l.router.VtyshJSON("show bgp neighbors "+speakerAddr+" json", &neighbors); err != nil || neighbors[speakerAddr].Dropped != 0 {
		t.Fatalf("the router's session dropped: %+v, %v", neighbors, err)
	}

	// The speaker's node goes dark: every packet to and from it dropped, so the router
	// learns it from BFD alone (the 9 s hold time is far away). The route leaves the
	// router's forwarding table when BGP withdraws it there.
	routes := watchKernelRoute(t, l.routerNS, vip.Prefix)
	dropped := darken(t, l.speakerNS)
	var gone time.Duration
	select {
	case e := <-routes:
		if !e.deleted {
			t.Fatalf("the route changed at the router: %+v", e)
		}
		gone = e.at.Sub(dropped)
	case <-time.After(5 * time.Second):
		t.Fatal("the route still at the router 5 s after the node went dark")
	}
	detection := time.Duration(p.BFD.DetectMultiplier*max(p.BFD.TransmitInterval, routerProfile.ReceiveInterval)) * time.Millisecond
	t.Logf("route gone from the router %v after the node went dark (BFD detection time %v)", gone, detection)
	if gone > detection+bfdMargin {
		t.Errorf("route gone after %v, want at most %v", gone, detection+bfdMargin)
	}
	if paths, err := l.paths(vip.Prefix.String()); err != nil || len(paths) != 0 {
		t.Errorf("BGP paths at the router after the withdrawal: %+v, %v", paths, err)
	}
	testenv.Eventually(t, "the speaker's session down by BFD", func() error {
		status := speaker.status()
		if len(status.Peers) != 1 || status.Peers[0].Up {
			return fmt.Errorf("Peers(): %+v", status.Peers)
		}
		for key, want := range map[string]float64{upMetric: 0, metric("metallb_bfd_session_down_events"): 1} {
			if got := status.Metrics[key]; got != want {
				return fmt.Errorf("%s is %v, want %v", key, got, want)
			}
		}
		return nil
	})

	undropAll(t, l.speakerNS)
	waitBFDUp(*p.BFD, 2)
	waitForPeers(t, l, prefix.String(), speakerAddr)

	// A changed profile applies to the running speaker. GoBGP restarts the BFD session to
	// change it, which the router takes for BFD down: how long the route was gone is logged.
	for len(routes) > 0 {
		<-routes // the route coming back
	}
	p.BFD = &config.BFDProfile{Name: "fast", ReceiveInterval: 200, TransmitInterval: 150, DetectMultiplier: 4}
	speaker.setPeers(routerID, p)
	waitBFDUp(*p.BFD, 3)
	waitForPeers(t, l, prefix.String(), speakerAddr)
	var removed time.Time
	for len(routes) > 0 {
		if e := <-routes; e.deleted {
			removed = e.at
		} else if !removed.IsZero() {
			t.Logf("the profile change took the route away from the router for %v", e.at.Sub(removed))
		}
	}
}

// darken drops every packet in and out of ns until undropAll, and returns when it started
// to. The rules go to an nft already running, so no process start delays them.
func darken(t *testing.T, ns *netlab.Namespace) time.Time {
	t.Helper()
	cmd := ns.Command(context.Background(), "nft", "-i")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// nft reads its input once it answers.
	if _, err := io.WriteString(in, "add table inet dark\nlist table inet dark\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || !strings.HasPrefix(line, "table inet dark") {
		t.Fatalf("nft answered %q, %v", line, err)
	}
	const rules = "add chain inet dark in { type filter hook input priority 0; policy drop; }; " +
		"add chain inet dark out { type filter hook output priority 0; policy drop; }\n"
	dropped := time.Now()
	if _, err := io.WriteString(in, rules); err != nil {
		t.Fatal(err)
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nft: %v", err)
	}
	if _, err := ns.Run("nft", "list", "chain", "inet", "dark", "out"); err != nil {
		t.Fatal(err)
	}
	return dropped
}

func undropAll(t *testing.T, ns *netlab.Namespace) {
	t.Helper()
	if _, err := ns.Run("nft", "delete", "table", "inet", "dark"); err != nil {
		t.Fatal(err)
	}
}

// routeEvent is the kernel adding or deleting a route, when ip's route monitor stamped it.
type routeEvent struct {
	at      time.Time
	deleted bool
}

// watchKernelRoute reports the changes of ns's kernel route to prefix until the test ends.
func watchKernelRoute(t *testing.T, ns *netlab.Namespace, prefix netip.Prefix) <-chan routeEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, "ip", "-tshort", "monitor", "route")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	events := make(chan routeEvent, 100)
	// ip prints host routes without their length.
	dst := prefix.Addr().String() + " "
	go func() {
		defer close(events)
		lines := bufio.NewScanner(out)
		for lines.Scan() {
			stamp, event, ok := strings.Cut(lines.Text(), "] ")
			if !ok {
				continue
			}
			rest, deleted := strings.CutPrefix(event, "Deleted ")
			if !strings.HasPrefix(rest, dst) {
				continue
			}
			if at, err := time.ParseInLocation("[2006-01-02T15:04:05.000000", stamp, time.Local); err == nil {
				events <- routeEvent{at: at, deleted: deleted}
			}
		}
	}()
	return events
}
