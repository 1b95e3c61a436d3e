// SPDX-License-Identifier: Apache-2.0

package bgp_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/netlab"
)

// The lab: the speaker's namespace and the router's, linked by one veth. The speaker
// has several addresses so that each of its sessions comes from its own (GoBGP and FRR
// both know a neighbor by address); the router has one address per speaker session.
var (
	speakerAddrs = []string{"10.0.0.2/24", "10.0.0.3/24", "10.0.0.4/24", "fd00::2/64"}
	routerAddrs  = []string{"10.0.0.1/24", "10.0.0.11/24", "10.0.0.12/24", "fd00::1/64"}
	routerID     = netip.MustParseAddr("10.0.0.2")
)

const (
	speakerASN = 64512
	routerASN  = 64513
)

type lab struct {
	speakerNS, routerNS *netlab.Namespace
	router              *netlab.FRR
}

// frrNeighbor is a neighbor in the router's configuration.
type frrNeighbor struct {
	addr     string
	asn      uint32
	password string
	families []string // "ipv4", "ipv6"
	// bfdProfile is the router's BFD profile for the session; "" runs it without BFD.
	bfdProfile string
}

func newLab(t *testing.T, neighbors ...frrNeighbor) *lab {
	t.Helper()
	return newLabWith(t, nil, neighbors...)
}

// newLabWith is newLab with the router running what opts add.
func newLabWith(t *testing.T, opts []netlab.FRROption, neighbors ...frrNeighbor) *lab {
	t.Helper()
	programs := netlab.FRRPrograms
	if len(opts) > 0 {
		programs = append(slices.Clone(programs), netlab.BFDPrograms...)
	}
	netlab.Require(t, programs...)
	speakerNS, err := netlab.NewNamespace(t)
	if err != nil {
		t.Fatal(err)
	}
	routerNS, err := netlab.NewNamespace(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlab.Connect(speakerNS, "eth0", routerNS, "eth0"); err != nil {
		t.Fatal(err)
	}
	for ns, addrs := range map[*netlab.Namespace][]string{speakerNS: speakerAddrs, routerNS: routerAddrs} {
		for _, a := range addrs {
			if err := ns.AddAddr("eth0", netip.MustParsePrefix(a)); err != nil {
				t.Fatal(err)
			}
		}
	}
	router, err := netlab.StartFRR(t, routerNS, frrConfig(neighbors), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("router logs:\n%s", router.Logs())
		}
	})
	return &lab{speakerNS: speakerNS, routerNS: routerNS, router: router}
}

// frrConfig configures the router: short timers, eBGP without policies, and graceful
// restart in helper mode (FRR's default).
func frrConfig(neighbors []frrNeighbor) string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults traditional\nhostname router\n!\nrouter bgp %d\n", routerASN)
	b.WriteString(" bgp router-id 10.0.0.1\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n timers bgp 3 9\n")
	for _, n := range neighbors {
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n", n.addr, n.asn)
		if n.password != "" {
			fmt.Fprintf(&b, " neighbor %s password %s\n", n.addr, n.password)
		}
		if n.bfdProfile != "" {
			fmt.Fprintf(&b, " neighbor %s bfd profile %s\n", n.addr, n.bfdProfile)
		}
	}
	for _, family := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, " address-family %s unicast\n", family)
		for _, n := range neighbors {
			if slices.Contains(n.families, family) {
				fmt.Fprintf(&b, "  neighbor %s activate\n", n.addr)
			}
		}
		b.WriteString(" exit-address-family\n")
	}
	return b.String()
}

// peer is a speaker's peer with the lab's defaults: eBGP, short timers.
func peer(name, addr, src string) config.Peer {
	p := config.Peer{
		Name:          name,
		MyASN:         speakerASN,
		ASN:           routerASN,
		Addr:          netip.MustParseAddr(addr),
		HoldTime:      9 * time.Second,
		KeepaliveTime: 3 * time.Second,
	}
	if src != "" {
		p.SrcAddr = netip.MustParseAddr(src)
	}
	return p
}

// paths returns the router's paths for prefix, by the address of the neighbor they came from.
func (l *lab) paths(prefix string) (map[string]netlab.Path, error) {
	paths, err := l.router.Paths(netip.MustParsePrefix(prefix))
	if err != nil {
		return nil, err
	}
	byPeer := map[string]netlab.Path{}
	for _, p := range paths {
		byPeer[p.Peer.PeerID] = p
	}
	return byPeer, nil
}

// frrNeighborState is what the router says of its session with a neighbor.
type frrNeighborState struct {
	State string `json:"bgpState"` // e.g. "Established"
	// Established counts the times the session was established.
	Established int `json:"connectionsEstablished"`
}

// neighborState returns the router's state of its session with the neighbor addr.
func (l *lab) neighborState(addr string) (frrNeighborState, error) {
	var out map[string]frrNeighborState
	if err := l.router.VtyshJSON("show bgp neighbors "+addr+" json", &out); err != nil {
		return frrNeighborState{}, err
	}
	return out[addr], nil
}

// sessionState returns the router's BGP state for the neighbor addr, e.g. "Established".
func (l *lab) sessionState(addr string) (string, error) {
	n, err := l.neighborState(addr)
	return n.State, err
}
