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
//	labagent backend --netns NS --name NAME
//
// is a backend node's workload: HTTP and UDP servers (IPv4 and IPv6) in NS, all answering
// "<NAME> saw <client address:port>". The node's decapsulation is the backend agent's
// (`speaker --role=backend-agent`), which the lab runs beside it.
//
//	labagent nodes --kubeconfig K --node NAME=ADDR[,ADDR6] ...
//
// keeps the lab's Node objects Ready, as kubelets would: every few seconds it writes each
// node's Ready condition and address, and renews its Lease in kube-node-lease.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/maglb/maglb/internal/logging"
	"github.com/maglb/maglb/internal/nsexec"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labagent relay|backend|nodes [flags]")
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
	case "backend":
		var b backend
		flags.StringVar(&b.netns, "netns", "", "the backend node's network namespace")
		flags.StringVar(&b.name, "name", "", "the backend's name, in every answer")
		flags.IntVar(&b.httpPort, "http-port", 80, "TCP port of the HTTP server")
		flags.IntVar(&b.udpPort, "udp-port", 5000, "UDP port of the echo server")
		run = func(logger log.Logger) error { return b.run(ctx, logger) }
	case "nodes":
		var k nodeKeeper
		flags.StringVar(&k.kubeconfig, "kubeconfig", "", "the cluster's kubeconfig")
		flags.Var(&k.nodes, "node", "NAME=ADDR[,ADDR]: a node to keep Ready, with its InternalIPs (repeatable)")
		flags.DurationVar(&k.interval, "interval", 10*time.Second, "how often the nodes' status and leases are renewed")
		run = func(logger log.Logger) error { return k.run(ctx, logger) }
	default:
		fmt.Fprintf(os.Stderr, "labagent: unknown command %q (relay, backend or nodes)\n", os.Args[1])
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

type backend struct {
	netns, name       string
	httpPort, udpPort int
}

func (b *backend) run(ctx context.Context, logger log.Logger) error {
	if b.netns == "" || b.name == "" {
		return errors.New("--netns and --name are required")
	}
	httpListener, err := nsexec.Listen(b.netns, "tcp", ":"+strconv.Itoa(b.httpPort))
	if err != nil {
		return err
	}
	server := &http.Server{Handler: http.HandlerFunc(b.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = server.Serve(httpListener) }()
	defer server.Close()

	udp4, err := nsexec.ListenPacket(b.netns, "udp4", ":"+strconv.Itoa(b.udpPort))
	if err != nil {
		return err
	}
	defer udp4.Close()
	conn4 := ipv4.NewPacketConn(udp4)
	if err := conn4.SetControlMessage(ipv4.FlagDst, true); err != nil {
		return err
	}
	go b.serveUDP(udp4Conn{conn4})
	udp6, err := nsexec.ListenPacket(b.netns, "udp6", ":"+strconv.Itoa(b.udpPort))
	if err != nil {
		return err
	}
	defer udp6.Close()
	conn6 := ipv6.NewPacketConn(udp6)
	if err := conn6.SetControlMessage(ipv6.FlagDst, true); err != nil {
		return err
	}
	go b.serveUDP(udp6Conn{conn6})
	level.Info(logger).Log("op", "startup", "msg", "serving", "name", b.name, "http", b.httpPort, "udp", b.udpPort)

	<-ctx.Done()
	return nil
}

// serveHTTP answers "<name> saw <client>", then ?size= bytes of padding: big answers show
// in byte counters which way the answers went.
func (b *backend) serveHTTP(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%s saw %s\n", b.name, r.RemoteAddr)
	if size, err := strconv.Atoi(r.URL.Query().Get("size")); err == nil && size > 0 {
		_, _ = w.Write([]byte(strings.Repeat("x", min(size, 16<<20))))
	}
}

// serveUDP answers each datagram from the address it was sent to, whichever VIP that is:
// an answer from the node's own address would not match the client's socket.
func (b *backend) serveUDP(conn datagramConn) {
	buf := make([]byte, 64<<10)
	for {
		dst, src, err := conn.readTo(buf)
		if err != nil {
			return // closed
		}
		_ = conn.replyFrom(fmt.Appendf(nil, "%s saw %s\n", b.name, src), dst, src)
	}
}

// datagramConn reads a datagram with the address it was sent to, and answers from an address
// of choice: an ipv4 or ipv6 PacketConn with destination control messages on.
type datagramConn interface {
	readTo(buf []byte) (dst net.IP, src net.Addr, err error)
	replyFrom(p []byte, from net.IP, to net.Addr) error
}

type udp4Conn struct{ *ipv4.PacketConn }

func (c udp4Conn) readTo(buf []byte) (net.IP, net.Addr, error) {
	_, cm, src, err := c.ReadFrom(buf)
	if cm == nil {
		return nil, src, err
	}
	return cm.Dst, src, err
}

func (c udp4Conn) replyFrom(p []byte, from net.IP, to net.Addr) error {
	_, err := c.WriteTo(p, &ipv4.ControlMessage{Src: from}, to)
	return err
}

type udp6Conn struct{ *ipv6.PacketConn }

func (c udp6Conn) readTo(buf []byte) (net.IP, net.Addr, error) {
	_, cm, src, err := c.ReadFrom(buf)
	if cm == nil {
		return nil, src, err
	}
	return cm.Dst, src, err
}

func (c udp6Conn) replyFrom(p []byte, from net.IP, to net.Addr) error {
	_, err := c.WriteTo(p, &ipv6.ControlMessage{Src: from}, to)
	return err
}
