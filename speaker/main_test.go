// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/netlab"
	"github.com/maglb/maglb/internal/testenv"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

const (
	metallbNamespace = "metallb-system"
	torASN           = 64500
	nodeASN          = 64512
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m))
}

var (
	buildOnce  sync.Once
	speakerBin string
	buildErr   error
)

// binary builds the speaker once per test run: it must run inside a namespace, as its own
// process, since a Go process cannot move the sockets of its BGP library there.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "maglb-speaker-")
		if err != nil {
			buildErr = err
			return
		}
		speakerBin = filepath.Join(dir, "speaker")
		out, err := exec.Command("go", "build", "-o", speakerBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return speakerBin
}

// bgpLab is a ToR router (FRR) with a bridge that the LB nodes' namespaces plug into,
// 172.30.0.0/24, the router at .1.
type bgpLab struct {
	env    *testenv.Env
	tor    *netlab.Namespace
	router *netlab.FRR
	nodes  map[string]*netlab.Namespace
}

func newBGPLab(t testing.TB, nodes map[string]string) *bgpLab {
	t.Helper()
	return newBGPLabWith(t, nodes, torSettings{})
}

// torSettings add to the ToR of newBGPLabWith: lines of its `router bgp` block, lines for each
// neighbor (%[1]s is the neighbor's address), and the daemons FRR runs besides zebra and bgpd;
// peers, when set, names the nodes that are its neighbors (all of them otherwise).
type torSettings struct {
	router, neighbor []string
	frr              []netlab.FRROption
	peers            func(node string) bool
}

func newBGPLabWith(t testing.TB, nodes map[string]string, tor torSettings) *bgpLab {
	t.Helper()
	netlab.Require(t, append([]string{"ip"}, netlab.FRRPrograms...)...)
	env := testenv.Get(t)
	lab := &bgpLab{env: env, nodes: map[string]*netlab.Namespace{}}
	var err error
	if lab.tor, err = netlab.NewNamespace(t); err != nil {
		t.Fatal(err)
	}
	must(t)(lab.tor.Run("ip", "link", "add", "br0", "type", "bridge"))
	must(t)(lab.tor.Run("ip", "link", "set", "br0", "up"))
	must(t)(lab.tor.Run("ip", "addr", "add", "172.30.0.1/24", "dev", "br0"))
	var neighbors strings.Builder
	i := 0
	for name, addr := range nodes {
		i++
		ns, err := netlab.NewNamespace(t)
		if err != nil {
			t.Fatal(err)
		}
		port := fmt.Sprintf("p%d", i)
		if err := netlab.Connect(ns, "eth0", lab.tor, port); err != nil {
			t.Fatal(err)
		}
		must(t)(lab.tor.Run("ip", "link", "set", port, "master", "br0"))
		must(t)(ns.Run("ip", "addr", "add", addr+"/24", "dev", "eth0"))
		// The speaker reaches the API server through its own loopback.
		if err := netlab.Forward(t, ns, apiServerHostPort(t, env), apiServerHostPort(t, env)); err != nil {
			t.Fatal(err)
		}
		lab.nodes[name] = ns
		createNode(t, name, addr, nil)
		if tor.peers != nil && !tor.peers(name) {
			continue
		}
		fmt.Fprintf(&neighbors, " neighbor %s remote-as %d\n", addr, nodeASN)
		for _, line := range tor.neighbor {
			fmt.Fprintf(&neighbors, " "+line+"\n", addr)
		}
	}
	var router strings.Builder
	for _, line := range tor.router {
		router.WriteString(" " + line + "\n")
	}
	config := fmt.Sprintf("frr defaults traditional\nhostname tor\n!\nrouter bgp %d\n bgp router-id 172.30.0.1\n no bgp ebgp-requires-policy\n timers bgp 3 9\n%s%s!\n",
		torASN, router.String(), neighbors.String())
	if lab.router, err = netlab.StartFRR(t, lab.tor, config, tor.frr...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("router logs:\n%s", lab.router.Logs())
		}
	})
	return lab
}

