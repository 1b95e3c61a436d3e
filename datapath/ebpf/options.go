// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/go-kit/log"

	"github.com/maglb/maglb/datapath/maglev"
)

// XDPMode is how the XDP program attaches to the interface.
type XDPMode string

const (
	// XDPNative runs the program in the driver, before any socket buffer exists.
	XDPNative XDPMode = "native"
	// XDPGeneric runs it after the socket buffer is built: slower, works with every driver.
	XDPGeneric XDPMode = "generic"
)

// Defaults of Options; every node of a shard must use the same GUEPort, FlowHashSeed and
// Maglev config, so that they pick the same backends.
const (
	DefaultPinPath      = "/sys/fs/bpf/maglb"
	DefaultGUEPort      = 6080
	DefaultFlowHashSeed = 0x6d676c62 // "mglb"
	DefaultMaxServices  = 16384
	DefaultMaxBackends  = 65536
	DefaultMaxFlows     = 131072
)

// Outer source prefixes when the attached interface has no address of a family (and in tests
// without an interface). Their host bits carry a per-flow hash, so that receivers spread
// tunnelled flows over their queues; the backends never answer to these addresses.
var (
	DefaultTunnelSource4 = netip.MustParsePrefix("100.64.0.0/16")
	DefaultTunnelSource6 = netip.MustParsePrefix("fd6d:6167:6c62::/64")
)

// Options configure the XDP load balancer. The zero value of a field means its default.
type Options struct {
	// Interface is the uplink the program attaches to. Empty: the program is loaded and its
	// maps programmed, but it is not attached (tests, benchmarks).
	Interface string
	// XDPMode is native (the default) or generic.
	XDPMode XDPMode
	// PinPath is the bpffs directory for maps and the link, so that a restart adopts them.
	PinPath string
	// GUEPort is the UDP destination port of GUE packets.
	GUEPort uint16
	// Maglev fixes the seeds and table sizes of the rings.
	Maglev maglev.Config
	// FlowHashSeed seeds the flow hash that indexes the rings.
	FlowHashSeed uint32
	// TunnelSource4 and TunnelSource6 are the prefixes outer source addresses come from; the
	// host bits carry a per-flow hash (only the last 32 bits of an IPv6 prefix vary). Unset,
	// the source is the node's own address of that family on Interface, which backends can
	// allow by the node's address.
	TunnelSource4 netip.Prefix
	TunnelSource6 netip.Prefix
	// MaxServices, MaxBackends (at most 65536) and MaxFlows size the maps. Pinned maps of
	// other sizes are recreated empty (New logs it): Sync programs every service again.
	MaxServices int
	MaxBackends int
	MaxFlows    int
	// KeepOnClose leaves the program attached and the maps pinned on Close, for a restart.
	KeepOnClose bool
	// Logger receives what Sync changes; nil logs nothing.
	Logger log.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.XDPMode == "" {
		o.XDPMode = XDPNative
	}
	if o.XDPMode != XDPNative && o.XDPMode != XDPGeneric {
		return o, fmt.Errorf("xdp mode %q is neither %q nor %q", o.XDPMode, XDPNative, XDPGeneric)
	}
	if o.PinPath == "" {
		o.PinPath = DefaultPinPath
	}
	if o.GUEPort == 0 {
		o.GUEPort = DefaultGUEPort
	}
	if o.Maglev == (maglev.Config{}) {
		o.Maglev = maglev.DefaultConfig()
	}
	if err := o.Maglev.Validate(); err != nil {
		return o, err
	}
	if o.FlowHashSeed == 0 {
		o.FlowHashSeed = DefaultFlowHashSeed
	}
	if !o.TunnelSource4.IsValid() {
		o.TunnelSource4 = DefaultTunnelSource4
	}
	if !o.TunnelSource6.IsValid() {
		o.TunnelSource6 = DefaultTunnelSource6
	}
	if !o.TunnelSource4.Addr().Is4() || !o.TunnelSource6.Addr().Is6() || o.TunnelSource6.Addr().Is4In6() {
		return o, fmt.Errorf("tunnel source prefixes %s and %s must be IPv4 and IPv6", o.TunnelSource4, o.TunnelSource6)
	}
	if o.MaxServices == 0 {
		o.MaxServices = DefaultMaxServices
	}
	if o.MaxBackends == 0 {
		o.MaxBackends = DefaultMaxBackends
	}
	if o.MaxBackends > DefaultMaxBackends {
		return o, fmt.Errorf("at most %d backends: rings hold 16-bit ids", DefaultMaxBackends)
	}
	if o.MaxFlows == 0 {
		o.MaxFlows = DefaultMaxFlows
	}
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	return o, nil
}

// ParseTunnelSources reads per-flow outer source prefixes from flag values, each a prefix or
// a comma-separated list of them, at most one per family. An unset family's prefix is the
// zero Prefix.
func ParseTunnelSources(values []string) (v4, v6 netip.Prefix, err error) {
	for _, value := range values {
		for _, field := range strings.Split(value, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(field))
			if err != nil {
				return v4, v6, err
			}
			family := &v6
			if p.Addr().Is4() {
				family = &v4
			}
			if family.IsValid() {
				return v4, v6, fmt.Errorf("two tunnel source prefixes of one family: %s and %s", *family, p)
			}
			*family = p.Masked()
		}
	}
	return v4, v6, nil
}

// ValidInterfaceName tells whether Linux would accept name for a network interface, so that
// a misspelt flag is refused before anything is attached.
func ValidInterfaceName(name string) bool {
	return name != "" && len(name) <= 15 && name != "." && name != ".." && !strings.ContainsAny(name, "/: \t\n")
}
