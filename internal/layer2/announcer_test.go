// SPDX-License-Identifier: Apache-2.0

package layer2

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/maglb/maglb/internal/testenv"
)

// Addresses from the documentation ranges, inside the tests' own namespaces.
var (
	peerPrefix     = netip.MustParsePrefix("192.0.2.2/24")
	latePeerPrefix = netip.MustParsePrefix("198.51.100.2/24")
)

func TestARPAnswersAnnouncedIPsOnly(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	mac := l.connect(t, "l2a0", "l2p0", peerPrefix)
	a := l.newAnnouncer(t, 0)
	announced := netip.MustParseAddr("192.0.2.10")
	onOtherInterface := netip.MustParseAddr("192.0.2.11")
	notAnnounced := netip.MustParseAddr("192.0.2.12")

	err := a.SetAnnounced(map[netip.Addr][]string{announced: nil, onOtherInterface: {"elsewhere0"}})
	if !errors.Is(err, ErrNoInterface) {
		t.Fatalf("SetAnnounced naming a missing interface: got error %v, want one wrapping ErrNoInterface", err)
	}

	replies := askARP(t, l.arpPeer(t, "l2p0"), notAnnounced, onOtherInterface, announced)
	if got := replies[announced]; !bytes.Equal(got, mac) {
		t.Errorf("ARP reply for %s: MAC %s, want the responder's %s", announced, got, mac)
	}
	for _, ip := range []netip.Addr{notAnnounced, onOtherInterface} {
		if got, ok := replies[ip]; ok {
			t.Errorf("ARP reply for %s (%s), want none", ip, got)
		}
	}

	testenv.EventuallyTrue(t, "the response is counted", func() bool {
		return counter(t, "metallb_layer2_responses_sent", announced) == 1
	})
	for ip, want := range map[netip.Addr]float64{announced: 1, onOtherInterface: 0, notAnnounced: 0} {
		if got := counter(t, "metallb_layer2_requests_received", ip); got != want {
			t.Errorf("metallb_layer2_requests_received{ip=%q} = %v, want %v", ip, got, want)
		}
	}
}

func TestARPStopsAnsweringWithdrawnIPs(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	mac := l.connect(t, "l2a0", "l2p0", peerPrefix)
	a := l.newAnnouncer(t, 0)
	peer := l.arpPeer(t, "l2p0")
	withdrawn := netip.MustParseAddr("192.0.2.20")
	kept := netip.MustParseAddr("192.0.2.21")

	must(t, a.SetAnnounced(map[netip.Addr][]string{withdrawn: nil, kept: {"l2a0"}}))
	replies := askARP(t, peer, withdrawn, kept)
	if !bytes.Equal(replies[withdrawn], mac) || !bytes.Equal(replies[kept], mac) {
		t.Fatalf("ARP replies while both IPs are announced: %v, want %s for both", replies, mac)
	}

	must(t, a.SetAnnounced(map[netip.Addr][]string{kept: {"l2a0"}}))
	replies = askARP(t, peer, withdrawn, kept)
	if got, ok := replies[withdrawn]; ok {
		t.Errorf("ARP reply for withdrawn %s (%s), want none", withdrawn, got)
	}

	must(t, a.SetAnnounced(nil))
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.responders) != 0 {
		t.Errorf("responders left with nothing announced: %v", a.responders)
	}
}

func TestGratuitousARPForNewlyAnnouncedIPs(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	mac := l.connect(t, "l2a0", "l2p0", peerPrefix)
	a := l.newAnnouncer(t, 0)
	peer := l.arpPeer(t, "l2p0")
	first := netip.MustParseAddr("192.0.2.30")
	second := netip.MustParseAddr("192.0.2.31")

	must(t, a.SetAnnounced(map[netip.Addr][]string{first: nil}))
	awaitGratuitousARPs(t, peer, first, mac, gratuitousCount)
	testenv.EventuallyTrue(t, "the gratuitous ARPs are counted", func() bool {
		return counter(t, "metallb_layer2_gratuitous_sent", first) == 2*gratuitousCount
	})

	// Only the newly announced IP is announced again.
	must(t, a.SetAnnounced(map[netip.Addr][]string{first: nil, second: nil}))
	awaitGratuitousARPs(t, peer, second, mac, gratuitousCount)
	testenv.EventuallyTrue(t, "the gratuitous ARPs are counted", func() bool {
		return counter(t, "metallb_layer2_gratuitous_sent", second) == 2*gratuitousCount
	})
	if got := counter(t, "metallb_layer2_gratuitous_sent", first); got != 2*gratuitousCount {
		t.Errorf("metallb_layer2_gratuitous_sent{ip=%q} = %v after announcing another IP, want still %v", first, got, 2*gratuitousCount)
	}
}

