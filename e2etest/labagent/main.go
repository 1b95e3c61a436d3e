// SPDX-License-Identifier: Apache-2.0

// Command labagent is the part of the network lab (hack/lab.py) that needs sockets or BPF
// inside network namespaces and must keep running:
//
//	labagent relay --into NS=LISTEN,TARGET ... --out NS=LISTEN,TARGET ...
//
// relays TCP between the host's loopback and the lab's namespaces: --into listens inside
// NS and connects to TARGET on the host (how speakers and kube-proxy reach the API server),
// --out listens on the host and connects to TARGET inside NS (how the speakers' metrics are
// reached from the host). It is the lab's management network, without any address outside
// the lab's namespaces.
//
//	labagent pod --netns NS --name POD --node NODE
//
// is a pod's workload: HTTP and UDP echo servers (IPv4 and IPv6), all answering
// "<POD> on <NODE> saw <client address:port>" (and, for an upload, how many bytes it read).
// The nodes' decapsulation is the backend agent's (`speaker --role=backend-agent`).
//
//	labagent nodes --kubeconfig K --node NAME=ADDR[,ADDR6] ...
//
// keeps the lab's Node objects Ready, as kubelets would: every few seconds it writes each
// node's Ready condition and address, and renews its Lease in kube-node-lease.
//
//	labagent kubelet --kubeconfig K --node NAME=ADDR[,ADDR6] ... --slot POD=NODE,ADDR[,ADDR6] ...
//
// runs the Pods bound to the nodes, as their kubelets would, in the lab's pod slots: a Pod
// named like a slot of its node is Running and Ready with the slot's addresses (Ready=False
// while its annotation lab.maglb.io/ready is "false"); any other stays Pending, its Ready
// condition saying why. A deleted Pod is removed once its grace period ends, freeing its slot.
// So the cluster's own EndpointSlice controller sees real Pods.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/maglb/maglb/internal/logging"
	"github.com/maglb/maglb/internal/nsexec"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labagent relay|pod|nodes|kubelet [flags]")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	logLevel := flags.String("log-level", "info", "log level: all, debug, info, warn, error or none")
	var run func(log.Logger) error
	switch os.Args[1] {
	case "relay":
		var into, out relaySpecs
		flags.Var(&into, "into", "NS=LISTEN,TARGET: listen on LISTEN inside NS, connect to TARGET on the host (repeatable)")
		flags.Var(&out, "out", "NS=LISTEN,TARGET: listen on LISTEN on the host, connect to TARGET inside NS (repeatable)")
		run = func(logger log.Logger) error { return relay(ctx, logger, into, out) }
	case "pod":
		var p pod
		flags.StringVar(&p.netns, "netns", "", "the pod's network namespace")
		flags.StringVar(&p.name, "name", "", "the pod's name, in every answer")
		flags.StringVar(&p.node, "node", "", "the pod's node, in every answer")
		flags.IntVar(&p.httpPort, "http-port", 80, "TCP port of the HTTP server")
		flags.IntVar(&p.udpPort, "udp-port", 5000, "UDP port of the echo server")
		run = func(logger log.Logger) error { return p.run(ctx, logger) }
	case "nodes":
		var k nodeKeeper
		flags.StringVar(&k.kubeconfig, "kubeconfig", "", "the cluster's kubeconfig")
		flags.Var(&k.nodes, "node", "NAME=ADDR[,ADDR]: a node to keep Ready, with its InternalIPs (repeatable)")
		flags.DurationVar(&k.interval, "interval", 10*time.Second, "how often the nodes' status and leases are renewed")
		run = func(logger log.Logger) error { return k.run(ctx, logger) }
	case "kubelet":
		var k kubelet
		flags.StringVar(&k.kubeconfig, "kubeconfig", "", "the cluster's kubeconfig")
		flags.Var(&k.nodes, "node", "NAME=ADDR[,ADDR]: a node whose Pods to run, with its InternalIPs (repeatable)")
		flags.Var(&k.slots, "slot", "POD=NODE,ADDR[,ADDR]: a pod slot of a node, with its addresses (repeatable)")
		run = func(logger log.Logger) error { return k.run(ctx, logger) }
	default:
		fmt.Fprintf(os.Stderr, "labagent: unknown command %q (relay, pod, nodes or kubelet)\n", os.Args[1])
		os.Exit(2)
	}
	_ = flags.Parse(os.Args[2:])
	logging.Main(*logLevel, run)
}

// relaySpec is one relay: from a listener on one side to a target on the other.
type relaySpec struct {
	netns, listen, target string
}

type relaySpecs []relaySpec

func (s *relaySpecs) String() string { return fmt.Sprint(*s) }

func (s *relaySpecs) Set(v string) error {
	ns, rest, ok := strings.Cut(v, "=")
	listen, target, ok2 := strings.Cut(rest, ",")
	if !ok || !ok2 || ns == "" || listen == "" || target == "" {
		return fmt.Errorf("%q is not NS=LISTEN,TARGET", v)
	}
	*s = append(*s, relaySpec{netns: ns, listen: listen, target: target})
	return nil
}

func relay(ctx context.Context, logger log.Logger, into, out relaySpecs) error {
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	for _, r := range into {
		l, err := nsexec.Listen(r.netns, "tcp", r.listen)
		if err != nil {
			return fmt.Errorf("listening on %s in %s: %w", r.listen, r.netns, err)
		}
		stops = append(stops, nsexec.Relay(l, func() (net.Conn, error) { return dialer.Dial("tcp", r.target) }))
		level.Info(logger).Log("op", "relay", "msg", "relaying into a namespace", "netns", r.netns, "listen", r.listen, "target", r.target)
	}
	for _, r := range out {
		l, err := net.Listen("tcp", r.listen)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", r.listen, err)
		}
		stops = append(stops, nsexec.Relay(l, func() (net.Conn, error) { return nsexec.Dial(r.netns, dialer, "tcp", r.target) }))
		level.Info(logger).Log("op", "relay", "msg", "relaying out of a namespace", "netns", r.netns, "listen", r.listen, "target", r.target)
	}
	<-ctx.Done()
	return nil
}
