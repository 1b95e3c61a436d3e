// SPDX-License-Identifier: Apache-2.0

// Package netnstest creates network namespaces for tests and removes them when the test ends,
// passed or failed.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
)

// NS is a named network namespace.
type NS struct {
	Name   string
	handle netns.NsHandle
}

var created atomic.Int32

// New creates a namespace with loopback up, deleted at the end of the test.
func New(t testing.TB, role string) *NS {
	t.Helper()
	name := fmt.Sprintf("maglb-%s-%d-%d", role, os.Getpid(), created.Add(1))
	done := make(chan error)
	var handle netns.NsHandle
	go func() {
		// The thread changes namespace and is never unlocked, so it ends with this goroutine.
		runtime.LockOSThread()
		var err error
		handle, err = netns.NewNamed(name)
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	ns := &NS{Name: name, handle: handle}
	t.Cleanup(func() {
		ns.handle.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("deleting namespace %s: %v", name, err)
		}
	})
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Do runs fn on a thread inside the namespace. Sockets and netlink handles fn opens stay in
// the namespace; goroutines it starts run elsewhere, which is fine for sockets already open.
func (ns *NS) Do(fn func() error) error {
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(ns.handle); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	return <-done
}

// Run runs a command inside the namespace and fails the test if it fails.
func (ns *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s %s: %v\n%s", ns.Name, name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Command prepares a command that runs inside the namespace.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Sysctl sets a sysctl of the namespace, such as "net.ipv4.ip_forward".
func (ns *NS) Sysctl(t testing.TB, key, value string) {
	t.Helper()
	ns.Run(t, "sh", "-c", fmt.Sprintf("echo %s > /proc/sys/%s", value, strings.ReplaceAll(key, ".", "/")))
}

// Veth connects two namespaces with a veth pair named nameA in a and nameB in b.
func Veth(t testing.TB, a *NS, nameA string, b *NS, nameB string) {
	t.Helper()
	a.Run(t, "ip", "link", "add", nameA, "type", "veth", "peer", "name", nameB, "netns", b.Name)
	a.Run(t, "ip", "link", "set", nameA, "up")
	b.Run(t, "ip", "link", "set", nameB, "up")
}