// With a periodic interval (--gratuitous-arp-interval), announced IPs keep being announced
// after the takeover burst of gratuitousCount.
func TestPeriodicGratuitousARP(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	mac := l.connect(t, "l2a5", "l2p5", peerPrefix)
	a := l.newAnnouncer(t, 100*time.Millisecond)
	peer := l.arpPeer(t, "l2p5")
	ip := netip.MustParseAddr("192.0.2.32")

	must(t, a.SetAnnounced(map[netip.Addr][]string{ip: nil}))
	awaitGratuitousARPs(t, peer, ip, mac, 3*gratuitousCount)
	// The peer can see a packet before the announcer has counted it.
	testenv.EventuallyTrue(t, "the periodic gratuitous ARPs are counted", func() bool {
		return counter(t, "metallb_layer2_gratuitous_sent", ip) >= 2*3*gratuitousCount
	})
}

// The periodic rescan starts answering on an interface that appears after SetAnnounced.
func TestARPOnInterfaceCreatedLater(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	a := l.newAnnouncer(t, 0)
	ip := netip.MustParseAddr("198.51.100.10")

	if err := a.SetAnnounced(map[netip.Addr][]string{ip: {"l2late"}}); !errors.Is(err, ErrNoInterface) {
		t.Fatalf("SetAnnounced naming a missing interface: got error %v, want one wrapping ErrNoInterface", err)
	}
	mac := l.connect(t, "l2late", "l2p1", latePeerPrefix)
	peer := l.arpPeer(t, "l2p1")
	testenv.EventuallyTrue(t, "the new interface answers ARP", func() bool {
		replies, _ := tryARP(t, peer, time.Second, ip)
		return bytes.Equal(replies[ip], mac)
	})
}

func TestNDPAnswersAnnouncedIPsOnly(t *testing.T) {
	t.Parallel()
	l := newLab(t)
	mac := l.connect(t, "l2a0", "l2p0", netip.Prefix{})
	a := l.newAnnouncer(t, 0)
	peer := l.ndpPeer(t, "l2p0")
	peerMAC := interfaceIn(t, l.peerNS, "l2p0").HardwareAddr
	announced := netip.MustParseAddr("2001:db8::10")
	withdrawn := netip.MustParseAddr("2001:db8::11")
	// In the announced IP's solicited-node group, so its solicitations reach the responder.
	notAnnounced := netip.MustParseAddr("2001:db8:1::10")

	must(t, a.SetAnnounced(map[netip.Addr][]string{announced: nil, withdrawn: nil}))
	unsolicited := awaitAdvertisement(t, peer, announced, false)
	if !unsolicited.Override || !bytes.Equal(targetLinkLayer(unsolicited), mac) {
		t.Errorf("unsolicited advertisement %+v: want Override and target link-layer address %s", unsolicited, mac)
	}

	solicit(t, peer, peerMAC, notAnnounced, withdrawn, announced)
	answers := collectSolicitedAdvertisements(t, peer, announced)
	for ip, want := range map[netip.Addr]net.HardwareAddr{announced: mac, withdrawn: mac, notAnnounced: nil} {
		if got := answers[ip]; !bytes.Equal(got, want) {
			t.Errorf("neighbor advertisement for %s: %s, want %s", ip, got, want)
		}
	}
	testenv.EventuallyTrue(t, "the response is counted", func() bool {
		return counter(t, "metallb_layer2_responses_sent", announced) == 1
	})
	for ip, want := range map[netip.Addr]float64{announced: 1, notAnnounced: 0} {
		if got := counter(t, "metallb_layer2_requests_received", ip); got != want {
			t.Errorf("metallb_layer2_requests_received{ip=%q} = %v, want %v", ip, got, want)
		}
	}

	must(t, a.SetAnnounced(map[netip.Addr][]string{announced: nil}))
	solicit(t, peer, peerMAC, withdrawn, announced)
	if got, ok := collectSolicitedAdvertisements(t, peer, announced)[withdrawn]; ok {
		t.Errorf("neighbor advertisement for withdrawn %s (%s), want none", withdrawn, got)
	}
	groups := l.multicastGroups(t, "l2a0")
	for ip, want := range map[netip.Addr]bool{announced: true, withdrawn: false} {
		group, err := ndp.SolicitedNodeMulticast(ip)
		must(t, err)
		if groups.Has(group) != want {
			t.Errorf("l2a0 in solicited-node group %s of %s: %v, want %v", group, ip, !want, want)
		}
	}
}

// multicastGroups lists the IPv6 multicast groups that ifName, in the announcer's
// namespace, has joined, as the kernel reports them.
func (l *lab) multicastGroups(t *testing.T, ifName string) sets.Set[netip.Addr] {
	t.Helper()
	var table []byte
	must(t, inNetns(l.announcerNS)(func() (err error) {
		// thread-self: /proc/self/net shows the main thread's namespace, not this one's.
		table, err = os.ReadFile("/proc/thread-self/net/igmp6")
		return err
	}))
	groups := sets.New[netip.Addr]()
	for line := range strings.Lines(string(table)) {
		// index, interface, group in hex, users, flags, timer
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[1] != ifName {
			continue
		}
		raw, err := hex.DecodeString(fields[2])
		must(t, err)
		group, ok := netip.AddrFromSlice(raw)
		if !ok {
			t.Fatalf("bad group in /proc/net/igmp6: %q", line)
		}
		groups.Insert(group)
	}
	return groups
}

