// SPDX-License-Identifier: Apache-2.0

// Package charts holds the tests of the Helm chart charts/maglb: rendered by Helm itself, the
// default equals config/manifests/maglb.yaml in substance, each option does what it says, and
// every rendering is accepted by a real API server.
package charts

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/maglb/maglb/internal/testenv"
)

const (
	release   = "metallb"
	namespace = "metallb-system"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// helm is the binary tasks.py builds from the Go module proxy ($MAGLB_HELM).
func helm(t *testing.T) string {
	t.Helper()
	path := os.Getenv("MAGLB_HELM")
	if path == "" {
		testenv.Unavailable(t, "MAGLB_HELM is not set (python3 tasks.py test builds helm and sets it)")
	}
	if _, err := os.Stat(path); err != nil {
		testenv.Unavailable(t, fmt.Sprintf("helm: %v", err))
	}
	return path
}

// render runs `helm template` of the chart with the given extra arguments and returns its output.
func render(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helm(t), append([]string{"template", release, filepath.Join(testenv.RepoRoot(), "charts", "maglb"),
		"--namespace", namespace}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm template %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

func mustRender(t *testing.T, args ...string) []unstructured.Unstructured {
	t.Helper()
	out, err := render(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, out)
}

func decode(t *testing.T, data []byte) []unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []unstructured.Unstructured
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if err.Error() == "EOF" {
				return objs
			}
			t.Fatalf("decoding: %v", err)
		}
		if obj != nil {
			objs = append(objs, unstructured.Unstructured{Object: obj})
		}
	}
}

// role names an object by what it is rather than by its name, which differs between the chart
// (upstream's chart's names: metallb-controller) and the manifests (controller).
func role(o unstructured.Unstructured) string {
	component := o.GetLabels()["app.kubernetes.io/component"]
	if component == "" {
		component = o.GetLabels()["component"]
	}
	switch o.GetKind() {
	case "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding":
		for _, c := range []string{"controller", "speaker", "backend-agent", "reflector", "metrics-reader"} {
			if strings.HasSuffix(o.GetName(), c) {
				component = c
			}
		}
	case "CustomResourceDefinition", "Service":
		component = o.GetName()
	}
	return o.GetKind() + "/" + component
}

// substance is what must agree between the chart and the manifests for an object of its kind.
func substance(t *testing.T, o unstructured.Unstructured) any {
	t.Helper()
	get := func(path ...string) any {
		v, _, err := unstructured.NestedFieldNoCopy(o.Object, path...)
		if err != nil {
			t.Fatalf("%s: %v", role(o), err)
		}
		return v
	}
	switch o.GetKind() {
	case "CustomResourceDefinition":
		return get("spec")
	case "Role", "ClusterRole":
		return get("rules")
	case "RoleBinding", "ClusterRoleBinding":
		return []any{get("roleRef", "kind"), len(get("subjects").([]any))}
	case "Service":
		return get("spec", "ports")
	case "Deployment", "DaemonSet":
		pod := get("spec", "template", "spec").(map[string]any)
		c := pod["containers"].([]any)[0].(map[string]any)
		probe := func(name string) any {
			if p, ok := c[name].(map[string]any); ok {
				return p["httpGet"]
			}
			return nil
		}
		return map[string]any{
			"args": c["args"], "env": c["env"], "image": c["image"], "ports": c["ports"],
			"securityContext": c["securityContext"], "volumeMounts": c["volumeMounts"],
			"liveness": probe("livenessProbe"), "readiness": probe("readinessProbe"),
			"hostNetwork": pod["hostNetwork"], "nodeSelector": pod["nodeSelector"], "tolerations": pod["tolerations"],
			"volumes": pod["volumes"], "podSecurityContext": pod["securityContext"],
			"terminationGracePeriodSeconds": pod["terminationGracePeriodSeconds"],
			"scrape":                        get("spec", "template", "metadata", "annotations"),
		}
	}
	return nil
}

func byRole(t *testing.T, objs []unstructured.Unstructured) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, o := range objs {
		if o.GetKind() == "Namespace" { // helm installs into a namespace that exists
			continue
		}
		if _, dup := out[role(o)]; dup {
			t.Fatalf("two objects are %s", role(o))
		}
		out[role(o)] = substance(t, o)
	}
	return out
}

// The chart's default rendering is the all-in-one manifest: the same objects (by kind and
// component) granting, running and serving the same.
func TestDefaultRenderingIsTheManifest(t *testing.T) {
	manifest, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "manifests", "maglb.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := byRole(t, decode(t, manifest))
	got := byRole(t, mustRender(t))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("chart default vs config/manifests/maglb.yaml (-manifest +chart):\n%s", diff)
	}
}

func find(objs []unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	i := slices.IndexFunc(objs, func(o unstructured.Unstructured) bool { return o.GetKind() == kind && o.GetName() == name })
	if i < 0 {
		return nil
	}
	return &objs[i]
}

