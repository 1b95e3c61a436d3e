// SPDX-License-Identifier: Apache-2.0

// Package backendagent is the backend agent (`speaker --role=backend-agent`), which runs on
// every node the load balancers tunnel traffic to. It attaches the decapsulation program to
// the node's uplinks and keeps two of its maps current: the node's own addresses (from
// netlink address updates, with a periodic resync) and the allowlist of tunnel sources (the
// load balancer nodes' InternalIPs and configured prefixes). Its maps and links are pinned,
// so decapsulation goes on while the agent restarts.
package backendagent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/maglb/maglb/datapath/ebpf"
)

// DefaultResync is how often the agent rereads everything, in case an update was lost.
const DefaultResync = 30 * time.Second

// Config configures an Agent.
type Config struct {
	// Interfaces the decapsulation program attaches to; empty: those of the default routes.
	Interfaces []string
	// DecapHook is where the program attaches; see decapHook for ebpf.DecapAuto.
	DecapHook ebpf.DecapHook
	XDPMode   ebpf.XDPMode
	GUEPort   uint16
	PinPath   string
	// KeepOnExit leaves the program attached and its maps pinned when the agent stops.
	KeepOnExit bool
	// TunnelSources are allowed whatever the nodes.
	TunnelSources []netip.Prefix
	// LBNodes returns the load balancer nodes, whose InternalIPs are allowed; nil: none.
	LBNodes func() ([]*corev1.Node, error)
	// NodesChanged signals that LBNodes has changed.
	NodesChanged <-chan struct{}
	// Resync is the period of full resyncs; zero means DefaultResync.
	Resync time.Duration
	Logger log.Logger
}

// Agent keeps the decapsulation program of one node current.
type Agent struct {
	cfg     Config
	decap   *ebpf.Decap
	pins    *ebpf.PinGuard
	handle  *netlink.Handle
	updates chan netlink.AddrUpdate
	stop    chan struct{}

	mu      sync.Mutex
	synced  bool
	lastErr error
	sources []netip.Prefix
	addrs   []netip.Addr
}

// New attaches the decapsulation program in the caller's network namespace (netlink sockets
// stay there for the agent's life) with the node's current addresses and allowlist.
func New(cfg Config) (*Agent, error) {
	if cfg.Resync == 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.DecapHook == "" {
		cfg.DecapHook = ebpf.DecapAuto
	}
	if cfg.Logger == nil {
		cfg.Logger = log.NewNopLogger()
	}
	handle, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, handle: handle, updates: make(chan netlink.AddrUpdate, 64), stop: make(chan struct{})}
	// Subscribed before the first listing, so that no change falls in between.
	if err := netlink.AddrSubscribeWithOptions(a.updates, a.stop, netlink.AddrSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case <-a.stop: // closing the subscription fails its last receive
			default:
				level.Warn(cfg.Logger).Log("op", "addresses", "msg", "address updates", "error", err)
			}
		},
	}); err != nil {
		handle.Close()
		return nil, fmt.Errorf("subscribing to address updates: %w", err)
	}
	if len(cfg.Interfaces) == 0 {
		if cfg.Interfaces, err = defaultRouteInterfaces(handle); err != nil {
			a.closeNetlink()
			return nil, err
		}
	}
	addrs, sources, err := a.wanted()
	if err != nil {
		a.closeNetlink()
		return nil, err
	}
	hook, err := a.decapHook(addrs)
	if err != nil {
		a.closeNetlink()
		return nil, err
	}
	a.decap, err = ebpf.NewDecap(ebpf.DecapOptions{
		Interfaces: cfg.Interfaces, Hook: hook, XDPMode: cfg.XDPMode, PinPath: cfg.PinPath, GUEPort: cfg.GUEPort,
		Addresses: addrs, AllowedSources: sources, KeepOnClose: cfg.KeepOnExit,
	})
	if err != nil {
		a.closeNetlink()
		return nil, fmt.Errorf("attaching the decapsulation program to %v: %w", cfg.Interfaces, err)
	}
	a.pins = ebpf.NewPinGuard(a.decap.RestorePins, cfg.Logger)
	a.record(addrs, sources, nil)
	level.Info(cfg.Logger).Log("op", "startup", "msg", "decapsulating", "interfaces", fmt.Sprint(cfg.Interfaces),
		"hooks", fmt.Sprint(a.decap.Hooks()), "xdpMode", cfg.XDPMode, "guePort", cfg.GUEPort, "addresses", fmt.Sprint(addrs), "allowedSources", fmt.Sprint(sources))
	return a, nil
}

// decapHook resolves the configured hook with the node's addresses and the LB nodes.
func (a *Agent) decapHook(addrs []netip.Addr) (ebpf.DecapHook, error) {
	var nodes []*corev1.Node
	if a.cfg.DecapHook == ebpf.DecapAuto && a.cfg.LBNodes != nil {
		var err error
		if nodes, err = a.cfg.LBNodes(); err != nil {
			return "", fmt.Errorf("listing the load balancer nodes: %w", err)
		}
	}
	return decapHook(a.cfg.DecapHook, addrs, nodes), nil
}

