//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/netlab"
	"github.com/maglb/maglb/internal/nsexec"
	"github.com/maglb/maglb/internal/promtext"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// ---------------------------------------------------------------------------------------------
// Kubernetes objects; each is deleted when the spec (or the container, from BeforeAll) ends.

func ensureNamespace(ctx context.Context, name string) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"e2e": name}}}
	// The namespace stays: clusters without a namespace controller (the dev-env) would keep
	// it terminating forever. The specs delete what they create in it.
	Expect(client.IgnoreAlreadyExists(cs.Create(ctx, ns))).To(Succeed())
}

// create creates obj and deletes it at the end of the current spec or container.
func create(ctx context.Context, obj client.Object) {
	GinkgoHelper()
	Expect(cs.Create(ctx, obj)).To(Succeed())
	// The cleanup's own context: the spec's is cancelled once the spec has failed.
	DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(cs.Delete(ctx, obj))).To(Succeed()) })
}

func pool(addresses []string, shard string) maglbv1beta1.IPAddressPoolSpec {
	var spec maglbv1beta1.IPAddressPoolSpec
	spec.Addresses, spec.Shard = addresses, shard
	return spec
}

// createAdvertisedPool creates a pool that assigns only on request (the address-pool
// annotation) and an advertisement of it, BGP or L2 as the environment announces, both
// named name.
func createAdvertisedPool(ctx context.Context, name string, cidrs ...string) {
	GinkgoHelper()
	createPool(ctx, name, cidrs, func(s *maglbv1beta1.IPAddressPoolSpec) { s.AutoAssign = ptr.To(false) })
	meta := metav1.ObjectMeta{Name: name, Namespace: env.Namespace}
	if env.Protocol == "layer2" {
		create(ctx, &metallbv1beta1.L2Advertisement{ObjectMeta: meta, Spec: metallbv1beta1.L2AdvertisementSpec{IPAddressPools: []string{name}}})
		return
	}
	create(ctx, &metallbv1beta1.BGPAdvertisement{ObjectMeta: meta, Spec: metallbv1beta1.BGPAdvertisementSpec{IPAddressPools: []string{name}}})
}

func createPool(ctx context.Context, name string, addresses []string, mutate func(*maglbv1beta1.IPAddressPoolSpec)) *maglbv1beta1.IPAddressPool {
	GinkgoHelper()
	p := &maglbv1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: env.Namespace}, Spec: pool(addresses, "")}
	if mutate != nil {
		mutate(&p.Spec)
	}
	create(ctx, p)
	return p
}

// createService creates a LoadBalancer Service with one TCP port (and the options' changes).
func createService(ctx context.Context, namespace, name string, annotations map[string]string, port int32, options ...func(*corev1.Service)) *corev1.Service {
	GinkgoHelper()
	svc := loadBalancerService(namespace, name, annotations, port, options...)
	create(ctx, svc)
	return svc
}

// loadBalancerService is the Service createService creates.
func loadBalancerService(namespace, name string, annotations map[string]string, port int32, options ...func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, AllocateLoadBalancerNodePorts: ptr.To(false),
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(port)}},
		},
	}
	for _, o := range options {
		o(svc)
	}
	return svc
}

// withUDP adds the environment's UDP echo port.
func withUDP(svc *corev1.Service) {
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "udp", Protocol: corev1.ProtocolUDP, Port: env.UDPPort, TargetPort: intstr.FromInt32(env.UDPPort)})
}

// dualStack asks for an IP of each family.
func dualStack(svc *corev1.Service) {
	svc.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack)
	svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
}

func withLocalTraffic(svc *corev1.Service) {
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
}

// createBackedService is createService on the environment's HTTP port (and UDP), with an
// EndpointSlice putting the backends of nodes (every backend node when none is named)
// behind it: the Service has no selector, as no kubelet runs pods in the lab.
func createBackedService(ctx context.Context, namespace, name string, annotations map[string]string, nodes []string, options ...func(*corev1.Service)) *corev1.Service {
	GinkgoHelper()
	svc := createService(ctx, namespace, name, annotations, env.HTTPPort, append([]func(*corev1.Service){withUDP, func(s *corev1.Service) { s.Spec.Selector = nil }}, options...)...)
	if len(nodes) == 0 {
		nodes = backendNames()
	}
	setEndpoints(ctx, svc, nodes)
	return svc
}