func containerArgs(t *testing.T, objs []unstructured.Unstructured, kind, name string) []string {
	t.Helper()
	o := find(objs, kind, name)
	if o == nil {
		t.Fatalf("no %s %s rendered", kind, name)
	}
	containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	return args
}

// chartOptions are the values a user sets, each with what it must change; every rendering is
// also dry-run against the API server (TestRenderingsAccepted).
var chartOptions = []struct {
	name  string
	set   []string
	check func(t *testing.T, objs []unstructured.Unstructured)
}{
	{"default", nil, func(t *testing.T, objs []unstructured.Unstructured) {
		if args := containerArgs(t, objs, "DaemonSet", "metallb-speaker"); slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--datapath") }) {
			t.Errorf("the default speaker has datapath flags %v; want upstream's behaviour (kubeproxy)", args)
		}
	}},
	{"ebpf datapath", []string{"speaker.datapath.mode=ebpf", "speaker.datapath.encap=gue", "speaker.datapath.interface=bond0", "speaker.datapath.xdpMode=generic"},
		func(t *testing.T, objs []unstructured.Unstructured) {
			args := containerArgs(t, objs, "DaemonSet", "metallb-speaker")
			for _, want := range []string{"--datapath=ebpf", "--datapath-encap=gue", "--datapath-interface=bond0", "--xdp-mode=generic", "--datapath-max-services=16384"} {
				if !slices.Contains(args, want) {
					t.Errorf("speaker args %v lack %s", args, want)
				}
			}
		}},
	{"load balancer class and TLS", []string{"loadBalancerClass=example.com/lb", "tls.minVersion=VersionTLS12", "tls.controllerMetricsTLSSecret=metrics-tls"},
		func(t *testing.T, objs []unstructured.Unstructured) {
			args := containerArgs(t, objs, "Deployment", "metallb-controller")
			for _, want := range []string{"--lb-class=example.com/lb", "--tls-min-version=VersionTLS12", "--metrics-cert-dir=/etc/metrics"} {
				if !slices.Contains(args, want) {
					t.Errorf("controller args %v lack %s", args, want)
				}
			}
			if !slices.Contains(containerArgs(t, objs, "DaemonSet", "metallb-speaker"), "--lb-class=example.com/lb") {
				t.Error("the speaker lacks --lb-class")
			}
		}},
	{"backend agent allowlist", []string{"backendAgent.tunnelSources=192.0.2.0/24", "backendAgent.lbNodeSelector=maglb.io/shard-gold", "backendAgent.decapHook=tcx"},
		func(t *testing.T, objs []unstructured.Unstructured) {
			args := containerArgs(t, objs, "DaemonSet", "metallb-backend-agent")
			for _, want := range []string{"--tunnel-sources=192.0.2.0/24", "--lb-node-selector=maglb.io/shard-gold", "--decap-hook=tcx"} {
				if !slices.Contains(args, want) {
					t.Errorf("backend agent args %v lack %s", args, want)
				}
			}
		}},
	{"without backend agent, CRDs and RBAC", []string{"backendAgent.enabled=false", "crds.enabled=false", "rbac.create=false"},
		func(t *testing.T, objs []unstructured.Unstructured) {
			for _, o := range objs {
				if k := o.GetKind(); k == "CustomResourceDefinition" || strings.Contains(k, "Role") || strings.Contains(o.GetName(), "backend-agent") {
					t.Errorf("%s %s rendered", k, o.GetName())
				}
			}
		}},
	{"reflectors", []string{"reflector.enabled=true"},
		func(t *testing.T, objs []unstructured.Unstructured) {
			args := containerArgs(t, objs, "Deployment", "metallb-reflector")
			for _, want := range []string{"--role=reflector", "--node-name=$(METALLB_NODE_NAME)", "--port=7477"} {
				if !slices.Contains(args, want) {
					t.Errorf("reflector args %v lack %s", args, want)
				}
			}
			if find(objs, "Role", "metallb-reflector") == nil || find(objs, "ClusterRoleBinding", "metallb:reflector") == nil || find(objs, "ServiceAccount", "metallb-reflector") == nil {
				t.Error("the reflector's RBAC or service account is not rendered")
			}
			// The speakers keep off the reflectors' nodes.
			terms, _, _ := unstructured.NestedSlice(find(objs, "DaemonSet", "metallb-speaker").Object,
				"spec", "template", "spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms")
			if got := fmt.Sprint(terms); !strings.Contains(got, "maglb.io/reflector") || !strings.Contains(got, "DoesNotExist") {
				t.Errorf("speaker node affinity %s", got)
			}
		}},
	{"webhooks disabled", []string{"controller.webhookMode=disabled"},
		func(t *testing.T, objs []unstructured.Unstructured) {
			if find(objs, "Service", "metallb-webhook-service") != nil {
				t.Error("the webhook Service is rendered with webhooks disabled")
			}
			if !slices.Contains(containerArgs(t, objs, "Deployment", "metallb-controller"), "--webhook-mode=disabled") {
				t.Error("the controller lacks --webhook-mode=disabled")
			}
		}},
	{"workload cluster", []string{"projection.workloadClusterAccess=true", "controller.enabled=false", "speaker.enabled=false", "crds.enabled=false", "backendAgent.tunnelSources=192.0.2.0/24"},
		func(t *testing.T, objs []unstructured.Unstructured) {
			for _, o := range objs {
				if k := o.GetKind(); k == "Deployment" || (k == "DaemonSet" && o.GetName() != "metallb-backend-agent") || k == "CustomResourceDefinition" {
					t.Errorf("%s %s rendered for a workload cluster", k, o.GetName())
				}
			}
			token := find(objs, "Secret", "metallb-projection-token")
			if find(objs, "ServiceAccount", "metallb-projection") == nil || token == nil ||
				token.GetAnnotations()["kubernetes.io/service-account.name"] != "metallb-projection" {
				t.Fatal("no ServiceAccount metallb-projection with its token Secret metallb-projection-token")
			}
			config, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "config", "workload-cluster", "projection-access.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			want := find(decode(t, config), "ClusterRole", "maglb-projection")
			got := find(objs, "ClusterRole", "metallb:projection")
			binding := find(objs, "ClusterRoleBinding", "metallb:projection")
			if want == nil || got == nil || binding == nil {
				t.Fatalf("ClusterRole in config/workload-cluster %v, rendered ClusterRole and binding %v %v", want != nil, got != nil, binding != nil)
			}
			if diff := cmp.Diff(want.Object["rules"], got.Object["rules"]); diff != "" {
				t.Errorf("projection's rules (-config/workload-cluster +chart):\n%s", diff)
			}
			subjects, _, _ := unstructured.NestedSlice(binding.Object, "subjects")
			if len(subjects) != 1 || subjects[0].(map[string]any)["name"] != "metallb-projection" {
				t.Errorf("the binding's subjects %v, want the ServiceAccount metallb-projection", subjects)
			}
		}},
	{"upstream's scheduling values", []string{"speaker.tolerateMaster=false", "speaker.nodeSelector.rack=r1", "controller.priorityClassName=system-cluster-critical", "fullnameOverride=lb"},
		func(t *testing.T, objs []unstructured.Unstructured) {
			ds := find(objs, "DaemonSet", "lb-speaker")
			if ds == nil {
				t.Fatal("fullnameOverride=lb: no DaemonSet lb-speaker")
			}
			selector, _, _ := unstructured.NestedStringMap(ds.Object, "spec", "template", "spec", "nodeSelector")
			tolerations, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "tolerations")
			if selector["rack"] != "r1" || len(tolerations) != 0 {
				t.Errorf("speaker nodeSelector %v, tolerations %v", selector, tolerations)
			}
			pc, _, _ := unstructured.NestedString(find(objs, "Deployment", "lb-controller").Object, "spec", "template", "spec", "priorityClassName")
			if pc != "system-cluster-critical" {
				t.Errorf("controller priorityClassName %q", pc)
			}
		}},
}

