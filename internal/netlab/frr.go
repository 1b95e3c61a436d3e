// SPDX-License-Identifier: Apache-2.0

package netlab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// FRR programs, as Debian installs them.
const (
	frrDir = "/usr/lib/frr"
	vtysh  = "vtysh"
)

// FRRPrograms are the programs StartFRR needs, for Require; BFDPrograms those WithBFD adds.
var (
	FRRPrograms = []string{filepath.Join(frrDir, "zebra"), filepath.Join(frrDir, "bgpd"), vtysh}
	BFDPrograms = []string{filepath.Join(frrDir, "bfdd")}
)

// FRR is an FRR router (zebra, bgpd, and bfdd WithBFD) running in a namespace, with its
// own directory for configuration, sockets, PID files and logs.
type FRR struct {
	dir     string
	names   []string // of the daemons, in start order
	daemons []*daemon
}

// FRROption adds to what StartFRR runs.
type FRROption func(daemons map[string]string)

// WithBFD runs bfdd beside bgpd with these profiles (its bfdd.conf). A neighbor of the BGP
// configuration uses one with "neighbor ADDR bfd profile NAME".
func WithBFD(profiles ...BFDProfile) FRROption {
	return func(daemons map[string]string) {
		var b strings.Builder
		b.WriteString("hostname bfdd\n!\nbfd\n")
		for _, p := range profiles {
			b.WriteString(p.config())
		}
		daemons["bfdd"] = b.String()
	}
}

// BFDProfile is a bfdd profile; zero fields keep FRR's defaults (300 ms, 300 ms, 3).
type BFDProfile struct {
	Name                              string
	ReceiveInterval, TransmitInterval uint32 // milliseconds
	DetectMultiplier                  uint32
}

func (p BFDProfile) config() string {
	var b strings.Builder
	fmt.Fprintf(&b, " profile %s\n", p.Name)
	for _, c := range []struct {
		command string
		value   uint32
	}{{"receive-interval", p.ReceiveInterval}, {"transmit-interval", p.TransmitInterval}, {"detect-multiplier", p.DetectMultiplier}} {
		if c.value != 0 {
			fmt.Fprintf(&b, "  %s %d\n", c.command, c.value)
		}
	}
	b.WriteString(" exit\n")
	return b.String()
}

