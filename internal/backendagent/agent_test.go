// SPDX-License-Identifier: Apache-2.0

package backendagent

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/bpf"
	dpebpf "github.com/maglb/maglb/datapath/ebpf"
	"github.com/maglb/maglb/internal/netlab"
	"github.com/maglb/maglb/internal/nsexec"
	"github.com/maglb/maglb/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

const lbLabel = "maglb.io/test-lb"

// TestAllowlistFollowsNodes runs the agent in a namespace against a real API server: the
// pinned allowlist follows the labelled Nodes' InternalIPs plus the configured prefix.
func TestAllowlistFollowsNodes(t *testing.T) {
	netlab.Require(t)
	env := testenv.Get(t)
	ns := backendNamespace(t)
	createNode(t, env, "agent-lb-a", map[string]string{lbLabel: "true"}, "10.1.0.1", "fd00:1::1")
	createNode(t, env, "agent-lb-b", nil, "10.1.0.2")
	createNode(t, env, "agent-worker", nil, "10.1.0.3")

	ctx, cancel := context.WithCancel(t.Context())
	changes := make(chan struct{}, 1)
	lbNodes, err := WatchNodes(ctx, env.Config, labels.SelectorFromSet(labels.Set{lbLabel: "true"}), changes)
	if err != nil {
		t.Fatal(err)
	}
	pins := pinPath(t)
	runAgent(t, ctx, cancel, ns, Config{
		Interfaces: []string{"eth0"}, XDPMode: dpebpf.XDPGeneric, PinPath: pins,
		TunnelSources: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		LBNodes:       lbNodes, NodesChanged: changes,
	})

	allowed := func() []string { return pinnedSources(t, pins) }
	eventually(t, "the labelled node and the configured prefix allowed", allowed,
		[]string{"10.1.0.1/32", "192.0.2.0/24", "fd00:1::1/128"})

	label(t, env, "agent-lb-b", map[string]string{lbLabel: "true"})
	eventually(t, "a node labelled later allowed", allowed,
		[]string{"10.1.0.1/32", "10.1.0.2/32", "192.0.2.0/24", "fd00:1::1/128"})

	if err := env.Client.Delete(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "agent-lb-a"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a deleted node no longer allowed", allowed, []string{"10.1.0.2/32", "192.0.2.0/24"})
}

// TestAddressesFollowTheNode: the node address map follows the namespace's addresses, from
// netlink updates (the periodic resync is out of reach).
func TestAddressesFollowTheNode(t *testing.T) {
	netlab.Require(t)
	ns := backendNamespace(t)
	pins := pinPath(t)
	ctx, cancel := context.WithCancel(t.Context())
	runAgent(t, ctx, cancel, ns, Config{
		Interfaces: []string{"eth0"}, XDPMode: dpebpf.XDPGeneric, PinPath: pins,
		TunnelSources: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
	})
	local := func() []string { return pinnedAddresses(t, pins) }
	eventually(t, "the node's addresses", local, []string{"10.77.0.2", "fd00:77::2"})
	must(t)(ns.Run("ip", "addr", "add", "10.77.1.2/24", "dev", "eth0"))
	eventually(t, "an added address", local, []string{"10.77.0.2", "10.77.1.2", "fd00:77::2"})
	must(t)(ns.Run("ip", "addr", "del", "10.77.0.2/24", "dev", "eth0"))
	eventually(t, "a removed address", local, []string{"10.77.1.2", "fd00:77::2"})
}

// TestRestartKeepsProgramAttached stops an agent that keeps its pins and starts another: the
// program stays attached while no agent runs, with its allowlist, and the new agent adopts
// the same link (it replaces the program in place). An agent that does not keep its pins
// detaches the program on exit.
func TestRestartKeepsProgramAttached(t *testing.T) {
	netlab.Require(t)
	ns := backendNamespace(t)
	pins := pinPath(t)
	cfg := Config{
		Interfaces: []string{"eth0"}, XDPMode: dpebpf.XDPGeneric, PinPath: pins, KeepOnExit: true,
		TunnelSources: []netip.Prefix{netip.MustParsePrefix("172.31.0.11/32")},
	}
	ctx, cancel := context.WithCancel(t.Context())
	stopped := runAgent(t, ctx, cancel, ns, cfg)
	firstLink := pinnedLinkID(t, pins)
	firstProg := attachedProgram(t, ns)
	if firstProg == 0 {
		t.Fatal("no XDP program on eth0 while the agent runs")
	}

	cancel()
	<-stopped
	if got := attachedProgram(t, ns); got != firstProg {
		t.Fatalf("after the agent stopped, eth0 runs program %d, want %d still", got, firstProg)
	}
	if got := pinnedSources(t, pins); !slices.Equal(got, []string{"172.31.0.11/32"}) {
		t.Fatalf("allowlist while no agent runs: %v", got)
	}
	for _, m := range []string{bpf.DecapMapAllowedSources, bpf.DecapMapLocalAddrs, bpf.DecapMapDecapCounters} {
		if _, err := os.Stat(filepath.Join(pins, m)); err != nil {
			t.Errorf("map %s not pinned while no agent runs: %v", m, err)
		}
	}

	cfg.KeepOnExit = false
	ctx, cancel = context.WithCancel(t.Context())
	stopped = runAgent(t, ctx, cancel, ns, cfg)
	if got := pinnedLinkID(t, pins); got != firstLink {
		t.Errorf("the restarted agent uses link %d, want the adopted %d", got, firstLink)
	}
	if got := attachedProgram(t, ns); got == 0 || got == firstProg {
		t.Errorf("after the restart eth0 runs program %d, want the new agent's (not 0, not %d)", got, firstProg)
	}
	cancel()
	<-stopped
	if got := attachedProgram(t, ns); got != 0 {
		t.Errorf("program %d still attached after an agent without --keep-datapath-on-exit stopped", got)
	}
	if _, err := os.Stat(pins); !os.IsNotExist(err) {
		t.Errorf("pin path %s left behind: %v", pins, err)
	}
}

// TestRestartDropsUnwantedInterfaces: an agent restarted with fewer interfaces detaches the
// program its predecessor left on the others.
func TestRestartDropsUnwantedInterfaces(t *testing.T) {
	netlab.Require(t)
	ns := backendNamespace(t)
	other, err := netlab.NewNamespace(t)
	if err != nil {
		t.Fatal(err)
	}
	must(t)("", netlab.Connect(ns, "eth1", other, "eth0"))
	pins := pinPath(t)
	cfg := Config{
		Interfaces: []string{"eth0", "eth1"}, XDPMode: dpebpf.XDPGeneric, PinPath: pins, KeepOnExit: true,
		TunnelSources: []netip.Prefix{netip.MustParsePrefix("172.31.0.11/32")},
	}
	ctx, cancel := context.WithCancel(t.Context())
	stopped := runAgent(t, ctx, cancel, ns, cfg)
	cancel()
	<-stopped
	if attachedProgram(t, ns, "eth1") == 0 {
		t.Fatal("no program left on eth1 by an agent keeping its pins")
	}
	cfg.Interfaces = []string{"eth0"}
	ctx, cancel = context.WithCancel(t.Context())
	runAgent(t, ctx, cancel, ns, cfg)
	if got := attachedProgram(t, ns, "eth1"); got != 0 {
		t.Errorf("program %d still on eth1, which the restarted agent does not serve", got)
	}
	if attachedProgram(t, ns, "eth0") == 0 {
		t.Error("no program on eth0")
	}
}

// backendNamespace is a backend node: eth0 (a veth to a peer namespace) with an address of
// each family.
func backendNamespace(t *testing.T) *netlab.Namespace {
	t.Helper()
	ns, err := netlab.NewNamespace(t)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := netlab.NewNamespace(t)
	if err != nil {
		t.Fatal(err)
	}
	must(t)("", netlab.Connect(ns, "eth0", peer, "eth0"))
	must(t)("", ns.AddAddr("eth0", netip.MustParsePrefix("10.77.0.2/24")))
	must(t)("", ns.AddAddr("eth0", netip.MustParsePrefix("fd00:77::2/64")))
	return ns
}

// runAgent starts an agent inside ns; the returned channel closes when Run has returned.
func runAgent(t *testing.T, ctx context.Context, cancel context.CancelFunc, ns *netlab.Namespace, cfg Config) <-chan struct{} {
	t.Helper()
	cfg.Resync = time.Hour // updates, not resyncs, must keep the maps current
	var agent *Agent
	if err := nsexec.Do(ns.Name, func() (err error) {
		agent, err = New(cfg)
		return err
	}); err != nil {
		cancel()
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := agent.Run(ctx); err != nil {
			t.Errorf("agent: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-stopped
	})
	return stopped
}

func pinPath(t *testing.T) string {
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("maglb-agent-test-%d-%s", os.Getpid(), t.Name()))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// pinnedSources reads the allowlist from its pinned map, as prefixes of their own family.
func pinnedSources(t *testing.T, pins string) []string {
	t.Helper()
	var out []string
	for key := range pinnedKeys[bpf.DecapSourcePrefix](t, filepath.Join(pins, bpf.DecapMapAllowedSources)) {
		addr := netip.AddrFrom16(wordBytes(key.Addr))
		bits := int(key.Prefixlen)
		if addr.Is4In6() {
			addr, bits = addr.Unmap(), bits-96
		}
		out = append(out, netip.PrefixFrom(addr, bits).String())
	}
	slices.Sort(out)
	return out
}

func pinnedAddresses(t *testing.T, pins string) []string {
	t.Helper()
	var out []string
	for key := range pinnedKeys[bpf.DecapLocalAddr](t, filepath.Join(pins, bpf.DecapMapLocalAddrs)) {
		b := wordBytes(key.Addr)
		addr := netip.AddrFrom16(b)
		if key.Family == 4 {
			addr = netip.AddrFrom4([4]byte(b[:4]))
		}
		out = append(out, addr.String())
	}
	slices.Sort(out)
	return out
}

func pinnedKeys[K comparable](t *testing.T, file string) map[K]bool {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	keys := map[K]bool{}
	var (
		key   K
		value uint8
	)
	entries := m.Iterate()
	for entries.Next(&key, &value) {
		keys[key] = true
	}
	if err := entries.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

func wordBytes(words [4]uint32) [16]byte {
	var b [16]byte
	for i, w := range words {
		binary.NativeEndian.PutUint32(b[4*i:], w)
	}
	return b
}

// pinnedLink describes the decapsulation link pinned for eth0 under pins.
func pinnedLink(t *testing.T, pins string) *link.Info {
	t.Helper()
	l, err := link.LoadPinnedLink(filepath.Join(pins, "decap_link_eth0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func pinnedLinkID(t *testing.T, pins string) link.ID { return pinnedLink(t, pins).ID }

// attachedProgram is the id of the XDP program on dev (default eth0) in ns, 0 for none.
func attachedProgram(t *testing.T, ns *netlab.Namespace, dev ...string) uint32 {
	t.Helper()
	var id uint32
	if err := nsexec.Do(ns.Name, func() error {
		l, err := netlink.LinkByName(append(dev, "eth0")[0])
		if err == nil && l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
			id = l.Attrs().Xdp.ProgId
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

func createNode(t *testing.T, env *testenv.Env, name string, nodeLabels map[string]string, addrs ...string) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: nodeLabels}}
	if err := env.Client.Create(t.Context(), node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), node) })
	for _, a := range addrs {
		node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	if err := env.Client.Status().Update(t.Context(), node); err != nil {
		t.Fatal(err)
	}
}

func label(t *testing.T, env *testenv.Env, name string, nodeLabels map[string]string) {
	t.Helper()
	node := &corev1.Node{}
	if err := env.Client.Get(t.Context(), client.ObjectKey{Name: name}, node); err != nil {
		t.Fatal(err)
	}
	node.Labels = nodeLabels
	if err := env.Client.Update(t.Context(), node); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, got func() []string, want []string) {
	t.Helper()
	testenv.Eventually(t, what, func() error {
		if g := got(); !slices.Equal(g, want) {
			return fmt.Errorf("got %v, want %v", g, want)
		}
		return nil
	})
}

func must(t *testing.T) func(string, error) {
	return func(_ string, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}
