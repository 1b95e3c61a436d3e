//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// Full-size packets: the client's link has the usual MTU (1500), and the ebpf datapath puts an
// outer header in front of every packet on its way to a backend. The load balancer answers a
// packet that no longer fits with "fragmentation needed" (IPv4) or "packet too big" (IPv6),
// carrying the MTU that is left, so the client's path MTU discovery converges; with the
// kubeproxy datapath full-size packets fit as they are.
var _ = Describe("Full-size packets", Label("mtu"), Ordered, func() {
	const ns = "e2e-mtu"
	ctx := context.Background()
	vips := map[corev1.IPFamily]string{}

	BeforeAll(func() {
		requireProtocol("bgp")
		if env.VIPRange6 == "" {
			Skip("the environment has no IPv6 VIP range")
		}
		ensureNamespace(ctx, ns)
		createAdvertisedPool(ctx, "e2e-mtu", testCIDR(5), testCIDR6(1))
		svc := createBackedService(ctx, ns, "web", map[string]string{"metallb.io/address-pool": "e2e-mtu"}, nil, dualStack)
		Eventually(ingressOf(ctx, svc)).Should(HaveLen(2), "an IP of each family for %s/%s", ns, svc.Name)
		ips, _ := ingressOf(ctx, svc)()
		for _, ip := range ips {
			family := corev1.IPv4Protocol
			if strings.Contains(ip, ":") {
				family = corev1.IPv6Protocol
			}
			vips[family] = ip
			everyNodeForwards(ip)
		}
	})

	for _, family := range []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol} {
		It(fmt.Sprintf("carries a 1 MiB upload through the %s VIP to the end", family), Label("smoke"), func() {
			const size = 1 << 20
			a, read, err := upload(vips[family], env.HTTPPort, size)
			Expect(err).NotTo(HaveOccurred())
			Expect(a.Backend).To(BeElementOf(backendNames()))
			Expect(read).To(Equal(size), "bytes the backend read")
		})

		It(fmt.Sprintf("answers full-size UDP datagrams with DF set over %s after path MTU discovery", family), func() {
			mtu, err := fullSizeUDPEcho(vips[family], env.UDPPort, family)
			Expect(err).NotTo(HaveOccurred())
			AddReportEntry(fmt.Sprintf("path MTU to the %s VIP", family), mtu)
			Expect(mtu).To(Equal(expectedPathMTU(family)), "the MTU the load balancer announced")
		})
	}
})

// expectedPathMTU is the client's MTU less what the ebpf datapath adds: an outer IP header of
// the VIP's family, and for GUE a UDP and a GUE header.
func expectedPathMTU(family corev1.IPFamily) int {
	mtu := env.ClientMTU
	if mtu == 0 {
		mtu = 1500
	}
	if env.Datapath != "ebpf" {
		return mtu
	}
	mtu -= ipHeaderLen(family)
	if env.Encap == "gue" {
		mtu -= 8 + 4
	}
	return mtu
}

func ipHeaderLen(family corev1.IPFamily) int {
	if family == corev1.IPv6Protocol {
		return 40
	}
	return 20
}

// upload POSTs size bytes to the VIP and returns the backend's answer and how many bytes it
// says it read.
func upload(vip string, port int32, size int) (answer, int, error) {
	h, err := dialHTTP(vip, port, 0)
	if err != nil {
		return answer{}, 0, err
	}
	defer h.closeNow()
	body, err := h.roundTrip("POST", "/", make([]byte, size), 30*time.Second)
	if err != nil {
		return answer{}, 0, err
	}
	a, err := parseAnswer(string(body))
	if err != nil {
		return a, 0, err
	}
	_, rest, _ := strings.Cut(string(body), "\n")
	var read int
	if _, err := fmt.Sscanf(rest, "read %d bytes", &read); err != nil {
		return a, 0, fmt.Errorf("no byte count in %q", body)
	}
	return a, read, nil
}

// fullSizeUDPEcho sends datagrams as big as the path allows, with fragmentation forbidden,
// until one is answered, and returns the path MTU the client's kernel then holds. The first
// datagram fills the client's link; a "fragmentation needed" or "packet too big" in return
// lowers the path MTU, which the next datagram follows.
func fullSizeUDPEcho(vip string, port int32, family corev1.IPFamily) (int, error) {
	c, err := dial("udp", net.JoinHostPort(vip, strconv.Itoa(int(port))), 0)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	level, discover, mtuOption := unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_MTU
	if family == corev1.IPv6Protocol {
		level, discover, mtuOption = unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_MTU
	}
	sockopt := func(f func(fd int) error) error {
		var inner error
		if err := raw.Control(func(fd uintptr) { inner = f(int(fd)) }); err != nil {
			return err
		}
		return inner
	}
	// IP_PMTUDISC_DO and IPV6_PMTUDISC_DO are both 2: never fragment, follow the path MTU.
	if err := sockopt(func(fd int) error { return unix.SetsockoptInt(fd, level, discover, unix.IP_PMTUDISC_DO) }); err != nil {
		return 0, fmt.Errorf("forbidding fragmentation: %w", err)
	}
	pathMTU := func() (int, error) {
		var mtu int
		err := sockopt(func(fd int) (err error) { mtu, err = unix.GetsockoptInt(fd, level, mtuOption); return err })
		return mtu, err
	}
	headers := ipHeaderLen(family) + 8
	buf := make([]byte, 2048)
	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		mtu, err := pathMTU()
		if err != nil {
			return 0, err
		}
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(make([]byte, mtu-headers)); err != nil {
			if errors.Is(err, syscall.EMSGSIZE) {
				lastErr = err // the path MTU dropped since it was read: read it again
				continue
			}
			return 0, err
		}
		n, err := c.Read(buf)
		if err != nil {
			lastErr = fmt.Errorf("a datagram of %d bytes (path MTU %d): %w", mtu-headers, mtu, err)
			continue
		}
		if _, err := parseAnswer(string(buf[:n])); err != nil {
			return 0, err
		}
		return mtu, nil
	}
	return 0, fmt.Errorf("no answer to a full-size datagram: %w", lastErr)
}