type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartFRR starts zebra and bgpd in ns, bgpd with config (its bgpd.conf), and the daemons
// opts add, and waits until bgpd answers. All are stopped, and the directory removed, at
// cleanup.
func StartFRR(c Cleaner, ns *Namespace, config string, opts ...FRROption) (*FRR, error) {
	dir, err := os.MkdirTemp("", "frr")
	if err != nil {
		return nil, err
	}
	f := &FRR{dir: dir, names: []string{"zebra"}}
	c.Cleanup(func() {
		f.Stop()
		_ = os.RemoveAll(dir)
	})
	daemons := map[string]string{"zebra": "hostname zebra\n", "bgpd": config}
	for _, o := range opts {
		o(daemons)
	}
	// Each daemon starts once the previous one answers: bgpd registers its BFD sessions
	// through zebra with bfdd once, at start, and never again for one that failed.
	if _, ok := daemons["bfdd"]; ok {
		f.names = append(f.names, "bfdd")
	}
	f.names = append(f.names, "bgpd")
	for name, conf := range daemons {
		if err := os.WriteFile(filepath.Join(dir, name+".conf"), []byte(conf), 0o644); err != nil {
			return nil, err
		}
	}
	// The daemons drop root for the frr user, which must own their directory.
	if err := chownToFRR(dir); err != nil {
		return nil, err
	}
	for _, name := range f.names {
		if err := f.start(ns, name); err != nil {
			return nil, err
		}
		if err := f.waitFor(name); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// readyCommands are vtysh commands each daemon answers once it runs.
var readyCommands = map[string]string{"zebra": "show interface brief", "bfdd": "show bfd peers brief", "bgpd": "show bgp summary json"}

func (f *FRR) waitFor(name string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := f.vtysh([]string{"-d", name}, readyCommands[name])
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("FRR's %s did not start: %w\n%s", name, err, f.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func chownToFRR(dir string) error {
	u, err := user.Lookup("frr")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(dir, uid, gid)
}

func (f *FRR) start(ns *Namespace, name string) error {
	args := []string{
		"-f", filepath.Join(f.dir, name+".conf"),
		"-i", filepath.Join(f.dir, name+".pid"),
		"-z", filepath.Join(f.dir, "zserv.api"),
		"--vty_socket", f.dir,
		"-P", "0", // no vty TCP port: vtysh uses the sockets
		"--log", "file:" + filepath.Join(f.dir, name+".log"),
	}
	if name == "bfdd" {
		// Its control socket defaults to one path for every bfdd of the machine.
		args = append(args, "--bfdctl", filepath.Join(f.dir, "bfdd.sock"))
	}
	cmd := ns.Command(context.Background(), filepath.Join(frrDir, name), args...)
	out, err := os.Create(filepath.Join(f.dir, name+".out"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
	f.daemons = append(f.daemons, d)
	return nil
}

// Stop stops the daemons by PID, bgpd first: SIGTERM, then SIGKILL if one lingers.
func (f *FRR) Stop() {
	for _, d := range slices.Backward(f.daemons) {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(5 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	}
	f.daemons = nil
}

// Vtysh runs vtysh commands against this router and returns the output.
func (f *FRR) Vtysh(commands ...string) (string, error) { return f.vtysh(nil, commands...) }

func (f *FRR) vtysh(options []string, commands ...string) (string, error) {
	args := append([]string{"--vty_socket", f.dir}, options...)
	for _, c := range commands {
		args = append(args, "-c", c)
	}
	out, err := exec.Command(vtysh, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("vtysh %s: %w: %s", strings.Join(commands, "; "), err, out)
	}
	return string(out), nil
}

// VtyshJSON runs a vtysh command ending in "json" and decodes its output into v.
func (f *FRR) VtyshJSON(command string, v any) error {
	out, err := f.Vtysh(command)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("vtysh %s: %w: %s", command, err, out)
	}
	return nil
}

// Logs returns the daemons' logs, for failure reports.
func (f *FRR) Logs() string {
	var b strings.Builder
	for _, name := range f.names {
		for _, suffix := range []string{".out", ".log"} {
			data, err := os.ReadFile(filepath.Join(f.dir, name+suffix))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				fmt.Fprintf(&b, "%s%s: %v\n", name, suffix, err)
			}
			if len(data) > 0 {
				fmt.Fprintf(&b, "--- %s%s\n%s\n", name, suffix, data)
			}
		}
	}
	return b.String()
}

// Path is a path of a prefix at the router, as vtysh shows it.
type Path struct {
	Valid  bool `json:"valid"`
	Stale  bool `json:"stale"`
	ASPath struct {
		String string `json:"string"`
	} `json:"aspath"`
	Community struct {
		String string `json:"string"`
	} `json:"community"`
	LargeCommunity struct {
		String string `json:"string"`
	} `json:"largeCommunity"`
	LocalPref *uint32   `json:"locPrf"`
	Nexthops  []Nexthop `json:"nexthops"`
	Peer      struct {
		PeerID string `json:"peerId"`
	} `json:"peer"`
}

// Nexthop is a next hop of a path.
type Nexthop struct {
	IP string `json:"ip"`
}

// HasNexthop reports whether ip is among the path's next hops.
func (p Path) HasNexthop(ip string) bool {
	return slices.Contains(p.Nexthops, Nexthop{IP: ip})
}

// Paths returns the router's BGP paths for prefix; none when it has no route.
func (f *FRR) Paths(prefix netip.Prefix) ([]Path, error) {
	family := "ipv4"
	if prefix.Addr().Is6() {
		family = "ipv6"
	}
	out, err := f.Vtysh(fmt.Sprintf("show bgp %s unicast %s json", family, prefix))
	if err != nil {
		return nil, err
	}
	return DecodePaths(out)
}

// DecodePaths decodes the output of vtysh's "show bgp <family> unicast <prefix> json":
// the prefix's paths, none when the router has no route.
func DecodePaths(vtyshJSON string) ([]Path, error) {
	var out struct {
		Paths []Path `json:"paths"`
	}
	if err := json.Unmarshal([]byte(vtyshJSON), &out); err != nil {
		return nil, fmt.Errorf("decoding BGP paths: %w: %s", err, vtyshJSON)
	}
	return out.Paths, nil
}

// BFDPeer is a BFD session of the router, as vtysh shows it; intervals in milliseconds.
type BFDPeer struct {
	Peer   string `json:"peer"`
	Local  string `json:"local"`
	Status string `json:"status"` // "up", "down", "init", "shutdown"
	// The intervals and multiplier of this end, and those the remote end sent.
	ReceiveInterval        uint32 `json:"receive-interval"`
	TransmitInterval       uint32 `json:"transmit-interval"`
	DetectMultiplier       uint32 `json:"detect-multiplier"`
	RemoteReceiveInterval  uint32 `json:"remote-receive-interval"`
	RemoteTransmitInterval uint32 `json:"remote-transmit-interval"`
	RemoteDetectMultiplier uint32 `json:"remote-detect-multiplier"`
}

// BFDPeers returns the router's BFD sessions.
func (f *FRR) BFDPeers() ([]BFDPeer, error) {
	var peers []BFDPeer
	err := f.VtyshJSON("show bfd peers json", &peers)
	return peers, err
}
