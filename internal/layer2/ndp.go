// SPDX-License-Identifier: Apache-2.0

package layer2

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
	"k8s.io/apimachinery/pkg/util/sets"
)

// ndpResponder answers IPv6 neighbor solicitations on one interface with neighbor
// advertisements carrying the interface's MAC.
type ndpResponder struct {
	*responderLoop
	mac  net.HardwareAddr
	conn *ndp.Conn
	// joined are the solicited-node multicast groups joined, so that solicitations for
	// the targets reach this host. Only setTargets touches it.
	joined sets.Set[netip.Addr]
}

func newNDPResponder(logger log.Logger, ifi *net.Interface) (*ndpResponder, error) {
	// Binding to the link-local address also binds the socket to the interface.
	conn, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return nil, fmt.Errorf("opening NDP socket on %s: %w", ifi.Name, err)
	}
	var onlySolicitations ipv6.ICMPFilter
	onlySolicitations.SetAll(true)
	onlySolicitations.Accept(ipv6.ICMPTypeNeighborSolicitation)
	if err := errors.Join(
		conn.SetICMPFilter(&onlySolicitations),
		conn.SetControlMessage(ipv6.FlagHopLimit, true),
	); err != nil {
		conn.Close()
		return nil, fmt.Errorf("configuring NDP socket on %s: %w", ifi.Name, err)
	}
	r := &ndpResponder{
		responderLoop: newResponderLoop(logger, conn),
		mac:           ifi.HardwareAddr,
		conn:          conn,
		joined:        sets.New[netip.Addr](),
	}
	go r.run(r.handleNext)
	return r, nil
}

// setTargets joins the solicited-node groups of the new targets and leaves the ones no
// target needs any more. A group that failed to join is retried on the next call.
func (r *ndpResponder) setTargets(ips sets.Set[netip.Addr]) error {
	want := sets.New[netip.Addr]()
	for ip := range ips {
		group, err := ndp.SolicitedNodeMulticast(ip)
		if err != nil {
			return fmt.Errorf("solicited-node group of %s: %w", ip, err)
		}
		want.Insert(group)
	}
	var errs []error
	for group := range want.Difference(r.joined) {
		if err := r.conn.JoinGroup(group); err != nil {
			errs = append(errs, fmt.Errorf("joining %s: %w", group, err))
			continue
		}
		r.joined.Insert(group)
	}
	for group := range r.joined.Difference(want) {
		if err := r.conn.LeaveGroup(group); err != nil {
			errs = append(errs, fmt.Errorf("leaving %s: %w", group, err))
			continue
		}
		r.joined.Delete(group)
	}
	r.setTargetIPs(ips)
	return errors.Join(errs...)
}

func (r *ndpResponder) handleNext() error {
	msg, cm, src, err := r.conn.ReadFrom()
	if err != nil {
		return err
	}
	ns, ok := msg.(*ndp.NeighborSolicitation)
	// A hop limit below 255 means the solicitation crossed a router: forged (RFC 4861 7.1.1).
	if !ok || cm == nil || cm.HopLimit != ndp.HopLimit || !r.answers(ns.TargetAddress) {
		return nil
	}

	ip := ns.TargetAddress.String()
	requestsReceived.WithLabelValues(ip).Inc()
	level.Debug(r.logger).Log("op", "ndpReply", "ip", ip, "senderIP", src)
	// Duplicate address detection probes come from the unspecified address: the answer
	// goes to all nodes, unsolicited (RFC 4861 7.2.4).
	dst, solicited := src, true
	if src.WithZone("").IsUnspecified() {
		dst, solicited = netip.IPv6LinkLocalAllNodes(), false
	}
	if err := r.advertise(dst, ns.TargetAddress, solicited); err != nil {
		level.Error(r.logger).Log("op", "ndpReply", "ip", ip, "error", err, "msg", "failed to send neighbor advertisement")
		return nil
	}
	responsesSent.WithLabelValues(ip).Inc()
	return nil
}

func (r *ndpResponder) sendGratuitous(ip netip.Addr) error {
	if err := r.advertise(netip.IPv6LinkLocalAllNodes(), ip, false); err != nil {
		return fmt.Errorf("sending unsolicited neighbor advertisement for %s: %w", ip, err)
	}
	gratuitousSent.WithLabelValues(ip.String()).Inc()
	return nil
}

func (r *ndpResponder) advertise(dst, target netip.Addr, solicited bool) error {
	return r.conn.WriteTo(&ndp.NeighborAdvertisement{
		Solicited: solicited,
		// This node owns the IP now: its answer must replace whatever a neighbor cached
		// for the previous owner, solicited or not.
		Override:      true,
		TargetAddress: target,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: r.mac}},
	}, nil, dst)
}
