// SPDX-License-Identifier: Apache-2.0

package reflector_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/bgp"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/netlab"
	"github.com/maglb/maglb/internal/reflector"
	"github.com/maglb/maglb/internal/testenv"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// GoBGP dials from its own goroutines, so each speaker and reflector runs in a child
// process inside its namespace: this test binary again, with childEnv set.
const childEnv = "MAGLB_REFLECTOR_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := netlab.ServeChild(newChild().serve); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type request struct {
	Op string // "speaker" or "reflector" (start as), then "routes" (speaker), "state" (reflector), "bfd" (either)
	// speaker
	RouterID netip.Addr
	Peers    []config.Peer
	Routes   []announce.Route
	// reflector
	Resources config.ClusterResources
	Nodes     []announce.Node
	Self      announce.Node
	Services  []announce.Service
}

type response struct {
	Error string
	BFD   []bgp.BFDStatus // of "bfd"
}

type child struct {
	speaker   *bgp.Speaker
	reflector *reflector.Reflector
}

func newChild() *child { return &child{} }

func (c *child) serve(req request) (any, bool) {
	if req.Op == "bfd" {
		return response{BFD: c.speaker.BFD()}, false
	}
	err := c.do(context.Background(), req)
	if err != nil {
		return response{Error: err.Error()}, false
	}
	return response{}, false
}

func (c *child) do(ctx context.Context, req request) (err error) {
	logger := log.NewLogfmtLogger(os.Stderr)
	switch req.Op {
	case "speaker":
		if c.speaker, err = bgp.New(logger, bgp.Options{ListenPort: -1}); err != nil {
			return err
		}
		return c.speaker.SetPeers(ctx, req.Peers, req.RouterID)
	case "routes":
		return c.speaker.SetRoutes(ctx, req.Routes)
	case "reflector":
		if c.speaker, err = bgp.New(logger, bgp.Options{Reflector: true}); err != nil {
			return err
		}
		c.reflector = reflector.New(logger, c.speaker)
		go c.reflector.Run(ctx)
		return nil
	case "state":
		cfg, err := config.For(req.Resources, config.ValidationFor("native"))
		if err != nil {
			return err
		}
		return c.reflector.SetState(ctx, reflector.State{Config: cfg, Nodes: req.Nodes, Self: req.Self, Services: req.Services})
	}
	return fmt.Errorf("unknown op %q", req.Op)
}

func call(t *testing.T, c *netlab.Child, req request) response {
	t.Helper()
	var resp response
	c.Call(req, &resp)
	if resp.Error != "" {
		t.Fatalf("%s: %s", req.Op, resp.Error)
	}
	return resp
}

// waitBFDUp waits until node's BFD sessions with each of peers are up: GoBGP starts a
// node's BFD a second after its last session change, and a session not yet up detects
// nothing.
func (l *lab) waitBFDUp(t *testing.T, node string, peers ...string) {
	t.Helper()
	c := l.speakers[node]
	if c == nil {
		c = l.reflectors[node]
	}
	testenv.Eventually(t, node+"'s BFD with "+strings.Join(peers, ", ")+" up", func() error {
		up := map[string]bool{}
		for _, s := range call(t, c, request{Op: "bfd"}).BFD {
			up[s.Addr] = s.Up
		}
		for _, p := range peers {
			for _, a := range nodeAddrs[p] {
				if !up[a] {
					return fmt.Errorf("with %s (%s) not up: %v", p, a, up)
				}
			}
		}
		return nil
	})
}

// The lab: the ToR's namespace holds the LAN's bridge; the LB nodes and the reflectors
// each have a namespace on it. One shard, gold, whose three nodes announce its VIPs.
const asn = 64512