// decapHook is ebpf.DecapTCX for ebpf.DecapAuto on a node that is one of the load balancers
// (one of its addresses is an LB node's InternalIP): its speaker's XDP program needs the XDP
// hook, and may attach after the agent. Otherwise the hook is left as asked; ebpf.DecapAuto
// then still picks TCX on an interface whose XDP hook is taken.
func decapHook(hook ebpf.DecapHook, addrs []netip.Addr, lbNodes []*corev1.Node) ebpf.DecapHook {
	if hook != ebpf.DecapAuto {
		return hook
	}
	for _, p := range allowedSources(nil, lbNodes) {
		if slices.Contains(addrs, p.Addr()) {
			return ebpf.DecapTCX
		}
	}
	return hook
}

// Stats reads the decapsulation counters.
func (a *Agent) Stats() (ebpf.DecapCounters, error) { return a.decap.Stats() }

// PinMetrics are the metrics of the guard of the decapsulation program's pins.
func (a *Agent) PinMetrics() prometheus.Collector { return a.pins }

// Healthy reports the error of the last sync, if any.
func (a *Agent) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastErr
}

// Run keeps the maps current until ctx ends, then releases the program (detaching it
// unless KeepOnExit is set).
func (a *Agent) Run(ctx context.Context) error {
	defer a.closeNetlink()
	go a.pins.Run(ctx)
	ticker := time.NewTicker(a.cfg.Resync)
	defer ticker.Stop()
	for {
		a.sync()
		select {
		case <-ctx.Done():
			return a.decap.Close()
		case <-a.cfg.NodesChanged:
		case <-ticker.C:
		case _, ok := <-a.updates:
			if !ok {
				// The subscription broke; the ticker's resyncs keep addresses current.
				level.Warn(a.cfg.Logger).Log("op", "addresses", "msg", "address updates stopped; resyncing periodically only")
				a.updates = nil
			}
			a.drainUpdates()
		}
	}
}

// drainUpdates drops queued address updates: one sync covers them all.
func (a *Agent) drainUpdates() {
	for {
		select {
		case _, ok := <-a.updates:
			if !ok {
				a.updates = nil
				return
			}
		default:
			return
		}
	}
}

func (a *Agent) sync() {
	addrs, sources, err := a.wanted()
	if err == nil {
		err = errors.Join(a.decap.SetAddresses(addrs), a.decap.SetAllowedSources(sources))
	}
	a.record(addrs, sources, err)
}

// wanted lists the node's addresses and the allowlist.
func (a *Agent) wanted() ([]netip.Addr, []netip.Prefix, error) {
	list, err := a.handle.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("listing addresses: %w", err)
	}
	var addrs []netip.Addr
	for _, l := range list {
		if addr, ok := netip.AddrFromSlice(l.IP); ok {
			addrs = append(addrs, addr)
		}
	}
	var nodes []*corev1.Node
	if a.cfg.LBNodes != nil {
		if nodes, err = a.cfg.LBNodes(); err != nil {
			return nil, nil, fmt.Errorf("listing the load balancer nodes: %w", err)
		}
	}
	return nodeAddresses(addrs), allowedSources(a.cfg.TunnelSources, nodes), nil
}

// record keeps the outcome of a sync and logs what changed.
func (a *Agent) record(addrs []netip.Addr, sources []netip.Prefix, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		if a.lastErr == nil || a.lastErr.Error() != err.Error() {
			level.Error(a.cfg.Logger).Log("op", "sync", "msg", "keeping the decapsulation maps current", "error", err)
		}
		a.lastErr = err
		return
	}
	a.lastErr = nil
	if a.synced && !slices.Equal(addrs, a.addrs) {
		level.Info(a.cfg.Logger).Log("op", "addresses", "msg", "node addresses changed", "addresses", fmt.Sprint(addrs))
	}
	if a.synced && !slices.Equal(sources, a.sources) {
		level.Info(a.cfg.Logger).Log("op", "allowlist", "msg", "allowed tunnel sources changed", "allowedSources", fmt.Sprint(sources))
	}
	a.synced, a.addrs, a.sources = true, addrs, sources
}

func (a *Agent) closeNetlink() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	a.handle.Close()
}

// defaultRouteInterfaces names the interfaces of the default routes of both families,
// multipath next hops included.
func defaultRouteInterfaces(handle *netlink.Handle) ([]string, error) {
	routes, err := handle.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	var names []string
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		indexes := []int{r.LinkIndex}
		for _, nh := range r.MultiPath {
			indexes = append(indexes, nh.LinkIndex)
		}
		for _, index := range indexes {
			if index == 0 {
				continue
			}
			l, err := handle.LinkByIndex(index)
			if err != nil {
				return nil, err
			}
			names = append(names, l.Attrs().Name)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		return nil, errors.New("no default route: name the uplinks with --backend-interfaces")
	}
	return names, nil
}
