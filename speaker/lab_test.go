// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/maglb/maglb/internal/netlab"
	"github.com/maglb/maglb/internal/promtext"
	"github.com/maglb/maglb/internal/testenv"
)

// newL2Lab is newBGPLab without a router: a namespace holding the bridge br0 (no address),
// and one namespace per node plugged into it with the node's address on eth0, 172.30.0.0/24.
// The nodes' speakers reach the test API server through their own loopback.
func newL2Lab(t testing.TB, nodes map[string]string) *bgpLab {
	t.Helper()
	netlab.Require(t, "ip")
	env := testenv.Get(t)
	sw, err := netlab.NewNamespace(t)
	if err != nil {
		t.Fatal(err)
	}
	must(t)(sw.Run("ip", "link", "add", "br0", "type", "bridge"))
	must(t)(sw.Run("ip", "link", "set", "br0", "up"))
	lab := &bgpLab{env: env, tor: sw, nodes: map[string]*netlab.Namespace{}}
	for name, addr := range nodes {
		ns := lab.plug(t, "p-"+name, addr)
		if err := netlab.Forward(t, ns, apiServerHostPort(t, env), apiServerHostPort(t, env)); err != nil {
			t.Fatal(err)
		}
		lab.nodes[name] = ns
		createNode(t, name, addr, nil)
	}
	return lab
}

// plug creates a namespace whose eth0, with addr/24, is a port (named port) of the lab's br0.
func (l *bgpLab) plug(t testing.TB, port, addr string) *netlab.Namespace {
	t.Helper()
	ns, err := netlab.NewNamespace(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlab.Connect(ns, "eth0", l.tor, port); err != nil {
		t.Fatal(err)
	}
	must(t)(l.tor.Run("ip", "link", "set", port, "master", "br0"))
	must(t)(ns.Run("ip", "addr", "add", addr+"/24", "dev", "eth0"))
	return ns
}

// setSysctls sets sysctls of ns, "key=value" each.
func setSysctls(t testing.TB, ns *netlab.Namespace, settings ...string) {
	t.Helper()
	for _, s := range settings {
		key, value, _ := strings.Cut(s, "=")
		if err := ns.SetSysctl(key, value); err != nil {
			t.Fatal(err)
		}
	}
}

// linkStat reads a counter of /sys/class/net/<dev>/statistics in ns.
func linkStat(t testing.TB, ns *netlab.Namespace, dev, name string) uint64 {
	t.Helper()
	out, err := ns.Run("cat", "/sys/class/net/"+dev+"/statistics/"+name)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// linkMAC returns the MAC address of dev in ns.
func linkMAC(t testing.TB, ns *netlab.Namespace, dev string) string {
	t.Helper()
	out, err := ns.Run("cat", "/sys/class/net/"+dev+"/address")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// speakerMetric scrapes the speaker of ns (on 127.0.0.1:7472) and returns the value of the
// sample of name whose labels include every one of labels ("key=value" each).
func speakerMetric(ns *netlab.Namespace, name string, labels ...string) (float64, error) {
	return metricOn(ns, 7472, name, labels...)
}

// metricOn is speakerMetric for the program serving its metrics on 127.0.0.1:port in ns.
func metricOn(ns *netlab.Namespace, port int, name string, labels ...string) (float64, error) {
	out, err := ns.Run("curl", "-sS", "--max-time", "5", fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return 0, err
	}
	return promtext.Value(out, name, labels...)
}