func TestOptions(t *testing.T) {
	for _, opt := range chartOptions {
		t.Run(opt.name, func(t *testing.T) {
			var args []string
			for _, s := range opt.set {
				args = append(args, "--set", s)
			}
			opt.check(t, mustRender(t, args...))
		})
	}
}

// A value outside what the speaker accepts fails the rendering with the reason.
func TestInvalidDatapathModeFails(t *testing.T) {
	_, err := render(t, "--set", "speaker.datapath.mode=dpdk")
	if err == nil || !strings.Contains(err.Error(), `speaker.datapath.mode "dpdk": want kubeproxy or ebpf`) {
		t.Errorf("rendering with datapath dpdk: %v, want the reason", err)
	}
}

// Every rendering passes a server-side dry run: the API server's validation and admission, on a
// cluster as `helm install` finds it: the namespace, no CRDs (the test API server comes with
// them, BGPPeer's pointing at the test's own conversion webhook).
func TestRenderingsAccepted(t *testing.T) {
	env := testenv.Get(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if err := env.Client.Create(context.Background(), ns); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	if out, err := env.Kubectl("delete", "--wait", "--ignore-not-found", "-f", filepath.Join(testenv.RepoRoot(), "config", "crd", "bases")); err != nil {
		t.Fatalf("removing the test API server's CRDs: %v\n%s", err, out)
	}
	dir, err := os.MkdirTemp("", "maglb-chart-") // kubectl -f splits a path at commas, which subtest names have
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, opt := range chartOptions {
		t.Run(opt.name, func(t *testing.T) {
			var args []string
			for _, s := range opt.set {
				args = append(args, "--set", s)
			}
			out, err := render(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "rendered.yaml")
			if err := os.WriteFile(file, out, 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := env.Kubectl("apply", "--dry-run=server", "--server-side", "-f", file); err != nil {
				t.Errorf("server-side dry run: %v\n%s", err, out)
			}
		})
	}
}