// setEndpoints makes the service's endpoints the pods of nodes, one EndpointSlice per family of
// the service; a node the environment lists no pods of gets an endpoint at its own address.
func setEndpoints(ctx context.Context, svc *corev1.Service, nodes []string) {
	GinkgoHelper()
	for _, slice := range endpointSlices(svc, nodes) {
		var existing discoveryv1.EndpointSlice
		err := cs.Get(ctx, client.ObjectKeyFromObject(slice), &existing)
		if apierrors.IsNotFound(err) {
			create(ctx, slice)
			continue
		}
		Expect(err).NotTo(HaveOccurred())
		existing.Endpoints, existing.Ports = slice.Endpoints, slice.Ports
		Expect(cs.Update(ctx, &existing)).To(Succeed())
	}
}

// endpointSlices are the EndpointSlices that put the pods of nodes behind svc, one per family.
func endpointSlices(svc *corev1.Service, nodes []string) []*discoveryv1.EndpointSlice {
	families := svc.Spec.IPFamilies
	if len(families) == 0 {
		families = []corev1.IPFamily{corev1.IPv4Protocol}
	}
	var perFamily []*discoveryv1.EndpointSlice
	for _, family := range families {
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: svc.Name + "-e2e-" + strings.ToLower(string(family)), Namespace: svc.Namespace, Labels: map[string]string{
				discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "maglb-e2e",
			}},
			AddressType: discoveryv1.AddressType(family),
		}
		for _, p := range svc.Spec.Ports {
			slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(p.Port), Protocol: ptr.To(p.Protocol)})
		}
		for _, n := range nodes {
			for _, addr := range endpointAddresses(n, family) {
				slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
					Addresses: []string{addr}, NodeName: ptr.To(n),
					Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
				})
			}
		}
		perFamily = append(perFamily, slice)
	}
	return perFamily
}

// endpointAddresses are the addresses of family of the pods on node, or the node's own when
// the environment lists none.
func endpointAddresses(node string, family corev1.IPFamily) []string {
	var addrs []string
	for _, name := range podsOn(node) {
		addr := env.Pods[name].Address
		if family == corev1.IPv6Protocol {
			addr = env.Pods[name].Address6
		}
		addrs = append(addrs, addr)
	}
	if len(addrs) == 0 {
		return []string{nodeAddress(node, family)}
	}
	return addrs
}

// podsOn returns the names of the environment's pods on node.
func podsOn(node string) []string {
	var names []string
	for _, name := range slices.Sorted(maps.Keys(env.Pods)) {
		if env.Pods[name].Node == node {
			names = append(names, name)
		}
	}
	return names
}

// nodeAddress is a backend or LB node's address of family.
func nodeAddress(node string, family corev1.IPFamily) string {
	if family == corev1.IPv6Protocol {
		return cmp.Or(env.Backends[node].Address6, env.LBNodes[node].Address6)
	}
	return cmp.Or(env.Backends[node].Address, env.LBNodes[node].Address)
}

func backendNames() []string { return slices.Sorted(maps.Keys(env.Backends)) }
func lbNames() []string      { return slices.Sorted(maps.Keys(env.LBNodes)) }

func lbAddresses(names ...string) []string { return nodeAddressesOf(corev1.IPv4Protocol, names...) }

func nodeAddressesOf(family corev1.IPFamily, names ...string) []string {
	var addrs []string
	for _, n := range names {
		addrs = append(addrs, nodeAddress(n, family))
	}
	slices.Sort(addrs)
	return addrs
}

func ingressOf(ctx context.Context, svc *corev1.Service) func() ([]string, error) {
	return func() ([]string, error) {
		var got corev1.Service
		if err := cs.Get(ctx, client.ObjectKeyFromObject(svc), &got); err != nil {
			return nil, err
		}
		ips := []string{}
		for _, in := range got.Status.LoadBalancer.Ingress {
			ips = append(ips, in.IP)
		}
		return ips, nil
	}
}

