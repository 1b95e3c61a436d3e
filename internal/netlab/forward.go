// SPDX-License-Identifier: Apache-2.0

package netlab

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"

	"github.com/vishvananda/netns"
)

// Forward listens on listen (e.g. "127.0.0.1:6443") inside ns and relays every connection to
// target in the caller's own namespace. A process in ns reaches a server on the host's
// loopback, the API server of a test, through its own loopback: no address outside the
// namespaces is needed.
func Forward(c Cleaner, ns *Namespace, listen, target string) error {
	l, err := listenIn(ns, listen)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	c.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
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
				relay(in, target)
			}()
		}
	}()
	return nil
}

// listenIn opens the listening socket from a thread switched into ns: a socket stays in the
// namespace it was created in, whichever thread later uses it.
func listenIn(ns *Namespace, listen string) (net.Listener, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	host, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer host.Close()
	target, err := netns.GetFromName(ns.Name)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, err
	}
	l, listenErr := net.Listen("tcp", listen)
	if err := netns.Set(host); err != nil {
		// This thread cannot go back: keep it locked so that it dies with the goroutine.
		runtime.LockOSThread()
		return nil, errors.Join(listenErr, fmt.Errorf("returning to the host namespace: %w", err))
	}
	return l, listenErr
}

func relay(in net.Conn, target string) {
	defer in.Close()
	out, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer out.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	<-done
}