// startSpeaker runs the speaker of node in its namespace until the test ends, or until the
// returned stop is called: stop sends SIGTERM, as a kubelet does, and waits for the process
// (killing it after 10 s). Stopping again does nothing.
func (l *bgpLab) startSpeaker(t testing.TB, node string, args ...string) (stop func()) {
	t.Helper()
	return l.startProgram(t, node, binary(t), nil, l.speakerArgs(node, args...)...)
}

// startProgram runs a speaker program in node's namespace, with env added to the test's
// environment, as startSpeaker describes.
func (l *bgpLab) startProgram(t testing.TB, node, program string, env []string, args ...string) (stop func()) {
	t.Helper()
	return l.startLogged(t, node, filepath.Join(t.TempDir(), node+".log"), program, env, args...)
}

// startLogged is startProgram logging to the file at logPath.
func (l *bgpLab) startLogged(t testing.TB, node, logPath, program string, env []string, args ...string) (stop func()) {
	t.Helper()
	_, stop = l.startProcess(t, node, logPath, program, env, args...)
	return stop
}

// startCrashable starts node's speaker, logging to logName in the test's directory, and
// returns a crash: SIGKILL, so that the speaker releases nothing.
func (l *bgpLab) startCrashable(t testing.TB, node, logName string) (crash func()) {
	t.Helper()
	cmd, _ := l.startProcess(t, node, filepath.Join(t.TempDir(), logName), binary(t), nil, l.speakerArgs(node)...)
	return func() { _ = cmd.Process.Kill() }
}

// speakerArgs are the arguments of node's speaker: the lab's, then args.
func (l *bgpLab) speakerArgs(node string, args ...string) []string {
	return append([]string{
		"--node-name", node, "--kubeconfig", l.env.Kubeconfig, "--namespace", metallbNamespace, "--log-level", "debug",
		// The tests scrape metrics over plain HTTP.
		"--metrics-secure=false",
	}, args...)
}

// startProcess is startLogged returning the process too.
func (l *bgpLab) startProcess(t testing.TB, node, logPath, program string, env []string, args ...string) (*exec.Cmd, func()) {
	t.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := l.nodes[node].Command(context.Background(), program, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			out, _ := os.ReadFile(logFile.Name())
			t.Logf("speaker %s log:\n%s", node, tail(string(out), 60))
		}
		logFile.Close()
	})
	return cmd, stop
}