var (
	torAddrs  = []string{"10.0.0.254", "fd00::fe"}
	lbNodes   = []string{"lb1", "lb2", "lb3"}
	reflNodes = []string{"rr-a", "rr-b"}
	nodeAddrs = map[string][]string{
		"lb1": {"10.0.0.1", "fd00::1"}, "lb2": {"10.0.0.2", "fd00::2"}, "lb3": {"10.0.0.3", "fd00::3"},
		"rr-a": {"10.0.0.101", "fd00::101"}, "rr-b": {"10.0.0.102", "fd00::102"},
	}
	aggregate4 = netip.MustParsePrefix("192.0.2.0/24")
	aggregate6 = netip.MustParsePrefix("2001:db8::/64")
	// VIPs: a (dual-stack) and b of ETP=Cluster, every node; l of ETP=Local, lb1 only.
	vipA, vipA6, vipB, vipL = "192.0.2.10", "2001:db8::10", "192.0.2.11", "192.0.2.20"
)

type lab struct {
	tor        *netlab.FRR
	torNS      *netlab.Namespace
	namespaces map[string]*netlab.Namespace // of the nodes
	speakers   map[string]*netlab.Child
	reflectors map[string]*netlab.Child
}

func newLab(t *testing.T) *lab {
	netlab.Require(t, netlab.FRRPrograms...)
	l := &lab{speakers: map[string]*netlab.Child{}, reflectors: map[string]*netlab.Child{}}
	var err error
	if l.torNS, err = netlab.NewNamespace(t); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{
		{"link", "add", "br0", "type", "bridge"}, {"link", "set", "br0", "up"},
		{"addr", "add", torAddrs[0] + "/24", "dev", "br0"}, {"addr", "add", torAddrs[1] + "/64", "dev", "br0"},
	} {
		if _, err := l.torNS.Run("ip", cmd...); err != nil {
			t.Fatal(err)
		}
	}
	namespaces := map[string]*netlab.Namespace{}
	l.namespaces = namespaces
	for i, node := range slices.Concat(lbNodes, reflNodes) {
		ns, err := netlab.NewNamespace(t)
		if err != nil {
			t.Fatal(err)
		}
		port := fmt.Sprintf("p%d", i)
		if err := netlab.Connect(ns, "eth0", l.torNS, port); err != nil {
			t.Fatal(err)
		}
		if _, err := l.torNS.Run("ip", "link", "set", port, "master", "br0"); err != nil {
			t.Fatal(err)
		}
		for _, a := range nodeAddrs[node] {
			bits := 24
			if strings.Contains(a, ":") {
				bits = 64
			}
			if err := ns.AddAddr("eth0", netip.PrefixFrom(netip.MustParseAddr(a), bits)); err != nil {
				t.Fatal(err)
			}
		}
		namespaces[node] = ns
	}
	l.tor, err = netlab.StartFRR(t, l.torNS, torConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ToR logs:\n%s", l.tor.Logs())
		}
	})
	res, nodes := cluster()
	for _, node := range reflNodes {
		c := netlab.StartChild(t, namespaces[node], childEnv, node)
		call(t, c, request{Op: "reflector"})
		self := nodes[slices.IndexFunc(nodes, func(n announce.Node) bool { return n.Name == node })]
		call(t, c, request{Op: "state", Resources: res, Nodes: nodes, Self: self, Services: services()})
		l.reflectors[node] = c
	}
	cfg, err := config.For(res, config.DontValidate)
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range lbNodes {
		c := netlab.StartChild(t, namespaces[node], childEnv, node)
		n := nodes[slices.IndexFunc(nodes, func(n announce.Node) bool { return n.Name == node })]
		// The sessions the speaker of this node opens, as the speaker picks them (their
		// selectors, which do not cross the pipe, have done their work).
		peers := announce.PeersOf(cfg, n.Labels)
		for i := range peers {
			peers[i].NodeSelectors = nil
		}
		call(t, c, request{Op: "speaker", Peers: peers, RouterID: n.Addrs[0]})
		l.speakers[node] = c
	}
	return l
}

