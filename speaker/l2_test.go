// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/netlab"
	"github.com/maglb/maglb/internal/nsexec"
	"github.com/maglb/maglb/internal/testenv"
)

// speakerLeaseDuration is the speakers' lease duration; a crashed speaker's lease expires
// between 3 and 4 s after the crash (renewals are a second apart).
const speakerLeaseDuration = 4 * time.Second

// TestL2Failover: two speakers and a client share an L2 segment. Exactly one speaker, the
// one upstream's election picks, answers ARP for an L2 VIP; when it is stopped (SIGTERM),
// the other takes over: it answers and tells the segment with gratuitous ARPs. Restarted,
// it takes the VIP back; crashed (SIGKILL), the other takes over once its lease expires.
func TestL2Failover(t *testing.T) {
	nodes := map[string]string{"lb1": "172.30.0.2", "lb2": "172.30.0.3"}
	lab := newL2Lab(t, nodes)
	clientNS := lab.plug(t, "p-client", "172.30.0.50")
	ensureNamespace(t, metallbNamespace)
	const service = "l2-web"
	vip := netip.MustParseAddr("172.30.0.100")
	create(t, pool("l2", "172.30.0.96/28", ""))
	create(t, &metallbv1beta1.L2Advertisement{
		ObjectMeta: metav1.ObjectMeta{Name: "l2", Namespace: metallbNamespace},
		Spec:       metallbv1beta1.L2AdvertisementSpec{IPAddressPools: []string{"l2"}},
	})
	svc := loadBalancer(t, service, vip.String(), "l2", "lb2")

	macs := map[string]net.HardwareAddr{}
	nodeOfMAC := map[string]string{}
	for name, ns := range lab.nodes {
		mac, err := net.ParseMAC(linkMAC(t, ns, "eth0"))
		if err != nil {
			t.Fatal(err)
		}
		macs[name], nodeOfMAC[mac.String()] = mac, name
	}
	peer := arpClient(t, clientNS, "eth0")

	// A speaker that crashed a while ago left its lease and a status object claiming the VIP:
	// the live speakers clean up after it.
	ghostLease, ghostStatus := crashedSpeaker(t, "ghost", service)

	stops := map[string]func(){}
	for name := range nodes {
		stops[name] = lab.startSpeaker(t, name)
	}
	waitForLeases(t, "lb1", "lb2")
	testenv.Eventually(t, "the crashed speaker's lease and status object deleted", func() error {
		c := testenv.Get(t).Client
		for _, obj := range []client.Object{ghostLease, ghostStatus} {
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); !apierrors.IsNotFound(err) {
				return fmt.Errorf("%T %s: %v", obj, obj.GetName(), err)
			}
		}
		return nil
	})

	// Both speakers are live: the election is upstream's, over both nodes.
	want := announce.ChooseNode(vip, []string{"lb1", "lb2"}, nil)
	owner := waitForL2Owner(t, service, want)
	testenv.Eventually(t, "ARP answers from "+owner+" alone", func() error {
		return answeredBy(peer, vip, macs[owner], nodeOfMAC)
	})
	t.Logf("%s owns %s: ARP answered by %s alone", owner, vip, macs[owner])

	survivor := "lb1"
	if owner == survivor {
		survivor = "lb2"
	}
	// Stop the owner while asking for the VIP every 25 ms and watching the segment.
	stopped := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		stops[owner]()
		stopped <- time.Since(start)
	}()
	took := watchTakeover(t, peer, vip, macs[survivor], nodeOfMAC, start, 30*time.Second)
	exited := <-stopped
	t.Logf("failover %s -> %s after SIGTERM: ARP answered by %s after %v, first gratuitous ARP after %v; the stopped speaker exited after %v",
		owner, survivor, survivor, took.answer.Round(time.Millisecond), took.gratuitous.Round(time.Millisecond), exited.Round(time.Millisecond))

	waitForL2Status(t, service, survivor)
	if nodes, err := l2StatusNodes(t, service); err == nil {
		t.Logf("ServiceL2Status objects of %s after the failover: on %v", service, nodes)
	}
	waitForEvent(t, svc, "nodeAssigned", fmt.Sprintf("announcing from node %q with protocol %q", survivor, "layer2"))
	if err := answeredBy(peer, vip, macs[survivor], nodeOfMAC); err != nil {
		t.Errorf("after the failover: %v", err)
	}

	// The owner comes back, is elected again and takes the VIP back. Then it crashes
	// (SIGKILL): it releases nothing, and the survivor takes over when its lease expires,
	// which no event tells: the survivor's pass at the lease's expiry sees it.
	crash := lab.startCrashable(t, owner, owner+"-again.log")
	testenv.Eventually(t, "ARP answered by "+owner+" alone again", func() error {
		return answeredBy(peer, vip, macs[owner], nodeOfMAC)
	})
	start = time.Now()
	crash()
	took = watchTakeover(t, peer, vip, macs[survivor], nodeOfMAC, start, 30*time.Second)
	t.Logf("failover %s -> %s after SIGKILL: ARP answered by %s after %v, first gratuitous ARP after %v (lease duration %v)",
		owner, survivor, survivor, took.answer.Round(time.Millisecond), took.gratuitous.Round(time.Millisecond), speakerLeaseDuration)
	if took.answer < speakerLeaseDuration-time.Second {
		t.Errorf("%s answered %v after the crash: before the crashed speaker's lease could expire", survivor, took.answer)
	}
}