// route returns the next hops of the router's valid paths for prefix and the communities
// of the first of them.
func (l *bgpLab) route(t testing.TB, prefix string) route {
	t.Helper()
	paths, err := l.router.Paths(netip.MustParsePrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	var r route
	for _, p := range paths {
		if !p.Valid {
			continue
		}
		for _, nh := range p.Nexthops {
			r.nextHops = append(r.nextHops, nh.IP)
		}
		if r.communities == "" {
			r.communities = p.Community.String
		}
	}
	return r
}

type route struct {
	nextHops    []string
	communities string
}

func TestBGPAndShards(t *testing.T) {
	lab := newBGPLab(t, map[string]string{"lb1": "172.30.0.2", "lb2": "172.30.0.3"})
	c := lab.env.Client
	ensureNamespace(t, metallbNamespace)
	labelNode(t, "lb1", map[string]string{"maglb.io/shard-gold": ""})
	labelNode(t, "lb2", map[string]string{"maglb.io/shard-silver": ""})
	gold := pool("gold", "198.51.100.0/26", "gold")
	silver := pool("silver", "198.51.100.64/26", "silver")
	shared := pool("shared", "192.0.2.0/24", "")
	peer := &metallbv1beta2.BGPPeer{
		ObjectMeta: metav1.ObjectMeta{Name: "tor", Namespace: metallbNamespace},
		Spec:       metallbv1beta2.BGPPeerSpec{MyASN: nodeASN, ASN: torASN, Address: "172.30.0.1", HoldTime: &metav1.Duration{Duration: 9 * time.Second}},
	}
	adv := &metallbv1beta1.BGPAdvertisement{
		ObjectMeta: metav1.ObjectMeta{Name: "all", Namespace: metallbNamespace},
		Spec:       metallbv1beta1.BGPAdvertisementSpec{Communities: []string{"64512:100"}},
	}
	for _, obj := range []client.Object{gold, silver, shared, peer, adv} {
		create(t, obj)
	}
	goldSvc := loadBalancer(t, "web-gold", "198.51.100.1", "gold", "lb1")
	silverSvc := loadBalancer(t, "web-silver", "198.51.100.65", "silver", "lb2")
	loadBalancer(t, "web-shared", "192.0.2.10", "shared", "lb1")

	lab.startSpeaker(t, "lb1")
	lab.startSpeaker(t, "lb2")

	testenv.Eventually(t, "routes at the ToR", func() error {
		for prefix, want := range map[string][]string{
			"198.51.100.1/32":  {"172.30.0.2"},               // gold: lb1 only
			"198.51.100.65/32": {"172.30.0.3"},               // silver: lb2 only
			"192.0.2.10/32":    {"172.30.0.2", "172.30.0.3"}, // unsharded: both
		} {
			got := lab.route(t, prefix)
			if !sameSet(got.nextHops, want) {
				return fmt.Errorf("%s: next hops %v, want %v", prefix, got.nextHops, want)
			}
			if !strings.Contains(got.communities, "64512:100") {
				return fmt.Errorf("%s: communities %q, want 64512:100", prefix, got.communities)
			}
		}
		return nil
	})

	t.Run("status, events and metrics", func(t *testing.T) {
		testenv.Eventually(t, "ServiceBGPStatus of web-gold on lb1", func() error {
			var list metallbv1beta1.ServiceBGPStatusList
			if err := c.List(context.Background(), &list, client.InNamespace(metallbNamespace),
				client.MatchingLabels{"metallb.io/service-name": "web-gold", "metallb.io/node": "lb1"}); err != nil {
				return err
			}
			if len(list.Items) != 1 || len(list.Items[0].Status.Peers) != 1 || list.Items[0].Status.Peers[0] != "tor" {
				return fmt.Errorf("%+v", list.Items)
			}
			return nil
		})
		waitForEvent(t, goldSvc, "nodeAssigned", `announcing from node "lb1" with protocol "bgp"`)
		testenv.Eventually(t, "metallb_bgp_session_up on lb1", func() error {
			out, err := lab.nodes["lb1"].Run("curl", "-s", "http://127.0.0.1:7472/metrics")
			if err != nil {
				return err
			}
			for _, want := range []string{"metallb_bgp_session_up{", "metallb_speaker_announced{", "metallb_k8s_client_config_loaded_bool 1"} {
				if !strings.Contains(out, want) {
					return fmt.Errorf("no %s in the metrics", want)
				}
			}
			return nil
		})
		waitForState(t, "speaker-lb1", metallbv1beta1.ConfigurationResultValid)
	})

	t.Run("withdrawn when the endpoints go, and when the service goes", func(t *testing.T) {
		deleteObject(t, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-gold"}})
		deleteObject(t, silverSvc)
		testenv.Eventually(t, "withdrawals", func() error {
			for _, prefix := range []string{"198.51.100.1/32", "198.51.100.65/32"} {
				if r := lab.route(t, prefix); len(r.nextHops) > 0 {
					return fmt.Errorf("%s still routed via %v", prefix, r.nextHops)
				}
			}
			if r := lab.route(t, "192.0.2.10/32"); len(r.nextHops) != 2 {
				return fmt.Errorf("the unrelated route changed: %v", r)
			}
			return nil
		})
	})
}

// announcePool creates the pool name of cidr, the BGPPeer tor (the lab's ToR) and a
// BGPAdvertisement of every pool: what a test needs to see cidr's VIPs at the router.
func announcePool(t testing.TB, name, cidr string) {
	ensureNamespace(t, metallbNamespace)
	for _, obj := range []client.Object{
		pool(name, cidr, ""),
		&metallbv1beta2.BGPPeer{
			ObjectMeta: metav1.ObjectMeta{Name: "tor", Namespace: metallbNamespace},
			Spec:       metallbv1beta2.BGPPeerSpec{MyASN: nodeASN, ASN: torASN, Address: "172.30.0.1", HoldTime: &metav1.Duration{Duration: 9 * time.Second}},
		},
		&metallbv1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metallbNamespace}},
	} {
		create(t, obj)
	}
}