// torConfig: the ToR peers over iBGP with both reflectors in both families, receives
// every path (FRR takes ADD-PATH by default) and installs up to 16 of them (ECMP).
func torConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "frr defaults traditional\nhostname tor\n!\nrouter bgp %d\n bgp router-id %s\n no bgp default ipv4-unicast\n timers bgp 3 9\n", asn, torAddrs[0])
	for _, node := range reflNodes {
		for _, a := range nodeAddrs[node] {
			fmt.Fprintf(&b, " neighbor %s remote-as %d\n", a, asn)
		}
	}
	for i, family := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, " address-family %s unicast\n  maximum-paths ibgp 16\n", family)
		for _, node := range reflNodes {
			fmt.Fprintf(&b, "  neighbor %s activate\n", nodeAddrs[node][i])
		}
		b.WriteString(" exit-address-family\n")
	}
	return b.String()
}

// cluster is the configuration in upstream's kinds: pool gold of shard gold; BGPPeers
// rr-a/rr-b (and -v6) from the LB nodes to the reflectors; tor/tor-v6 from the reflectors'
// nodes to the ToR; an advertisement of gold to every peer with a community and a local
// preference. The LB nodes are in shard gold.
func cluster() (config.ClusterResources, []announce.Node) {
	meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: "metallb-system"} }
	pool := maglbv1beta1.IPAddressPool{ObjectMeta: meta("gold")}
	pool.Spec.Addresses, pool.Spec.Shard = []string{aggregate4.String(), aggregate6.String()}, "gold"
	res := config.ClusterResources{
		Pools:       []maglbv1beta1.IPAddressPool{pool},
		BFDProfiles: []metallbv1beta1.BFDProfile{{ObjectMeta: meta("fast"), Spec: metallbv1beta1.BFDProfileSpec{ReceiveInterval: ptr(uint32(100)), TransmitInterval: ptr(uint32(100))}}},
		BGPAdvs: []metallbv1beta1.BGPAdvertisement{{ObjectMeta: meta("gold"),
			Spec: metallbv1beta1.BGPAdvertisementSpec{IPAddressPools: []string{"gold"}, Communities: []string{"64512:100"}, LocalPref: 200}}},
	}
	peer := func(name, addr, role string) metallbv1beta2.BGPPeer {
		return metallbv1beta2.BGPPeer{ObjectMeta: meta(name), Spec: metallbv1beta2.BGPPeerSpec{
			MyASN: asn, ASN: asn, Address: addr,
			HoldTime: &metav1.Duration{Duration: 9 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second},
			NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"role": role}}},
		}}
	}
	for i, suffix := range []string{"", "-v6"} {
		res.Peers = append(res.Peers, peer("tor"+suffix, torAddrs[i], "reflector"))
		for _, node := range reflNodes {
			// BFD between the LB nodes and the reflectors: a dead node leaves in well under the hold time.
			p := peer(node+suffix, nodeAddrs[node][i], "lb")
			p.Spec.BFDProfile = "fast"
			res.Peers = append(res.Peers, p)
		}
	}
	var nodes []announce.Node
	for _, name := range slices.Concat(lbNodes, reflNodes) {
		labels := map[string]string{"role": "reflector"}
		if slices.Contains(lbNodes, name) {
			labels = map[string]string{"role": "lb", "maglb.io/shard-gold": ""}
		}
		n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		an := announce.Node{Name: name, Labels: labels, Live: true}
		for _, a := range nodeAddrs[name] {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
			an.Addrs = append(an.Addrs, netip.MustParseAddr(a))
		}
		res.Nodes = append(res.Nodes, n)
		nodes = append(nodes, an)
	}
	return res, nodes
}

func services() []announce.Service {
	ips := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	return []announce.Service{
		{Key: "default/a", Pool: "gold", IPs: ips(vipA, vipA6)},
		{Key: "default/b", Pool: "gold", IPs: ips(vipB)},
		{Key: "default/l", Pool: "gold", IPs: ips(vipL), LocalTraffic: true},
	}
}

func ptr[T any](v T) *T { return &v }

// announce makes each LB node's speaker announce what the speaker would: the ETP=Cluster
// VIPs everywhere, the ETP=Local one only on lb1, its one node with an endpoint.
func (l *lab) announce(t *testing.T) {
	for _, node := range lbNodes {
		vips := []string{vipA, vipA6, vipB}
		if node == "lb1" {
			vips = append(vips, vipL)
		}
		var routes []announce.Route
		for _, v := range vips {
			a := netip.MustParseAddr(v)
			routes = append(routes, announce.Route{Prefix: netip.PrefixFrom(a, a.BitLen())})
		}
		call(t, l.speakers[node], request{Op: "routes", Routes: routes})
	}
}

