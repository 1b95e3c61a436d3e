// SPDX-License-Identifier: Apache-2.0

// Package datapath defines how the speaker programs the forwarding of VIP traffic. Two
// implementations exist: kubeproxy (announce only; kube-proxy DNATs, as upstream MetalLB) and
// ebpf (an XDP load balancer with Maglev hashing and IPIP/GUE encapsulation to the backends).
package datapath

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// Datapath forwards the traffic of a set of services.
type Datapath interface {
	// Sync makes the programmed state equal to want (idempotent; diff inside; safe to call
	// often). It programs every service it can: the ones it cannot are reported in a
	// *SyncError and left unprogrammed. Any other error leaves the state unknown.
	Sync(ctx context.Context, want []Service) error
	Close() error
}

// SyncError lists the services a Sync could not program, each with its reason; every other
// wanted service is programmed.
type SyncError struct {
	Services map[ServiceKey]error
}

func (e *SyncError) Error() string {
	keys := slices.SortedFunc(maps.Keys(e.Services), func(a, b ServiceKey) int { return strings.Compare(a.String(), b.String()) })
	msgs := make([]string, len(keys))
	for i, k := range keys {
		msgs[i] = fmt.Sprintf("%s: %v", k, e.Services[k])
	}
	return fmt.Sprintf("%d services not programmed: %s", len(keys), strings.Join(msgs, "; "))
}

// Failed returns the services of want that a Sync returning err left unprogrammed: those a
// *SyncError names, or all of them for any other error.
func Failed(err error, want []Service) map[ServiceKey]error {
	if err == nil {
		return nil
	}
	var syncErr *SyncError
	if errors.As(err, &syncErr) {
		return syncErr.Services
	}
	failed := make(map[ServiceKey]error, len(want))
	for _, s := range want {
		failed[s.Key()] = err
	}
	return failed
}

// StatsReader is implemented by datapaths that count packets, for the maglb_datapath_* metrics.
type StatsReader interface {
	Stats() (Stats, error)
}

// Protocol is the IP protocol of a service.
type Protocol uint8

// The protocols a service may use; the values are the IP protocol numbers.
const (
	TCP Protocol = 6
	UDP Protocol = 17
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return fmt.Sprintf("protocol(%d)", uint8(p))
}

// Encap is how packets travel from the load balancer to a backend.
type Encap uint8

const (
	// EncapIPIP wraps the packet in an outer IP header of the same family (4in4, 6in6).
	EncapIPIP Encap = iota
	// EncapGUE wraps it in IP, UDP and a GUE header.
	EncapGUE
)

func (e Encap) String() string {
	if e == EncapGUE {
		return "GUE"
	}
	return "IPIP"
}

// Backend is a target of a service. Weight is its share relative to the other backends of the
// service; 0 takes no new flows.
type Backend struct {
	Addr   netip.Addr
	Weight uint32
}

// ServiceKey identifies a service: traffic to VIP with Protocol and destination Port, where
// Port 0 means any port.
type ServiceKey struct {
	VIP      netip.Addr
	Protocol Protocol
	Port     uint16
}

func (k ServiceKey) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.VIP, k.Port), k.Protocol)
}

// Service is a VIP, protocol and port with its backends.
type Service struct {
	VIP      netip.Addr
	Protocol Protocol
	Port     uint16
	Backends []Backend
	Encap    Encap
}

// Key returns the service's identity.
func (s Service) Key() ServiceKey {
	return ServiceKey{VIP: s.VIP, Protocol: s.Protocol, Port: s.Port}
}

// Validate reports what makes s impossible to program: an invalid VIP, another protocol than
// TCP or UDP, an unknown encapsulation, or a backend that is invalid or of the other family.
func (s Service) Validate() error {
	var errs []error
	if !s.VIP.IsValid() || s.VIP.Is4In6() || s.VIP.Zone() != "" {
		errs = append(errs, fmt.Errorf("VIP %q is not a plain IPv4 or IPv6 address", s.VIP))
	}
	if s.Protocol != TCP && s.Protocol != UDP {
		errs = append(errs, fmt.Errorf("%s is neither TCP nor UDP", s.Protocol))
	}
	if s.Encap != EncapIPIP && s.Encap != EncapGUE {
		errs = append(errs, fmt.Errorf("unknown encapsulation %d", s.Encap))
	}
	for _, b := range s.Backends {
		if !b.Addr.IsValid() || b.Addr.Is4In6() || b.Addr.Zone() != "" || b.Addr.Is4() != s.VIP.Is4() {
			errs = append(errs, fmt.Errorf("backend %q is not a plain address of the VIP's family", b.Addr))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("service %s: %w", s.Key(), err)
	}
	return nil
}

// Counters count the packets of one service, or of all.
type Counters struct {
	Packets uint64
	Bytes   uint64
	// NewFlows counts flows that started here (TCP SYN, or UDP) and got a backend from the ring.
	NewFlows uint64
	// LRUMisses counts TCP packets in the middle of a flow that the connection table did not
	// know: flows moved here from another node, or evicted.
	LRUMisses uint64
	// Drops counts packets not forwarded, by reason.
	Drops map[string]uint64
}

// Stats are the counters of each programmed service and their sum over all services ever
// programmed since the datapath was first set up.
type Stats struct {
	Global   Counters
	Services map[ServiceKey]Counters
	// ServiceIDs is how many of the ServiceIDCapacity ids, one per programmed service, are in
	// use: a service past the capacity is not programmed.
	ServiceIDs, ServiceIDCapacity int
	// MapEntries counts what the kernel's maps hold, by map: entries of the VIP and VIP
	// address maps, backends and ring slots in use. They equal what the programmed services
	// need unless state leaked.
	MapEntries map[string]int
}