// arpClient opens an ARP client on dev in ns, closed at cleanup.
func arpClient(t testing.TB, ns *netlab.Namespace, dev string) *arp.Client {
	t.Helper()
	var c *arp.Client
	if err := nsexec.Do(ns.Name, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// answeredBy asks once for ip and collects the answers for half a second after the first:
// they must all come from mac.
func answeredBy(c *arp.Client, ip netip.Addr, mac net.HardwareAddr, nodeOfMAC map[string]string) error {
	if err := c.Request(ip); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Second)
	var from []string
	for {
		if err := c.SetReadDeadline(deadline); err != nil {
			return err
		}
		pkt, frame, err := c.Read()
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			break
		}
		if err != nil {
			return err
		}
		if !isAnswer(c, pkt, frame, ip) {
			continue
		}
		if sender := pkt.SenderHardwareAddr.String(); !slices.Contains(from, sender) {
			from = append(from, sender)
		}
		if len(from) == 1 && deadline.Sub(time.Now()) > 500*time.Millisecond {
			deadline = time.Now().Add(500 * time.Millisecond)
		}
	}
	if len(from) != 1 || from[0] != mac.String() {
		names := make([]string, len(from))
		for i, m := range from {
			names[i] = fmt.Sprintf("%s (%s)", m, cmp.Or(nodeOfMAC[m], "unknown"))
		}
		return fmt.Errorf("ARP answers for %s from [%s], want %s (%s) alone", ip, strings.Join(names, ", "), mac, nodeOfMAC[mac.String()])
	}
	return nil
}

// isAnswer: an ARP reply for ip addressed to the client, not a gratuitous one.
func isAnswer(c *arp.Client, pkt *arp.Packet, frame *ethernet.Frame, ip netip.Addr) bool {
	return pkt.Operation == arp.OperationReply && pkt.SenderIP == ip && bytes.Equal(frame.Destination, c.HardwareAddr())
}

// isGratuitous: a broadcast ARP (request or reply) that says where ip is.
func isGratuitous(pkt *arp.Packet, frame *ethernet.Frame, ip netip.Addr) bool {
	return pkt.SenderIP == ip && pkt.TargetIP == ip && bytes.Equal(frame.Destination, ethernet.Broadcast)
}

type takeover struct {
	answer, gratuitous time.Duration
}

