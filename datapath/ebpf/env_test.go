// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/maglb/maglb/bpf"
	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/datapath/internal/netnstest"
	"github.com/maglb/maglb/datapath/internal/privtest"
)

// The test network of the PROG_RUN tests, inside a namespace of its own: the load balancer's
// interface lb0 (10.0.0.1/24, fd00::1/64) with backends .2 and .3 (::2, ::3) as permanent
// neighbours, and lb1 (10.1.0.1/24) with backend 10.1.0.2.
var (
	lb0MAC      = mac{0x02, 0, 0, 0, 0, 0x01}
	lb1MAC      = mac{0x02, 0, 0, 0, 1, 0x01}
	clientMAC   = mac{0x02, 0, 0, 0, 0, 0xc1}
	backend2MAC = mac{0x02, 0, 0, 0, 0, 0x02}
	backend3MAC = mac{0x02, 0, 0, 0, 0, 0x03}
	backend4MAC = mac{0x02, 0, 0, 0, 0, 0x04}
	lb1PeerMAC  = mac{0x02, 0, 0, 0, 1, 0x02}

	lb0Addr   = netip.MustParseAddr("10.0.0.1")
	lb0Addr6  = netip.MustParseAddr("fd00::1")
	backend2  = netip.MustParseAddr("10.0.0.2")
	backend3  = netip.MustParseAddr("10.0.0.3")
	backend4  = netip.MustParseAddr("10.0.0.4") // resolved only after Sync: the FIB path
	backend9  = netip.MustParseAddr("10.0.0.9") // never resolved
	backendV2 = netip.MustParseAddr("fd00::2")
	backendV3 = netip.MustParseAddr("fd00::3")
	backendL1 = netip.MustParseAddr("10.1.0.2") // behind lb1: redirected
	client4   = netip.MustParseAddr("192.0.2.10")
	client6   = netip.MustParseAddr("2001:db8::10")
)

type lbEnv struct {
	ns   *netnstest.NS
	dp   *Datapath
	opts Options
	lb0  int
	lb1  int
}

var pinDirs atomic.Int32

// testPinPath returns a fresh directory under /sys/fs/bpf, removed at the end of the test.
func testPinPath(t testing.TB) string {
	dir := filepath.Join(bpffsRoot, fmt.Sprintf("maglb-test-%d-%d", os.Getpid(), pinDirs.Add(1)))
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func newLBEnv(t testing.TB, opts Options) *lbEnv {
	t.Helper()
	privtest.Require(t)
	ns := netnstest.New(t, "lb")
	ns.Run(t, "ip", "link", "add", "lb0", "address", lb0MAC.String(), "type", "veth", "peer", "name", "peer0")
	ns.Run(t, "ip", "link", "add", "lb1", "address", lb1MAC.String(), "type", "veth", "peer", "name", "peer1")
	for _, dev := range []string{"lb0", "peer0", "lb1", "peer1"} {
		ns.Run(t, "ip", "link", "set", dev, "up")
	}
	ns.Run(t, "ip", "addr", "add", "10.0.0.1/24", "dev", "lb0")
	ns.Run(t, "ip", "addr", "add", "fd00::1/64", "dev", "lb0", "nodad")
	ns.Run(t, "ip", "addr", "add", "10.1.0.1/24", "dev", "lb1")
	for addr, m := range map[netip.Addr]mac{backend2: backend2MAC, backend3: backend3MAC, backendV2: backend2MAC, backendV3: backend3MAC} {
		ns.Run(t, "ip", "neigh", "replace", addr.String(), "lladdr", m.String(), "dev", "lb0", "nud", "permanent")
	}
	ns.Run(t, "ip", "neigh", "replace", backendL1.String(), "lladdr", lb1PeerMAC.String(), "dev", "lb1", "nud", "permanent")

	opts.PinPath = testPinPath(t)
	var err error
	if opts, err = opts.withDefaults(); err != nil {
		t.Fatal(err)
	}
	env := &lbEnv{ns: ns, opts: opts, lb0: ifindex(t, ns, "lb0"), lb1: ifindex(t, ns, "lb1")}
	if err := ns.Do(func() (err error) { env.dp, err = New(opts); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.dp.Close(); err != nil {
			t.Errorf("closing datapath: %v", err)
		}
	})
	return env
}

func ifindex(t testing.TB, ns *netnstest.NS, dev string) int {
	t.Helper()
	out := ns.Run(t, "cat", "/sys/class/net/"+dev+"/ifindex")
	index, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatal(err)
	}
	return index
}

func (e *lbEnv) sync(t testing.TB, services []datapath.Service) {
	t.Helper()
	if err := e.ns.Do(func() error { return e.dp.Sync(t.Context(), services) }); err != nil {
		t.Fatal(err)
	}
}

// run runs an XDP prog once on frame as if received on ingress, inside the namespace.
func (e *lbEnv) run(t testing.TB, prog *ebpf.Program, frame []byte, ingress int) (uint32, []byte) {
	t.Helper()
	return e.runWith(t, prog, frame, xdpContext{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ingress)})
}

// runWith runs prog once on frame with the program type's context (nil: none), inside the
// namespace, and returns its verdict and the frame it left.
func (e *lbEnv) runWith(t testing.TB, prog *ebpf.Program, frame []byte, context any) (uint32, []byte) {
	t.Helper()
	var verdict uint32
	out := make([]byte, len(frame)+256)
	err := e.ns.Do(func() (err error) {
		opts := &ebpf.RunOptions{Data: frame, DataOut: out, Context: context}
		verdict, err = prog.Run(opts)
		out = opts.DataOut
		return err
	})
	if err != nil {
		t.Fatalf("running %v: %v", prog, err)
	}
	return verdict, out
}

// xdpContext is struct xdp_md as BPF_PROG_RUN takes it.
type xdpContext struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

func (m mac) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

func (e *lbEnv) stats(t testing.TB) datapath.Stats {
	t.Helper()
	s, err := e.dp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var verdictNames = map[uint32]string{0: "ABORTED", 1: "DROP", 2: "PASS", 3: "TX", 4: "REDIRECT"}

const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

// backendEntry reads a backend's entry in the map, for tests of the id bookkeeping.
func (e *lbEnv) backendEntry(t testing.TB, addr netip.Addr) bpf.LBBackend {
	t.Helper()
	p, ok := e.dp.backends[addr]
	if !ok {
		t.Fatalf("backend %s not programmed", addr)
	}
	var entry bpf.LBBackend
	if err := e.dp.objs.Backends.Lookup(p.id, &entry); err != nil {
		t.Fatal(err)
	}
	return entry
}
