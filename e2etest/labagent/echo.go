// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/maglb/maglb/internal/nsexec"
)

// pod is a pod's echo servers, in the pod's network namespace.
type pod struct {
	netns, name, node string
	httpPort, udpPort int
}

func (b *pod) run(ctx context.Context, logger log.Logger) error {
	if b.netns == "" || b.name == "" || b.node == "" {
		return errors.New("--netns, --name and --node are required")
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

// serveHTTP answers "<pod> on <node> saw <client>", then, for a request with a body (an upload),
// "read <n> bytes" once it has read the body to the end, then ?size= bytes of padding: big
// answers show in byte counters which way the answers went.
func (b *pod) serveHTTP(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%s on %s saw %s\n", b.name, b.node, r.RemoteAddr)
	if r.ContentLength != 0 {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			fmt.Fprintf(w, "read failed after %d bytes: %v\n", n, err)
			return
		}
		fmt.Fprintf(w, "read %d bytes\n", n)
	}
	if size, err := strconv.Atoi(r.URL.Query().Get("size")); err == nil && size > 0 {
		_, _ = w.Write([]byte(strings.Repeat("x", min(size, 16<<20))))
	}
}

// serveUDP answers each datagram from the address it was sent to, whichever VIP that is:
// an answer from the node's own address would not match the client's socket.
func (b *pod) serveUDP(conn datagramConn) {
	buf := make([]byte, 64<<10)
	for {
		dst, src, err := conn.readTo(buf)
		if err != nil {
			return // closed
		}
		_ = conn.replyFrom(fmt.Appendf(nil, "%s on %s saw %s\n", b.name, b.node, src), dst, src)
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