func pool(name, cidr, shard string) *maglbv1beta1.IPAddressPool {
	p := &maglbv1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metallbNamespace}}
	p.Spec.Addresses = []string{cidr}
	p.Spec.Shard = shard
	return p
}

// loadBalancer creates a Service as the controller leaves it (status IP, pool annotation)
// with one ready endpoint on node.
func loadBalancer(t testing.TB, name, ip, pool, node string) *corev1.Service {
	t.Helper()
	c := testenv.Get(t).Client
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: map[string]string{"metallb.io/ip-allocated-from-pool": pool}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, AllocateLoadBalancerNodePorts: ptr.To(false),
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
		},
	}
	create(t, svc)
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
	if err := c.Status().Update(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	create(t, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}, NodeName: ptr.To(node), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
	})
	return svc
}

func createNode(t testing.TB, name, addr string, labels map[string]string) {
	t.Helper()
	c := testenv.Get(t).Client
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	create(t, node)
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}
	if err := c.Status().Update(context.Background(), node); err != nil {
		t.Fatal(err)
	}
}

func labelNode(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	c := testenv.Get(t).Client
	testenv.Eventually(t, "labelling "+name, func() error {
		var node corev1.Node
		if err := c.Get(context.Background(), client.ObjectKey{Name: name}, &node); err != nil {
			return err
		}
		if node.Labels == nil {
			node.Labels = map[string]string{}
		}
		for k, v := range labels {
			node.Labels[k] = v
		}
		return c.Update(context.Background(), &node)
	})
}

func ensureNamespace(t testing.TB, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := testenv.Get(t).Client.Create(context.Background(), ns); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

func create(t testing.TB, obj client.Object) {
	t.Helper()
	if err := testenv.Get(t).Client.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
	t.Cleanup(func() { deleteObject(t, obj) })
}

func deleteObject(t testing.TB, obj client.Object) {
	t.Helper()
	if err := testenv.Get(t).Client.Delete(context.Background(), obj); client.IgnoreNotFound(err) != nil {
		t.Errorf("deleting %s: %v", obj.GetName(), err)
	}
}

func waitForEvent(t testing.TB, svc *corev1.Service, reason, text string) {
	t.Helper()
	testenv.Eventually(t, "event "+reason, func() error {
		var events corev1.EventList
		if err := testenv.Get(t).Client.List(context.Background(), &events, client.InNamespace(svc.Namespace)); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Name == svc.Name && e.Reason == reason && strings.Contains(e.Message, text) {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(events.Items))
	})
}

func waitForState(t testing.TB, name string, result metallbv1beta1.ConfigurationResult) {
	t.Helper()
	testenv.Eventually(t, "ConfigurationState "+name, func() error {
		var state metallbv1beta1.ConfigurationState
		if err := testenv.Get(t).Client.Get(context.Background(), client.ObjectKey{Namespace: metallbNamespace, Name: name}, &state); err != nil {
			return err
		}
		if state.Status.Result != result {
			return fmt.Errorf("%+v", state.Status)
		}
		return nil
	})
}

func apiServerHostPort(t testing.TB, env *testenv.Env) string {
	t.Helper()
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !strings.Contains(strings.Join(b, ","), x) {
			return false
		}
	}
	return true
}

// must fails the test when the command whose output and error it is given failed.
func must(t testing.TB) func(string, error) {
	return func(_ string, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func tail(s string, lines int) string {
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
