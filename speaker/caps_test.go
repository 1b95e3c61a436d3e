// SPDX-License-Identifier: Apache-2.0

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/maglb/maglb/internal/netlab"
	"github.com/maglb/maglb/internal/rbactest"
	"github.com/maglb/maglb/internal/testenv"
)

// refusedByKernel is how a call the capabilities do not allow fails.
var refusedByKernel = regexp.MustCompile(`operation not permitted|permission denied`)

// The speaker with the eBPF datapath and the backend agent, each run as its DaemonSet runs
// it (root without any capability but those its manifest adds, no new privileges: setpriv),
// do their job: the speaker programs a Service into its XDP datapath and announces it, the
// agent attaches the decapsulation program and answers /healthz. With any one of those
// capabilities dropped, each fails with the kernel's refusal in its log: every capability
// the manifests grant is needed.
func TestCapabilities(t *testing.T) {
	netlab.Require(t, "setpriv", "curl")
	const (
		lbAddr      = "172.30.0.2"
		backendAddr = "172.30.0.10"
		vip         = "198.51.100.20"
	)
	lab := newBGPLab(t, map[string]string{"caps-lb": lbAddr})
	lb := lab.nodes["caps-lb"]
	lab.plug(t, "p-capsbe", backendAddr)
	createNode(t, "caps-be", backendAddr, nil)
	announcePool(t, "caps", "198.51.100.16/28")
	// Announced with ARP as well: the speaker answers for the VIP on its uplink.
	create(t, &metallbv1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "caps", Namespace: metallbNamespace}})
	loadBalancer(t, "caps-web", vip, "caps", "caps-be")

	speaker := func(t *testing.T, caps []string) component {
		return startWithCaps(t, lb, caps, "--node-name", "caps-lb", "--kubeconfig", lab.env.Kubeconfig,
			"--namespace", metallbNamespace, "--metrics-secure=false", "--datapath=ebpf", "--xdp-mode=generic",
			"--datapath-interface=eth0", "--keep-datapath-on-exit=false")
	}
	speakerWorks := func() error {
		used, err := speakerMetric(lb, "maglb_datapath_service_ids_used")
		if err != nil || used < 1 {
			return fmt.Errorf("no service programmed: maglb_datapath_service_ids_used %v, %v", used, err)
		}
		if r := lab.route(t, vip+"/32"); !sameSet(r.nextHops, []string{lbAddr}) {
			return fmt.Errorf("the VIP at the ToR via %v", r.nextHops)
		}
		if out, _ := lb.Run("ip", "link", "show", "dev", "eth0"); !strings.Contains(out, "xdpgeneric") {
			return fmt.Errorf("no XDP program on eth0")
		}
		return nil
	}
	// The agent runs on the LB node, behind the speaker's program (--decap-hook=auto, as
	// its manifest), which a speaker with the manifest's capabilities keeps attached.
	agent := func(t *testing.T, caps []string) component {
		return startWithCaps(t, lb, caps, "--role=backend-agent", "--host", lbAddr,
			"--backend-interfaces=eth0", "--xdp-mode=generic", "--decap-hook=auto", "--tunnel-sources=172.30.0.0/24",
			"--keep-datapath-on-exit=false")
	}
	agentWorks := func() error {
		out, err := lb.Run("curl", "-sS", "--max-time", "3", "http://"+lbAddr+":7476/healthz")
		if err != nil || strings.TrimSpace(out) != "ok" {
			return fmt.Errorf("/healthz: %q, %v", out, err)
		}
		return nil
	}
	speakerCaps := manifestCaps(t, "config/speaker/speaker.yaml")
	var underAgent component
	startUnderAgent := func(t *testing.T) {
		underAgent = speaker(t, speakerCaps)
		testenv.Eventually(t, "the speaker's program attached", speakerWorks)
	}

	for _, c := range []struct {
		name     string
		manifest string
		start    func(*testing.T, []string) component
		works    func() error
		before   func(*testing.T)
	}{
		{"speaker", "config/speaker/speaker.yaml", speaker, speakerWorks, nil},
		{"backend-agent", "config/backend-agent/backend-agent.yaml", agent, agentWorks, startUnderAgent},
	} {
		if c.before != nil {
			c.before(t)
		}
		caps := manifestCaps(t, c.manifest)
		t.Run(c.name+" with "+strings.Join(caps, ","), func(t *testing.T) {
			run := c.start(t, caps)
			defer run.stop()
			testenv.Eventually(t, c.name+" at work", func() error {
				if log := run.log(); refusedByKernel.MatchString(log) {
					t.Fatalf("refused with the manifest's capabilities:\n%s", rbactest.Tail(log, 10))
				}
				return c.works()
			})
		})
		for i, dropped := range caps {
			without := append(append([]string(nil), caps[:i]...), caps[i+1:]...)
			t.Run(c.name+" without "+dropped, func(t *testing.T) {
				run := c.start(t, without)
				defer run.stop()
				deadline := time.Now().Add(30 * time.Second)
				for {
					log := run.log()
					if line := firstMatch(log, refusedByKernel); line != "" {
						t.Logf("without CAP_%s: %s", dropped, line)
						return
					}
					if err := c.works(); err == nil {
						t.Fatalf("%s works without CAP_%s: the manifest should not grant it", c.name, dropped)
					}
					if time.Now().After(deadline) {
						t.Fatalf("neither at work nor refused by the kernel without CAP_%s; the log ends:\n%s", dropped, rbactest.Tail(log, 10))
					}
					time.Sleep(200 * time.Millisecond)
				}
			})
		}
	}
	underAgent.stop()
}

// component is a program run under setpriv.
type component struct {
	stop    func()
	logPath string
}

func (c component) log() string { return rbactest.ReadLog(c.logPath) }

// startWithCaps runs the speaker binary in ns as root with exactly caps (upper case, as a
// manifest names them) and no new privileges, as a container that drops ALL and adds caps,
// with a bpffs on /sys/fs/bpf as the DaemonSets mount the node's (a bpffs of its own: `ip
// netns exec` gives it a mount namespace of its own).
func startWithCaps(t *testing.T, ns *netlab.Namespace, caps []string, args ...string) component {
	t.Helper()
	set := "-all"
	for _, c := range caps {
		set += ",+" + strings.ToLower(c)
	}
	logPath := filepath.Join(t.TempDir(), "log")
	lab := &bgpLab{nodes: map[string]*netlab.Namespace{"n": ns}}
	stop := lab.startLogged(t, "n", logPath, "sh", nil, append([]string{"-c", `mount -t bpf bpf /sys/fs/bpf && exec setpriv "$@"`, "sh",
		"--bounding-set=" + set, "--inh-caps=-all", "--no-new-privs", "--", binary(t)}, args...)...)
	return component{stop: stop, logPath: logPath}
}

// manifestCaps returns the capabilities the DaemonSet at path (in the repository) adds to
// its container.
func manifestCaps(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), path))
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.Unmarshal(data, &ds); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	sc := ds.Spec.Template.Spec.Containers[0].SecurityContext
	if sc == nil || sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Fatalf("%s: the container does not drop ALL capabilities", path)
	}
	var caps []string
	for _, c := range sc.Capabilities.Add {
		caps = append(caps, string(c))
	}
	return caps
}

func firstMatch(log string, re *regexp.Regexp) string {
	for _, line := range strings.Split(log, "\n") {
		if re.MatchString(line) {
			return line
		}
	}
	return ""
}
