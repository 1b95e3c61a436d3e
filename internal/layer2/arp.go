// SPDX-License-Identifier: Apache-2.0

package layer2

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"k8s.io/apimachinery/pkg/util/sets"
)

// arpResponder answers ARP requests for IPv4 addresses on one interface with the
// interface's MAC. It reads ARP frames from a packet socket rather than through an
// arp.Client, which refuses interfaces without an IPv4 address of their own.
type arpResponder struct {
	*responderLoop
	mac  net.HardwareAddr
	conn *packet.Conn
	buf  []byte
}

func newARPResponder(logger log.Logger, ifi *net.Interface) (*arpResponder, error) {
	conn, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		return nil, fmt.Errorf("opening ARP socket on %s: %w", ifi.Name, err)
	}
	r := &arpResponder{
		responderLoop: newResponderLoop(logger, conn),
		mac:           ifi.HardwareAddr,
		conn:          conn,
		buf:           make([]byte, 128), // an ARP frame is 42 bytes plus padding
	}
	go r.run(r.handleNext)
	return r, nil
}

func (r *arpResponder) setTargets(ips sets.Set[netip.Addr]) error {
	r.setTargetIPs(ips)
	return nil
}

func (r *arpResponder) handleNext() error {
	n, _, err := r.conn.ReadFrom(r.buf)
	if err != nil {
		return err
	}
	var frame ethernet.Frame
	if frame.UnmarshalBinary(r.buf[:n]) != nil || frame.EtherType != ethernet.EtherTypeARP {
		return nil
	}
	var req arp.Packet
	if req.UnmarshalBinary(frame.Payload) != nil ||
		req.Operation != arp.OperationRequest ||
		req.ProtocolType != uint16(ethernet.EtherTypeIPv4) ||
		len(req.SenderHardwareAddr) != len(r.mac) ||
		!(bytes.Equal(frame.Destination, ethernet.Broadcast) || bytes.Equal(frame.Destination, r.mac)) ||
		!r.answers(req.TargetIP) {
		return nil
	}

	ip := req.TargetIP.String()
	requestsReceived.WithLabelValues(ip).Inc()
	level.Debug(r.logger).Log("op", "arpReply", "ip", ip, "senderIP", req.SenderIP, "senderMAC", req.SenderHardwareAddr)
	if err := r.send(arp.OperationReply, req.TargetIP, req.SenderHardwareAddr, req.SenderIP); err != nil {
		level.Error(r.logger).Log("op", "arpReply", "ip", ip, "error", err, "msg", "failed to send ARP reply")
		return nil
	}
	responsesSent.WithLabelValues(ip).Inc()
	return nil
}

// sendGratuitous broadcasts both a request and a reply claiming ip, as hosts differ in
// which of the two updates their ARP cache.
func (r *arpResponder) sendGratuitous(ip netip.Addr) error {
	for _, op := range []arp.Operation{arp.OperationRequest, arp.OperationReply} {
		if err := r.send(op, ip, ethernet.Broadcast, ip); err != nil {
			return fmt.Errorf("sending gratuitous ARP %s for %s: %w", op, ip, err)
		}
		gratuitousSent.WithLabelValues(ip.String()).Inc()
	}
	return nil
}

// send sends an ARP packet saying that senderIP is at this interface's MAC.
func (r *arpResponder) send(op arp.Operation, senderIP netip.Addr, targetMAC net.HardwareAddr, targetIP netip.Addr) error {
	pkt, err := arp.NewPacket(op, r.mac, senderIP, targetMAC, targetIP)
	if err != nil {
		return err
	}
	payload, err := pkt.MarshalBinary()
	if err != nil {
		return err
	}
	frame, err := (&ethernet.Frame{Destination: targetMAC, Source: r.mac, EtherType: ethernet.EtherTypeARP, Payload: payload}).MarshalBinary()
	if err != nil {
		return err
	}
	_, err = r.conn.WriteTo(frame, &packet.Addr{HardwareAddr: targetMAC})
	return err
}