// watchTakeover asks for ip every 25 ms until mac has both answered and announced itself
// gratuitously, and returns when each first happened, from start.
func watchTakeover(t *testing.T, c *arp.Client, ip netip.Addr, mac net.HardwareAddr, nodeOfMAC map[string]string, start time.Time, timeout time.Duration) takeover {
	t.Helper()
	var took takeover
	nextRequest := start
	for took.answer == 0 || took.gratuitous == 0 {
		now := time.Now()
		if now.Sub(start) > timeout {
			t.Fatalf("within %v of the owner's stop, %s (%s) answered ARP for %s after %v and announced it gratuitously after %v (0: never)",
				timeout, mac, nodeOfMAC[mac.String()], ip, took.answer, took.gratuitous)
		}
		if !now.Before(nextRequest) {
			if err := c.Request(ip); err != nil {
				t.Fatal(err)
			}
			nextRequest = now.Add(25 * time.Millisecond)
		}
		if err := c.SetReadDeadline(nextRequest); err != nil {
			t.Fatal(err)
		}
		pkt, frame, err := c.Read()
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pkt.SenderHardwareAddr, mac) {
			continue
		}
		at := time.Since(start)
		if took.answer == 0 && isAnswer(c, pkt, frame, ip) {
			took.answer = at
		}
		if took.gratuitous == 0 && isGratuitous(pkt, frame, ip) {
			took.gratuitous = at
		}
	}
	return took
}

// crashedSpeaker creates what a speaker of node that crashed a minute ago leaves behind: its
// expired lease and a ServiceL2Status claiming service.
func crashedSpeaker(t testing.TB, node, service string) (*coordinationv1.Lease, *metallbv1beta1.ServiceL2Status) {
	t.Helper()
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "maglb-speaker-" + node, Namespace: metallbNamespace},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), LeaseDurationSeconds: ptr.To(int32(4)),
			RenewTime: &metav1.MicroTime{Time: time.Now().Add(-time.Minute)}},
	}
	create(t, lease)
	status := &metallbv1beta1.ServiceL2Status{ObjectMeta: metav1.ObjectMeta{
		Name: "l2-" + node, Namespace: metallbNamespace,
		Labels: map[string]string{"metallb.io/node": node, "metallb.io/service-name": service, "metallb.io/service-namespace": "default"},
	}}
	create(t, status)
	status.Status = metallbv1beta1.MetalLBServiceL2Status{Node: node, ServiceName: service, ServiceNamespace: "default"}
	if err := testenv.Get(t).Client.Status().Update(context.Background(), status); err != nil {
		t.Fatal(err)
	}
	return lease, status
}

// waitForLeases waits until every node's speaker holds its lease.
func waitForLeases(t testing.TB, nodes ...string) {
	t.Helper()
	for _, node := range nodes {
		testenv.Eventually(t, "the lease of "+node, func() error {
			var lease coordinationv1.Lease
			return testenv.Get(t).Client.Get(context.Background(), client.ObjectKey{Namespace: metallbNamespace, Name: "maglb-speaker-" + node}, &lease)
		})
	}
}

// waitForL2Owner waits until the service has exactly one ServiceL2Status, node's.
func waitForL2Owner(t testing.TB, service, node string) string {
	t.Helper()
	testenv.Eventually(t, "ServiceL2Status of "+service+" on "+node+" alone", func() error {
		owners, err := l2StatusNodes(t, service)
		if err != nil {
			return err
		}
		if len(owners) != 1 || owners[0] != node {
			return fmt.Errorf("ServiceL2Status on %v", owners)
		}
		return nil
	})
	return node
}

// waitForL2Status waits until node has a ServiceL2Status for the service.
func waitForL2Status(t testing.TB, service, node string) {
	t.Helper()
	testenv.Eventually(t, "ServiceL2Status of "+service+" on "+node, func() error {
		owners, err := l2StatusNodes(t, service)
		if err != nil {
			return err
		}
		if !slices.Contains(owners, node) {
			return fmt.Errorf("ServiceL2Status on %v", owners)
		}
		return nil
	})
}

// l2StatusNodes lists the nodes of the service's ServiceL2Status objects.
func l2StatusNodes(t testing.TB, service string) ([]string, error) {
	var list metallbv1beta1.ServiceL2StatusList
	if err := testenv.Get(t).Client.List(context.Background(), &list, client.InNamespace(metallbNamespace),
		client.MatchingLabels{"metallb.io/service-name": service}); err != nil {
		return nil, err
	}
	var nodes []string
	for _, s := range list.Items {
		if s.Labels["metallb.io/node"] != s.Status.Node {
			return nil, fmt.Errorf("%s: label metallb.io/node %q, status.node %q", s.Name, s.Labels["metallb.io/node"], s.Status.Node)
		}
		nodes = append(nodes, s.Status.Node)
	}
	return nodes, nil
}
