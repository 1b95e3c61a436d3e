// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// shutdownConnections shuts down this process's TCP connections with the given peers
// (address → BGP port), those it opened and those it accepted on listenPort. GoBGP can only
// end a session with a NOTIFICATION, which ends graceful restart at the peer; a connection
// that just closes is a restart, and the peer keeps our routes.
func shutdownConnections(peers map[netip.Addr]uint16, listenPort int32) error {
	if len(peers) == 0 {
		return nil
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, f := range fds {
		fd, err := strconv.Atoi(f.Name())
		if err != nil {
			continue
		}
		if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
			continue // not a socket, or not TCP
		}
		remote, rerr := socketAddr(unix.Getpeername(fd))
		local, lerr := socketAddr(unix.Getsockname(fd))
		if rerr != nil || lerr != nil {
			continue // a listener, or not an IP socket
		}
		port, ok := peers[remote.Addr()]
		if !ok || (remote.Port() != port && int32(local.Port()) != listenPort) {
			continue
		}
		if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil {
			return fmt.Errorf("shutting down the connection %s-%s: %w", local, remote, err)
		}
	}
	return nil
}

func socketAddr(sa unix.Sockaddr, err error) (netip.AddrPort, error) {
	if err != nil {
		return netip.AddrPort{}, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("not an IP socket address: %T", sa)
}
