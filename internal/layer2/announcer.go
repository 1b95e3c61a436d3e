// SPDX-License-Identifier: Apache-2.0

// Package layer2 announces service IPs on the local links, as upstream MetalLB's layer 2
// mode does: the node answers ARP requests (IPv4) and NDP neighbor solicitations (IPv6)
// for the IPs it owns with its interfaces' MACs, and tells the link when it takes an IP
// over. ChooseNode is the election that decides which node owns an IP.
package layer2

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"k8s.io/apimachinery/pkg/util/sets"
)

const (
	// rescanInterval is how often interfaces that appeared, disappeared or changed are
	// picked up between calls to SetAnnounced (upstream's interval).
	rescanInterval = 10 * time.Second
	// A newly announced IP is announced gratuitously gratuitousCount times,
	// gratuitousInterval apart, as upstream does: one packet is easily lost, and a
	// switch may not forward yet when the IP moves because a link just came up.
	gratuitousCount    = 5
	gratuitousInterval = 1100 * time.Millisecond
)

// ErrNoInterface is wrapped by SetAnnounced's error when none of the interfaces named for
// an IP exists. The IP is still announced, and answered once one of them appears.
var ErrNoInterface = errors.New("none of the named interfaces exists")

// Announcer answers address resolution for the IPs this node announces.
type Announcer struct {
	logger log.Logger
	// inNetns runs fn in the network namespace whose interfaces are announced on: the
	// current one in production, another one in tests.
	inNetns func(fn func() error) error
	stop    chan struct{}
	stopped chan struct{}

	mu         sync.Mutex
	closed     bool
	announced  map[netip.Addr][]string
	responders map[responderKey]responder
	// gratuitousLeft counts the gratuitous announcements still to send per IP and responder.
	gratuitousLeft map[gratuitousKey]int
	// periodicInterval, when positive, re-announces every answered IP gratuitously at this
	// interval (upstream's --gratuitous-arp-interval), for switches and hosts that forget.
	periodicInterval time.Duration
}

type gratuitousKey struct {
	responderKey
	ip netip.Addr
}

// New returns an Announcer that announces nothing until SetAnnounced. A positive
// periodicGratuitous re-announces every answered IP at that interval.
func New(logger log.Logger, periodicGratuitous time.Duration) *Announcer {
	return newAnnouncer(logger, func(fn func() error) error { return fn() }, periodicGratuitous)
}

func newAnnouncer(logger log.Logger, inNetns func(fn func() error) error, periodicGratuitous time.Duration) *Announcer {
	a := &Announcer{
		logger:           logger,
		inNetns:          inNetns,
		stop:             make(chan struct{}),
		stopped:          make(chan struct{}),
		announced:        map[netip.Addr][]string{},
		responders:       map[responderKey]responder{},
		gratuitousLeft:   map[gratuitousKey]int{},
		periodicInterval: periodicGratuitous,
	}
	go a.run()
	return a
}

// SetAnnounced makes the node answer for exactly these IPs, each on the named interfaces
// (nil or empty: every interface that is up, not loopback, not NOARP, has a MAC and is
// no bridge or bond member). IPs newly answered on an interface are announced there gratuitously.
// Everything that can be applied is applied; the error tells what could not, and wraps
// ErrNoInterface for IPs whose named interfaces are all missing.
func (a *Announcer) SetAnnounced(ips map[netip.Addr][]string) error {
	announced := make(map[netip.Addr][]string, len(ips))
	var errs []error
	for ip, names := range ips {
		if !ip.IsValid() {
			errs = append(errs, errors.New("invalid IP address"))
			continue
		}
		announced[ip.Unmap().WithZone("")] = slices.Clone(names)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("layer2 announcer is closed")
	}
	a.announced = announced
	exists, err := a.reconcileLocked()
	errs = append(errs, err)
	for ip, names := range announced {
		if exists != nil && len(names) > 0 && !slices.ContainsFunc(names, exists.Has) {
			errs = append(errs, fmt.Errorf("%w: %v for %s", ErrNoInterface, names, ip))
		}
	}
	return errors.Join(errs...)
}

// Close stops answering and releases every socket.
func (a *Announcer) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	close(a.stop)
	var errs []error
	for key, r := range a.responders {
		errs = append(errs, r.close())
		delete(a.responders, key)
	}
	a.mu.Unlock()
	<-a.stopped
	return errors.Join(errs...)
}