// rib is the ToR's BGP table of a family: prefix → its paths.
func (l *lab) rib(family string) (map[string][]netlab.Path, error) {
	var out struct {
		Routes map[string][]netlab.Path `json:"routes"`
	}
	err := l.tor.VtyshJSON("show bgp "+family+" unicast json", &out)
	return out.Routes, err
}

// via is a path at the ToR: the reflector it came from and its next hop.
type via struct{ peer, nextHop string }

// paths returns the ToR's paths of prefix, checking their attributes.
func (l *lab) paths(prefix netip.Prefix) ([]via, error) {
	paths, err := l.tor.Paths(prefix)
	if err != nil {
		return nil, err
	}
	var got []via
	for _, p := range paths {
		if !p.Valid || p.Community.String != "64512:100" || p.LocalPref == nil || *p.LocalPref != 200 || len(p.Nexthops) == 0 {
			return nil, fmt.Errorf("path of %s: %+v", prefix, p)
		}
		got = append(got, via{p.Peer.PeerID, p.Nexthops[0].IP})
	}
	slices.SortFunc(got, func(a, b via) int { return strings.Compare(a.peer+a.nextHop, b.peer+b.nextHop) })
	return got, nil
}

// want lists the paths from each reflector (its session of prefix's family) through each
// of nodes (their address of that family).
func want(prefix netip.Prefix, reflectors []string, nodes ...string) []via {
	var w []via
	family := 0
	if prefix.Addr().Is6() {
		family = 1
	}
	for _, r := range reflectors {
		for _, n := range nodes {
			w = append(w, via{nodeAddrs[r][family], nodeAddrs[n][family]})
		}
	}
	slices.SortFunc(w, func(a, b via) int { return strings.Compare(a.peer+a.nextHop, b.peer+b.nextHop) })
	return w
}

func (l *lab) waitPaths(t *testing.T, prefix netip.Prefix, w []via) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("the ToR's paths of %s: %v", prefix, w), func() error {
		got, err := l.paths(prefix)
		if err != nil {
			return err
		}
		if !slices.Equal(got, w) {
			return fmt.Errorf("paths %v", got)
		}
		return nil
	})
}

