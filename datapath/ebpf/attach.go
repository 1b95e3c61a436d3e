// SPDX-License-Identifier: Apache-2.0

package ebpf

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// attachXDP attaches prog to the interface through a link pinned at pinFile. A link already
// pinned there (a previous process's) is updated in place: the old program runs until the new
// one replaces it, so forwarding never stops.
func attachXDP(prog *ebpf.Program, ifname string, mode XDPMode, pinFile string) (link.Link, error) {
	return attachPinned(prog, ifname, pinFile, func(ifindex int) (link.Link, error) {
		flags := link.XDPDriverMode
		if mode == XDPGeneric {
			flags = link.XDPGenericMode
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
		if err != nil {
			return nil, fmt.Errorf("attaching %s XDP to %s: %w", mode, ifname, err)
		}
		return l, nil
	})
}

// attachTCXIngress attaches prog to the interface's TCX ingress hook through a link pinned at
// pinFile, adopting a pinned link as attachXDP does.
func attachTCXIngress(prog *ebpf.Program, ifname string, pinFile string) (link.Link, error) {
	return attachPinned(prog, ifname, pinFile, func(ifindex int) (link.Link, error) {
		l, err := link.AttachTCX(link.TCXOptions{Program: prog, Interface: ifindex, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return nil, fmt.Errorf("attaching TCX ingress to %s: %w", ifname, err)
		}
		return l, nil
	})
}

// attachPinned updates the link pinned at pinFile to prog, or else attaches prog with attach
// and pins the new link there.
func attachPinned(prog *ebpf.Program, ifname, pinFile string, attach func(ifindex int) (link.Link, error)) (link.Link, error) {
	if pinned, err := link.LoadPinnedLink(pinFile, nil); err == nil {
		if err := pinned.Update(prog); err == nil {
			return pinned, nil
		}
		// The interface it was attached to is gone, or the link is of another hook: start
		// over.
		_ = pinned.Unpin()
		_ = pinned.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("loading pinned link %s: %w", pinFile, err)
	}

	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	l, err := attach(iface.Index)
	if err != nil {
		return nil, err
	}
	if err := l.Pin(pinFile); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("pinning link: %w", err)
	}
	return l, nil
}

// release closes what a loader holds. Unless keep is set, the link is unpinned first, which
// detaches the program, and the pinned maps are removed.
func release(l link.Link, pinnedMaps []*ebpf.Map, closers []interface{ Close() error }, keep bool, pinDir string) error {
	errs := []error{closeLink(l, keep)}
	for _, m := range pinnedMaps {
		if !keep {
			errs = append(errs, m.Unpin())
		}
	}
	for _, c := range closers {
		errs = append(errs, c.Close())
	}
	if !keep {
		// Another loader may share the directory; then it stays.
		if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// closeLink closes l (nil: nothing to do); unless keep is set, it detaches and unpins it
// first. The explicit detach takes effect at once, where the pin's reference may be dropped
// only later.
func closeLink(l link.Link, keep bool) error {
	if l == nil {
		return nil
	}
	var errs []error
	if !keep {
		if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
			errs = append(errs, err)
		}
		errs = append(errs, l.Unpin())
	}
	return errors.Join(append(errs, l.Close())...)
}

func linkPinFile(pinDir, prefix, ifname string) string {
	return filepath.Join(pinDir, prefix+"_"+ifname)
}
