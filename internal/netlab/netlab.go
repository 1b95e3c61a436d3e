// SPDX-License-Identifier: Apache-2.0

// Package netlab builds small networks of Linux network namespaces for tests and labs:
// namespaces, veth links, addresses, routes, sysctls, and FRR routers running inside them.
// Everything lives inside namespaces it creates; nothing touches the root namespace. Every
// constructor registers its undoing with a Cleaner, so a failing test still cleans up.
package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/maglb/maglb/internal/testenv"
)

// Cleaner registers functions to run when the caller is done, last registered first;
// testing.TB is one.
type Cleaner interface {
	Cleanup(func())
}

// Require skips tb unless it runs as root and every program is installed. Where the
// privileged tests must run (CI=true or MAGLB_REQUIRE_PRIVILEGED=1) it fails instead.
func Require(tb testing.TB, programs ...string) {
	tb.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, p := range append([]string{"ip"}, programs...) {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return
	}
	testenv.Unavailable(tb, "needs "+strings.Join(missing, ", "))
}

// Namespace is a network namespace this package created.
type Namespace struct {
	Name string
}

// NewNamespace creates a namespace with a unique name and its loopback up; it is deleted
// at cleanup. IPv6 duplicate address detection is off in it, so addresses (link-local ones
// included) are usable at once.
func NewNamespace(c Cleaner) (*Namespace, error) {
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return nil, err
	}
	ns := &Namespace{Name: "maglb-" + hex.EncodeToString(suffix)}
	if err := run("ip", "netns", "add", ns.Name); err != nil {
		return nil, err
	}
	c.Cleanup(func() { _ = run("ip", "netns", "delete", ns.Name) })
	if err := ns.ip("link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	for _, conf := range []string{"all", "default"} {
		if err := ns.SetSysctl("net.ipv6.conf."+conf+".accept_dad", "0"); err != nil {
			return nil, err
		}
	}
	return ns, nil
}

// Command returns a command that runs name inside the namespace. Its process is name's
// own (ip netns exec replaces itself), so its PID is the one to signal.
func (ns *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its output.
func (ns *Namespace) Run(name string, args ...string) (string, error) {
	out, err := ns.Command(context.Background(), name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns.Name, err, out)
	}
	return string(out), nil
}

// SetSysctl sets a sysctl of the namespace, e.g. "net.ipv4.ip_forward", "1".
func (ns *Namespace) SetSysctl(key, value string) error {
	_, err := ns.Run("sysctl", "-qw", key+"="+value)
	return err
}

// AddAddr adds addr to the interface dev.
func (ns *Namespace) AddAddr(dev string, addr netip.Prefix) error {
	return ns.ip("addr", "add", addr.String(), "dev", dev)
}

// AddRoute routes dst via the gateway via.
func (ns *Namespace) AddRoute(dst netip.Prefix, via netip.Addr) error {
	return ns.ip("route", "add", dst.String(), "via", via.String())
}

// Nexthops returns, sorted, the gateways of the namespace's kernel route to dst (an
// address or a prefix): one per next hop of a multipath route, none without a route.
func (ns *Namespace) Nexthops(dst netip.Prefix) ([]string, error) {
	family := "-4"
	if dst.Addr().Is6() {
		family = "-6"
	}
	out, err := ns.Run("ip", family, "-j", "route", "show", dst.String())
	if err != nil {
		return nil, err
	}
	var routes []struct {
		Gateway  string `json:"gateway"`
		Nexthops []struct {
			Gateway string `json:"gateway"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		return nil, fmt.Errorf("decoding the route to %s in %s: %w: %s", dst, ns.Name, err, out)
	}
	gateways := []string{}
	for _, r := range routes {
		if r.Gateway != "" {
			gateways = append(gateways, r.Gateway)
		}
		for _, n := range r.Nexthops {
			gateways = append(gateways, n.Gateway)
		}
	}
	slices.Sort(gateways)
	return slices.Compact(gateways), nil
}

func (ns *Namespace) ip(args ...string) error {
	return run("ip", append([]string{"-n", ns.Name}, args...)...)
}

// Connect links a and b with a veth pair, aDev in a and bDev in b, both up. The pair goes
// away with either namespace.
func Connect(a *Namespace, aDev string, b *Namespace, bDev string) error {
	if err := a.ip("link", "add", aDev, "type", "veth", "peer", "name", bDev, "netns", b.Name); err != nil {
		return err
	}
	if err := a.ip("link", "set", aDev, "up"); err != nil {
		return err
	}
	return b.ip("link", "set", bDev, "up")
}

func run(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}