// vipOf waits for the service's one ingress IP.
func vipOf(ctx context.Context, svc *corev1.Service) string {
	GinkgoHelper()
	Eventually(ingressOf(ctx, svc)).Should(HaveLen(1), "an IP for %s/%s", svc.Namespace, svc.Name)
	ips, _ := ingressOf(ctx, svc)()
	return ips[0]
}

func annotationOf(ctx context.Context, svc *corev1.Service, key string) func() (string, error) {
	return func() (string, error) {
		var got corev1.Service
		err := cs.Get(ctx, client.ObjectKeyFromObject(svc), &got)
		return got.Annotations[key], err
	}
}

func eventReasons(ctx context.Context, svc *corev1.Service) func() ([]string, error) {
	return func() ([]string, error) {
		var events corev1.EventList
		if err := cs.List(ctx, &events, client.InNamespace(svc.Namespace)); err != nil {
			return nil, err
		}
		var reasons []string
		for _, e := range events.Items {
			if e.InvolvedObject.Name == svc.Name {
				reasons = append(reasons, e.Reason)
			}
		}
		return reasons, nil
	}
}

func controllerState(ctx context.Context) func() (metallbv1beta1.ConfigurationResult, error) {
	return func() (metallbv1beta1.ConfigurationResult, error) {
		var state metallbv1beta1.ConfigurationState
		err := cs.Get(ctx, client.ObjectKey{Namespace: env.Namespace, Name: "controller"}, &state)
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("no ConfigurationState controller in %s", env.Namespace)
		}
		return state.Status.Result, err
	}
}

// testCIDR returns the i-th of 8 blocks of the upper half of the environment's VIP range:
// the suites' own pools, apart from the lab's (lower half) and each other's.
func testCIDR(i int) string { return testBlock(env.VIPRange, i) }

// testCIDR6 is testCIDR in the IPv6 VIP range.
func testCIDR6(i int) string { return testBlock(env.VIPRange6, i) }

func testBlock(vipRange string, i int) string {
	r := netip.MustParsePrefix(vipRange)
	bits := r.Bits() + 4
	// The block's offset, (8+i)·2^(hostbits-4), added to the range's address byte by byte.
	addr := r.Addr().AsSlice()
	offset := new(big.Int).Lsh(big.NewInt(int64(8+i)), uint(r.Addr().BitLen()-bits))
	sum := new(big.Int).Add(new(big.Int).SetBytes(addr), offset).FillBytes(make([]byte, len(addr)))
	block, _ := netip.AddrFromSlice(sum)
	return netip.PrefixFrom(block, bits).String()
}

// ---------------------------------------------------------------------------------------------
// Routers

