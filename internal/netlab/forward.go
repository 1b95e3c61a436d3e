// SPDX-License-Identifier: Apache-2.0

package netlab

import (
	"net"

	"github.com/maglb/maglb/internal/nsexec"
)

// Forward listens on listen (e.g. "127.0.0.1:6443") inside ns and relays every connection to
// target in the caller's own namespace. A process in ns reaches a server on the host's
// loopback, the API server of a test, through its own loopback: no address outside the
// namespaces is needed.
func Forward(c Cleaner, ns *Namespace, listen, target string) error {
	l, err := nsexec.Listen(ns.Name, "tcp", listen)
	if err != nil {
		return err
	}
	stop := nsexec.Relay(l, func() (net.Conn, error) { return net.Dial("tcp", target) })
	c.Cleanup(stop)
	return nil
}
