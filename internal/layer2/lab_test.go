// SPDX-License-Identifier: Apache-2.0

package layer2

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/maglb/maglb/internal/nsexec"
	"github.com/maglb/maglb/internal/testenv"
)

// lab is two network namespaces of the test's own, joined by veth pairs: the announcer
// answers in one, the test asks from the other, as a neighbor on the link would.
type lab struct {
	announcerNS netns.NsHandle
	peerNS      netns.NsHandle
}

func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "needs root for network namespaces")
	}
	l := &lab{announcerNS: newNetns(t), peerNS: newNetns(t)}
	for _, ns := range []netns.NsHandle{l.announcerNS, l.peerNS} {
		// Duplicate address detection would keep the link-local addresses tentative, and
		// unusable, for a second or more.
		must(t, inNetns(ns)(func() error {
			return errors.Join(
				os.WriteFile("/proc/sys/net/ipv6/conf/all/accept_dad", []byte("0"), 0),
				os.WriteFile("/proc/sys/net/ipv6/conf/default/accept_dad", []byte("0"), 0),
			)
		}))
	}
	return l
}

// newNetns creates an unnamed network namespace, gone once the test closes its handle and
// the sockets in it.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	must(t, err)
	defer orig.Close()
	ns, err := netns.New() // also moves this thread into it
	if restoreErr := netns.Set(orig); restoreErr != nil {
		panic(fmt.Sprintf("cannot return to the original network namespace: %v", restoreErr))
	}
	must(t, err)
	t.Cleanup(func() { ns.Close() })
	return ns
}

// inNetns returns a function that runs fn on a thread switched into ns: sockets fn opens
// belong to ns for good.
func inNetns(ns netns.NsHandle) func(fn func() error) error {
	return func(fn func() error) error { return nsexec.DoIn(ns, fn) }
}

// connect adds a veth pair, announcerIf in the announcer's namespace and peerIf in the
// peer's, both up, peerIf with peerAddr unless that is the zero Prefix. It waits until both ends have their IPv6
// link-local address and returns the announcer end's MAC.
func (l *lab) connect(t *testing.T, announcerIf, peerIf string, peerAddr netip.Prefix) net.HardwareAddr {
	t.Helper()
	announcer, err := netlink.NewHandleAt(l.announcerNS)
	must(t, err)
	defer announcer.Close()
	peer, err := netlink.NewHandleAt(l.peerNS)
	must(t, err)
	defer peer.Close()

	must(t, announcer.LinkAdd(&netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: announcerIf},
		PeerName:      peerIf,
		PeerNamespace: netlink.NsFd(l.peerNS),
	}))
	announcerLink, err := announcer.LinkByName(announcerIf)
	must(t, err)
	peerLink, err := peer.LinkByName(peerIf)
	must(t, err)
	if peerAddr.IsValid() {
		must(t, peer.AddrAdd(peerLink, &netlink.Addr{IPNet: prefixToIPNet(peerAddr)}))
	}
	must(t, announcer.LinkSetUp(announcerLink))
	must(t, peer.LinkSetUp(peerLink))
	for _, end := range []struct {
		h    *netlink.Handle
		link netlink.Link
	}{{announcer, announcerLink}, {peer, peerLink}} {
		testenv.EventuallyTrue(t, end.link.Attrs().Name+" has a usable link-local address", func() bool {
			addrs, err := end.h.AddrList(end.link, netlink.FAMILY_V6)
			must(t, err)
			for _, a := range addrs {
				if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
					return true
				}
			}
			return false
		})
	}
	return announcerLink.Attrs().HardwareAddr
}

func (l *lab) newAnnouncer(t *testing.T, periodicGratuitous time.Duration) *Announcer {
	t.Helper()
	a := newAnnouncer(log.NewLogfmtLogger(log.NewSyncWriter(testWriter{t})), inNetns(l.announcerNS), periodicGratuitous)
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("closing the announcer: %v", err)
		}
	})
	return a
}

// interfaceIn looks an interface up in ns.
func interfaceIn(t *testing.T, ns netns.NsHandle, name string) *net.Interface {
	t.Helper()
	var ifi *net.Interface
	must(t, inNetns(ns)(func() (err error) {
		ifi, err = net.InterfaceByName(name)
		return err
	}))
	return ifi
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// counter reads a layer2 counter for ip the way Prometheus scrapes it: from the
// controller-runtime registry, by name.
func counter(t *testing.T, name string, ip netip.Addr) float64 {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	must(t, err)
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
		for _, m := range family.GetMetric() {
			for _, label := range m.GetLabel() {
				if label.GetName() == "ip" && label.GetValue() == ip.String() {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testWriter sends the announcer's logs to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