func (a *Announcer) run() {
	defer close(a.stopped)
	rescan := time.NewTicker(rescanInterval)
	defer rescan.Stop()
	repeat := time.NewTicker(gratuitousInterval)
	defer repeat.Stop()
	var periodic <-chan time.Time // nil: never
	if a.periodicInterval > 0 {
		ticker := time.NewTicker(a.periodicInterval)
		defer ticker.Stop()
		periodic = ticker.C
	}
	for {
		select {
		case <-a.stop:
			return
		case <-rescan.C:
			a.mu.Lock()
			if !a.closed {
				if _, err := a.reconcileLocked(); err != nil {
					level.Error(a.logger).Log("op", "rescanInterfaces", "error", err)
				}
			}
			a.mu.Unlock()
		case <-repeat.C:
			a.mu.Lock()
			a.repeatGratuitousLocked()
			a.mu.Unlock()
		case <-periodic:
			a.mu.Lock()
			for key, r := range a.responders {
				for ip := range r.targetIPs() {
					a.sendGratuitous(key, r, ip)
				}
			}
			a.mu.Unlock()
		}
	}
}

// reconcileLocked scans the interfaces and opens, updates and closes responders so that
// they answer for exactly the announced IPs. It returns the names of all interfaces, nil
// when they could not be listed.
func (a *Announcer) reconcileLocked() (sets.Set[string], error) {
	var exists sets.Set[string]
	var errs []error
	err := a.inNetns(func() error {
		links, names, err := scanLinks()
		if err != nil {
			return fmt.Errorf("listing interfaces: %w", err)
		}
		exists = names
		want := plan(links, a.announced)
		for key, r := range a.responders {
			if _, ok := want[key]; !ok {
				errs = append(errs, a.closeResponderLocked(key, r))
			}
		}
		for key, ips := range want {
			r, ok := a.responders[key]
			if !ok {
				if r, err = a.openResponder(key); err != nil {
					errs = append(errs, err)
					continue
				}
				a.responders[key] = r
			}
			added := ips.Difference(r.targetIPs())
			if err := r.setTargets(ips); err != nil {
				errs = append(errs, fmt.Errorf("%s responder on %s: %w", key.protocol, key.name, err))
			}
			// The first gratuitous announcement goes out now, the others on the repeat ticker.
			for ip := range added {
				a.sendGratuitous(key, r, ip)
				a.gratuitousLeft[gratuitousKey{key, ip}] = gratuitousCount - 1
			}
		}
		return nil
	})
	return exists, errors.Join(append(errs, err)...)
}

func (a *Announcer) openResponder(key responderKey) (responder, error) {
	logger := log.With(a.logger, "interface", key.name, "protocol", key.protocol)
	var r responder
	var err error
	if key.protocol == arpProtocol {
		r, err = newARPResponder(logger, key.netInterface())
	} else {
		r, err = newNDPResponder(logger, key.netInterface())
	}
	if err != nil {
		return nil, err
	}
	level.Info(logger).Log("event", "createResponder", "msg", "answering address resolution on interface")
	return r, nil
}

func (a *Announcer) closeResponderLocked(key responderKey, r responder) error {
	delete(a.responders, key)
	level.Info(a.logger).Log("event", "deleteResponder", "interface", key.name, "protocol", key.protocol, "msg", "stopped answering address resolution on interface")
	if err := r.close(); err != nil {
		return fmt.Errorf("closing %s responder on %s: %w", key.protocol, key.name, err)
	}
	return nil
}

// repeatGratuitousLocked sends the pending gratuitous announcements, dropping those whose
// IP is no longer answered on that interface.
func (a *Announcer) repeatGratuitousLocked() {
	for key, left := range a.gratuitousLeft {
		r, ok := a.responders[key.responderKey]
		if !ok || !r.targetIPs().Has(key.ip) || left == 0 {
			delete(a.gratuitousLeft, key)
			continue
		}
		a.gratuitousLeft[key] = left - 1
		a.sendGratuitous(key.responderKey, r, key.ip)
	}
}

func (a *Announcer) sendGratuitous(key responderKey, r responder, ip netip.Addr) {
	if err := r.sendGratuitous(ip); err != nil {
		level.Error(a.logger).Log("op", "gratuitousAnnounce", "interface", key.name, "protocol", key.protocol, "ip", ip, "error", err)
	}
}