func TestTwoReflectorsAggregatePerShard(t *testing.T) {
	l := newLab(t)
	l.announce(t)
	both := reflNodes
	l.waitPaths(t, aggregate4, want(aggregate4, both, lbNodes...))
	l.waitPaths(t, aggregate6, want(aggregate6, both, lbNodes...))
	// ETP=Local, served by lb1 alone: its host route, through lb1 only.
	hostL := netip.MustParsePrefix(vipL + "/32")
	l.waitPaths(t, hostL, want(hostL, both, "lb1"))
	// No host route of an aggregated VIP reaches the ToR.
	for _, family := range []string{"ipv4", "ipv6"} {
		rib, err := l.rib(family)
		if err != nil {
			t.Fatal(err)
		}
		var prefixes []string
		for p := range rib {
			prefixes = append(prefixes, p)
		}
		slices.Sort(prefixes)
		wantPrefixes := map[string][]string{"ipv4": {aggregate4.String(), hostL.String()}, "ipv6": {aggregate6.String()}}[family]
		if !slices.Equal(prefixes, wantPrefixes) {
			t.Errorf("the ToR's %s table holds %v, want %v", family, prefixes, wantPrefixes)
		}
	}
	// The ToR forwards the aggregate over every node (ECMP).
	testenv.Eventually(t, "the ToR's kernel routes over lb1..lb3", func() error {
		for i, prefix := range []netip.Prefix{aggregate4, aggregate6} {
			hops, err := l.torNS.Nexthops(prefix)
			var w []string
			for _, n := range lbNodes {
				w = append(w, nodeAddrs[n][i])
			}
			if err != nil || !slices.Equal(hops, w) {
				return fmt.Errorf("%s via %v (%v), want %v", prefix, hops, err, w)
			}
		}
		return nil
	})

	// An LB node's session goes down (its speaker dies): its paths leave at once.
	l.speakers["lb3"].Kill()
	l.waitPaths(t, aggregate4, want(aggregate4, both, "lb1", "lb2"))
	l.waitPaths(t, aggregate6, want(aggregate6, both, "lb1", "lb2"))

	// A node withdrawing the shard's VIPs leaves too.
	call(t, l.speakers["lb2"], request{Op: "routes"})
	l.waitPaths(t, aggregate4, want(aggregate4, both, "lb1"))

	// One reflector dies: the ToR keeps every path from the other.
	call(t, l.speakers["lb2"], request{Op: "routes", Routes: []announce.Route{
		{Prefix: netip.MustParsePrefix(vipA + "/32")}, {Prefix: netip.MustParsePrefix(vipA6 + "/128")}, {Prefix: netip.MustParsePrefix(vipB + "/32")},
	}})
	l.waitPaths(t, aggregate4, want(aggregate4, both, "lb1", "lb2"))
	l.waitPaths(t, aggregate6, want(aggregate6, both, "lb1", "lb2"))
	l.reflectors["rr-a"].Kill()
	l.waitPaths(t, aggregate4, want(aggregate4, []string{"rr-b"}, "lb1", "lb2"))
	l.waitPaths(t, aggregate6, want(aggregate6, []string{"rr-b"}, "lb1", "lb2"))
	l.waitPaths(t, hostL, want(hostL, []string{"rr-b"}, "lb1"))

	// An LB node goes dark (every packet dropped, its sessions never closed): BFD takes it
	// out, long before the 9 s hold time would.
	l.waitBFDUp(t, "lb2", "rr-b")
	l.waitBFDUp(t, "rr-b", "lb2")
	dark := time.Now()
	if _, err := l.namespaces["lb2"].Run("nft", "add table inet dark; "+
		"add chain inet dark in { type filter hook input priority 0; policy drop; }; "+
		"add chain inet dark out { type filter hook output priority 0; policy drop; }"); err != nil {
		t.Fatal(err)
	}
	for {
		// Until BFD takes it out, the dark node's path may show at the ToR as invalid (its
		// next hop no longer resolves): an error here is a state on the way, not a failure.
		got, err := l.paths(aggregate4)
		if err == nil && slices.Equal(got, want(aggregate4, []string{"rr-b"}, "lb1")) {
			break
		}
		if time.Since(dark) > 5*time.Second {
			t.Fatalf("the dark node's path still at the ToR after %v: %v (%v)", time.Since(dark), got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the dark node's path left the ToR %v after it went dark (BFD 100 ms × 3)", time.Since(dark))
}

// The LB nodes' BFD with the reflectors fails again and again under the reflectors' feet
// (their BFD packets dropped past the detection time, then let through): each time both
// ends of every session reset it, and the session comes back. The reflectors must keep
// answering: every node's path returns after every round. Both ends resetting at once is
// what wedged a reflector whose clients were GoBGP dynamic neighbors (see bgp.Clients).
func TestClientBFDFlaps(t *testing.T) {
	l := newLab(t)
	l.announce(t)
	all := want(aggregate4, reflNodes, lbNodes...)
	l.waitPaths(t, aggregate4, all)
	for round := range 5 {
		for _, node := range lbNodes {
			l.waitBFDUp(t, node, reflNodes...)
		}
		for _, node := range lbNodes {
			if _, err := l.namespaces[node].Run("nft", "add table inet bfdflap; "+
				"add chain inet bfdflap in { type filter hook input priority 0; udp dport 3784 drop; }; "+
				"add chain inet bfdflap out { type filter hook output priority 0; udp dport 3784 drop; }"); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(500 * time.Millisecond) // past the 300 ms detection time
		for _, node := range lbNodes {
			if _, err := l.namespaces[node].Run("nft", "delete table inet bfdflap"); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("round %d", round+1)
		l.waitPaths(t, aggregate4, all)
	}
}