// vtysh runs commands in the named router of the environment.
func vtysh(name string, commands ...string) (string, error) {
	r, ok := env.Routers[name]
	if !ok || len(r.Exec) == 0 {
		return "", fmt.Errorf("the environment has no router %q", name)
	}
	args := slices.Clone(r.Exec[1:])
	for _, c := range commands {
		args = append(args, "-c", c)
	}
	out, err := exec.Command(r.Exec[0], args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", r.Exec[0], strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// paths returns the router's valid BGP paths for prefix.
func paths(routerName, prefix string) ([]netlab.Path, error) {
	family := "ipv4"
	if strings.Contains(prefix, ":") {
		family = "ipv6"
	}
	out, err := vtysh(routerName, fmt.Sprintf("show bgp %s unicast %s json", family, prefix))
	if err != nil {
		return nil, err
	}
	all, err := netlab.DecodePaths(out)
	var valid []netlab.Path
	for _, p := range all {
		if p.Valid {
			valid = append(valid, p)
		}
	}
	return valid, err
}

// nexthops returns, for Eventually, the sorted global next hops of the router's valid paths
// for prefix (a host route when prefix has no length).
func nexthops(routerName, prefix string) func() ([]string, error) {
	if !strings.Contains(prefix, "/") {
		prefix = netip.PrefixFrom(netip.MustParseAddr(prefix), netip.MustParseAddr(prefix).BitLen()).String()
	}
	return func() ([]string, error) {
		ps, err := paths(routerName, prefix)
		hops := []string{}
		for _, p := range ps {
			for _, h := range p.Nexthops {
				// IPv6 paths carry the peer's link-local next hop besides its global one.
				if !netip.MustParseAddr(h.IP).IsLinkLocalUnicast() {
					hops = append(hops, h.IP)
				}
			}
		}
		slices.Sort(hops)
		return slices.Compact(hops), err
	}
}

// ---------------------------------------------------------------------------------------------
// Traffic from the client

// dial connects from the client (its namespace, when the environment names one), from
// localPort when it is not 0.
func dial(network, address string, localPort int) (net.Conn, error) {
	d := &net.Dialer{Timeout: 3 * time.Second}
	if localPort != 0 {
		switch network {
		case "udp":
			d.LocalAddr = &net.UDPAddr{Port: localPort}
		default:
			d.LocalAddr = &net.TCPAddr{Port: localPort}
		}
	}
	if env.ClientNetns == "" {
		return d.Dial(network, address)
	}
	return nsexec.Dial(env.ClientNetns, d, network, address)
}

// answer is what an echo server says: "<pod> on <node> saw <client>", or "<node> saw <client>"
// where it runs on the node itself. Backend is the node.
type answer struct {
	Backend, Pod, Client string
}

func parseAnswer(body string) (answer, error) {
	first, _, _ := strings.Cut(body, "\n")
	name, seen, ok := strings.Cut(first, " saw ")
	if !ok {
		return answer{}, fmt.Errorf("not an echo answer: %q", first)
	}
	a := answer{Backend: name}
	if pod, node, onNode := strings.Cut(name, " on "); onNode {
		a.Pod, a.Backend = pod, node
	}
	host, _, err := net.SplitHostPort(seen)
	a.Client = host
	return a, err
}

// httpConn is a keep-alive HTTP/1.1 connection to a VIP.
type httpConn struct {
	conn   net.Conn
	reader *bufio.Reader
}

func dialHTTP(vip string, port int32, localPort int) (*httpConn, error) {
	c, err := dial("tcp", net.JoinHostPort(vip, strconv.Itoa(int(port))), localPort)
	if err != nil {
		return nil, err
	}
	return &httpConn{conn: c, reader: bufio.NewReader(c)}, nil
}

// roundTrip sends one request on the connection, with body (none when nil), and returns the
// answer's body.
func (h *httpConn) roundTrip(method, path string, body []byte, timeout time.Duration) ([]byte, error) {
	_ = h.conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(h.conn, "%s %s HTTP/1.1\r\nHost: e2e\r\nContent-Length: %d\r\n\r\n", method, path, len(body)); err != nil {
		return nil, err
	}
	if _, err := h.conn.Write(body); err != nil {
		return nil, fmt.Errorf("sending the body: %w", err)
	}
	resp, err := http.ReadResponse(h.reader, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// get sends one request on the connection and reads the answer, and how many bytes the
// body had.
func (h *httpConn) get(path string, timeout time.Duration) (answer, int, error) {
	body, err := h.roundTrip("GET", path, nil, timeout)
	if err != nil {
		return answer{}, 0, err
	}
	a, err := parseAnswer(string(body))
	return a, len(body), err
}

// closeNow closes with a reset (SO_LINGER 0), so that no TIME_WAIT keeps the client's port:
// the same flow can be opened again at once.
func (h *httpConn) closeNow() {
	if tcp, ok := h.conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = h.conn.Close()
}

// fetch opens a connection (from localPort when not 0), gets path and closes.
func fetch(vip string, port int32, path string, localPort int) (answer, int, error) {
	h, err := dialHTTP(vip, port, localPort)
	if err != nil {
		return answer{}, 0, err
	}
	defer h.closeNow()
	return h.get(path, 3*time.Second)
}

// udpEcho sends one datagram to vip and returns the answer.
func udpEcho(vip string, port int32) (answer, error) {
	c, err := dial("udp", net.JoinHostPort(vip, strconv.Itoa(int(port))), 0)
	if err != nil {
		return answer{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("e2e\n")); err != nil {
		return answer{}, err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return answer{}, err
	}
	return parseAnswer(string(buf[:n]))
}

// reachable is, for Eventually, an HTTP answer through vip.
func reachable(vip string) func() (answer, error) {
	return func() (answer, error) {
		a, _, err := fetch(vip, env.HTTPPort, "/", 0)
		return a, err
	}
}

// expectAnswersThrough waits until HTTP and UDP get a backend's answer through vip, and checks
// whom the backend saw (clientsSeen).
func expectAnswersThrough(svc *corev1.Service, vip string) {
	GinkgoHelper()
	Eventually(reachable(vip)).Should(WithTransform(backendOf, BeElementOf(backendNames())), "HTTP through %s", vip)
	Eventually(func() (answer, error) { return udpEcho(vip, env.UDPPort) }).Should(WithTransform(backendOf, BeElementOf(backendNames())), "UDP through %s", vip)
	// Each node's kube-proxy takes up a new Service on its own time: ask until a flow is answered.
	Eventually(reachable(vip)).Should(WithTransform(func(a answer) string { return a.Client }, BeElementOf(clientsSeen(svc, vip))),
		"the address the backend saw")
}

// clientsSeen returns the addresses a pod may see as the source of the client's request
// through vip: the client's own with externalTrafficPolicy Local, where nothing masquerades
// it; with Cluster, the addresses of the nodes whose kube-proxy masquerades it: the backend
// nodes behind the ebpf datapath (direct server return to the node), the LB nodes with the
// kubeproxy datapath.
func clientsSeen(svc *corev1.Service, vip string) []string {
	family := corev1.IPv4Protocol
	client := env.ClientAddress
	if strings.Contains(vip, ":") {
		family, client = corev1.IPv6Protocol, env.ClientAddress6
	}
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		return []string{client}
	}
	if env.Datapath == "ebpf" && len(env.Pods) > 0 {
		return nodeAddressesOf(family, backendNames()...)
	}
	if env.Datapath == "ebpf" {
		return []string{client} // backends without kube-proxy (no pods listed) see the client
	}
	return nodeAddressesOf(family, lbNames()...)
}

func backendOf(a answer) string { return a.Backend }

// everyNodeForwards waits until flows, each from its own port, all get an answer through
// vip: ECMP spreads them over the LB nodes, and each node programs its datapath (or its
// kube-proxy syncs) on its own time.
func everyNodeForwards(vip string) {
	GinkgoHelper()
	const flows = 30
	Eventually(func() error {
		for i := range flows {
			if _, _, err := fetch(vip, env.HTTPPort, "/", 0); err != nil {
				return fmt.Errorf("flow %d of %d: %w", i+1, flows, err)
			}
		}
		return nil
	}).Should(Succeed())
}

// ---------------------------------------------------------------------------------------------
// Metrics and LB nodes

func scrape(url string) (string, error) {
	return scrapeWithin(url, 5*time.Second)
}

// scrapeWithin is scrape with a timeout of its own.
func scrapeWithin(url string, timeout time.Duration) (string, error) {
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(body), err
}

// lbMetric sums a metric's samples with labels over the named LB nodes' speakers.
func lbMetric(nodes []string, name string, labels ...string) (float64, error) {
	var total float64
	for _, n := range nodes {
		text, err := scrape(env.LBNodes[n].Metrics)
		if err != nil {
			return 0, err
		}
		v, _, err := promtext.Sum(text, name, labels...)
		if err != nil {
			return 0, err
		}
		total += v
	}
	return total, nil
}

// nodeDown takes an LB node out of service with the environment's command (the lab stops
// its speaker, which withdraws its routes); nodeUp brings it back.
func nodeDown(node string) { runCommand(env.NodeDown, node) }
func nodeUp(node string)   { runCommand(env.NodeUp, node) }

// runCommand runs one of the environment's commands, with args appended.
func runCommand(command []string, args ...string) {
	GinkgoHelper()
	Expect(command).NotTo(BeEmpty(), "the environment's description has no command for this")
	out, err := exec.Command(command[0], append(slices.Clone(command[1:]), args...)...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "%s %s: %s", strings.Join(command, " "), strings.Join(args, " "), out)
}

// netipBits is the length of a CIDR.
func netipBits(cidr string) int { return netip.MustParsePrefix(cidr).Bits() }
