// SPDX-License-Identifier: Apache-2.0

package layer2

import (
	"io"
	"net/netip"
	"sync/atomic"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"k8s.io/apimachinery/pkg/util/sets"
)

// responder answers address resolution requests for a set of IPs on one interface, with
// one protocol.
type responder interface {
	// setTargets replaces the IPs answered for.
	setTargets(ips sets.Set[netip.Addr]) error
	targetIPs() sets.Set[netip.Addr]
	// sendGratuitous tells the link that ip is now at this interface's MAC.
	sendGratuitous(ip netip.Addr) error
	close() error
}

// responderLoop is what the protocols share: the IPs answered for, which the announcer
// replaces while the read loop consults them, and the read loop's lifetime.
type responderLoop struct {
	logger  log.Logger
	socket  io.Closer
	targets atomic.Pointer[sets.Set[netip.Addr]]
	closing chan struct{}
	done    chan struct{}
}

func newResponderLoop(logger log.Logger, socket io.Closer) *responderLoop {
	l := &responderLoop{logger: logger, socket: socket, closing: make(chan struct{}), done: make(chan struct{})}
	l.targets.Store(&sets.Set[netip.Addr]{})
	return l
}

func (l *responderLoop) targetIPs() sets.Set[netip.Addr] { return *l.targets.Load() }

func (l *responderLoop) answers(ip netip.Addr) bool { return l.targetIPs().Has(ip) }

// setTargetIPs stores a copy: the read loop must never see the caller modify the set.
func (l *responderLoop) setTargetIPs(ips sets.Set[netip.Addr]) {
	ips = ips.Clone()
	l.targets.Store(&ips)
}

// run handles requests until close. handleNext reads one packet and answers it if needed.
func (l *responderLoop) run(handleNext func() error) {
	defer close(l.done)
	for {
		err := handleNext()
		if err == nil {
			continue
		}
		select {
		case <-l.closing:
			return
		default:
			level.Warn(l.logger).Log("op", "read", "error", err, "msg", "failed to read request")
		}
	}
}

// close stops the read loop and waits for it, so no answer leaves after close returns.
func (l *responderLoop) close() error {
	close(l.closing)
	err := l.socket.Close()
	<-l.done
	return err
}