func (l *lab) arpPeer(t *testing.T, ifName string) *arp.Client {
	t.Helper()
	ifi := interfaceIn(t, l.peerNS, ifName)
	var c *arp.Client
	must(t, inNetns(l.peerNS)(func() (err error) {
		c, err = arp.Dial(ifi)
		return err
	}))
	t.Cleanup(func() { c.Close() })
	return c
}

// askARP requests each IP in turn and returns the replies received up to the reply for
// the last one, which must be announced. The responder answers in order, so by then any
// reply for an earlier IP has arrived.
func askARP(t *testing.T, c *arp.Client, ips ...netip.Addr) map[netip.Addr]net.HardwareAddr {
	t.Helper()
	replies, ok := tryARP(t, c, 10*time.Second, ips...)
	if !ok {
		t.Fatalf("no ARP reply for %s; replies: %v", ips[len(ips)-1], replies)
	}
	return replies
}

// tryARP is askARP that gives up after timeout, telling whether the last IP was answered.
func tryARP(t *testing.T, c *arp.Client, timeout time.Duration, ips ...netip.Addr) (map[netip.Addr]net.HardwareAddr, bool) {
	t.Helper()
	for _, ip := range ips {
		must(t, c.Request(ip))
	}
	must(t, c.SetReadDeadline(time.Now().Add(timeout)))
	last := ips[len(ips)-1]
	replies := map[netip.Addr]net.HardwareAddr{}
	for {
		pkt, frame, err := c.Read()
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			return replies, false
		}
		must(t, err)
		// Gratuitous replies go to broadcast; answers to us.
		if pkt.Operation != arp.OperationReply || !bytes.Equal(frame.Destination, c.HardwareAddr()) {
			continue
		}
		replies[pkt.SenderIP] = pkt.SenderHardwareAddr
		if pkt.SenderIP == last {
			return replies, true
		}
	}
}

// awaitGratuitousARPs waits for n requests and n replies that announce that ip is at mac.
func awaitGratuitousARPs(t *testing.T, c *arp.Client, ip netip.Addr, mac net.HardwareAddr, n int) {
	t.Helper()
	must(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
	seen := map[arp.Operation]int{}
	for seen[arp.OperationRequest] < n || seen[arp.OperationReply] < n {
		pkt, frame, err := c.Read()
		if err != nil {
			t.Fatalf("gratuitous ARPs for %s seen: %v; reading: %v", ip, seen, err)
		}
		if pkt.SenderIP != ip || pkt.TargetIP != ip || !bytes.Equal(frame.Destination, ethernet.Broadcast) {
			continue
		}
		if !bytes.Equal(pkt.SenderHardwareAddr, mac) {
			t.Fatalf("gratuitous ARP says %s is at %s, want %s", ip, pkt.SenderHardwareAddr, mac)
		}
		seen[pkt.Operation]++
	}
}

func (l *lab) ndpPeer(t *testing.T, ifName string) *ndp.Conn {
	t.Helper()
	ifi := interfaceIn(t, l.peerNS, ifName)
	var c *ndp.Conn
	must(t, inNetns(l.peerNS)(func() (err error) {
		c, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		return err
	}))
	t.Cleanup(func() { c.Close() })
	return c
}

// solicit sends a neighbor solicitation for each IP in turn, as a host resolving it does.
func solicit(t *testing.T, c *ndp.Conn, mac net.HardwareAddr, ips ...netip.Addr) {
	t.Helper()
	for _, ip := range ips {
		group, err := ndp.SolicitedNodeMulticast(ip)
		must(t, err)
		must(t, c.WriteTo(&ndp.NeighborSolicitation{
			TargetAddress: ip,
			Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}},
		}, nil, group))
	}
}

// collectSolicitedAdvertisements returns the target link-layer addresses of the
// solicited advertisements received up to the one for last.
func collectSolicitedAdvertisements(t *testing.T, c *ndp.Conn, last netip.Addr) map[netip.Addr]net.HardwareAddr {
	t.Helper()
	answers := map[netip.Addr]net.HardwareAddr{}
	for {
		na := awaitAdvertisement(t, c, netip.Addr{}, true)
		answers[na.TargetAddress] = targetLinkLayer(na)
		if na.TargetAddress == last {
			return answers
		}
	}
}

// awaitAdvertisement reads until a neighbor advertisement, solicited or not as asked, for
// target (any target when invalid).
func awaitAdvertisement(t *testing.T, c *ndp.Conn, target netip.Addr, solicited bool) *ndp.NeighborAdvertisement {
	t.Helper()
	must(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	for {
		msg, _, _, err := c.ReadFrom()
		if err != nil {
			t.Fatalf("waiting for a neighbor advertisement for %s: %v", target, err)
		}
		na, ok := msg.(*ndp.NeighborAdvertisement)
		if ok && na.Solicited == solicited && (!target.IsValid() || na.TargetAddress == target) {
			return na
		}
	}
}

func targetLinkLayer(na *ndp.NeighborAdvertisement) net.HardwareAddr {
	for _, o := range na.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
			return lla.Addr
		}
	}
	return nil
}
