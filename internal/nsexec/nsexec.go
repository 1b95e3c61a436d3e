// SPDX-License-Identifier: Apache-2.0

// Package nsexec runs code inside a named network namespace (one `ip netns add` created)
// from a process that lives in another: sockets, netlink handles and BPF links created
// there belong to that namespace for good, whichever thread uses them later.
package nsexec

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"

	"github.com/vishvananda/netns"
)

// Do runs fn on an OS thread switched into the namespace name. Goroutines fn starts run
// elsewhere, in the process's own namespace.
func Do(name string, fn func() error) error {
	target, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("network namespace %s: %w", name, err)
	}
	defer target.Close()
	return DoIn(target, fn)
}

// DoIn is Do for a namespace known by its handle (one without a name, say).
func DoIn(target netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	host, err := netns.Get()
	if err != nil {
		return err
	}
	defer host.Close()
	if err := netns.Set(target); err != nil {
		return err
	}
	fnErr := fn()
	if err := netns.Set(host); err != nil {
		// This thread cannot go back: keep it locked so that it dies with the goroutine.
		runtime.LockOSThread()
		return errors.Join(fnErr, fmt.Errorf("returning to the host namespace: %w", err))
	}
	return fnErr
}

// Listen opens a listening socket inside the namespace name.
func Listen(name, network, address string) (l net.Listener, err error) {
	err = Do(name, func() (err error) {
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket inside the namespace name.
func ListenPacket(name, network, address string) (c net.PacketConn, err error) {
	err = Do(name, func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// Dial connects from inside the namespace name.
func Dial(name string, dialer *net.Dialer, network, address string) (c net.Conn, err error) {
	err = Do(name, func() (err error) {
		c, err = dialer.Dial(network, address)
		return err
	})
	return c, err
}

// Relay accepts connections on l and joins each to a connection from dial, copying both
// ways, until l is closed. The returned function closes l and waits for every relayed
// connection to end. With Listen or Dial on either side, a process in one namespace
// reaches a server in another through its own loopback.
func Relay(l net.Listener, dial func() (net.Conn, error)) (stop func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return // closed
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer in.Close()
				out, err := dial()
				if err != nil {
					return
				}
				defer out.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
				go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return func() {
		l.Close()
		wg.Wait()
	}
}
