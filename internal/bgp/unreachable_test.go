// SPDX-License-Identifier: Apache-2.0

package bgp_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/testenv"
)

// A peer whose router never answers (no host has its address) stays down and is reported
// down, while the session with the router that answers comes up and carries the routes.
func TestUnreachablePeerLeavesOthersUp(t *testing.T) {
	t.Parallel()
	l := newLab(t, frrNeighbor{addr: "10.0.0.2", asn: speakerASN, families: []string{"ipv4"}})
	speaker := startSpeaker(t, l.speakerNS)
	speaker.setPeers(routerID, peer("up", "10.0.0.1", "10.0.0.2"), peer("unreachable", "10.0.0.99", "10.0.0.2"))
	speaker.setRoutes(announce.Route{Prefix: netip.MustParsePrefix("192.0.2.30/32")})

	waitForPeers(t, l, "192.0.2.30/32", "10.0.0.2")
	testenv.Eventually(t, "the reachable peer up, the unreachable one reported down", func() error {
		status := speaker.status()
		up := map[string]bool{}
		for _, p := range status.Peers {
			up[p.Name] = p.Up
		}
		if !up["up"] || up["unreachable"] || len(up) != 2 {
			return fmt.Errorf("Peers(): %+v", status.Peers)
		}
		for peer, want := range map[string]float64{"10.0.0.1:179": 1, "10.0.0.99:179": 0} {
			key := fmt.Sprintf("metallb_bgp_session_up{peer=%q}", peer)
			if got, ok := status.Metrics[key]; !ok || got != want {
				return fmt.Errorf("%s is %v (present: %v), want %v", key, got, ok, want)
			}
		}
		return nil
	})
}
