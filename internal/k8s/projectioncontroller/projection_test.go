// SPDX-License-Identifier: Apache-2.0

package projectioncontroller_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/lbservice"
	"github.com/maglb/maglb/internal/projection"
	"github.com/maglb/maglb/internal/testenv"
)

// inPool tells whether every address is a VIP of the LB cluster's pool.
func inPool(ips []string) bool {
	prefix := netip.MustParsePrefix(poolRange)
	return len(ips) > 0 && !slices.ContainsFunc(ips, func(ip string) bool {
		a, err := netip.ParseAddr(ip)
		return err != nil || !prefix.Contains(a)
	})
}

// The whole life of one projected Service: projection as the contract says, VIP written back
// with its event, endpoint and node changes reaching the slices, and the projection removed
// with the workload Service, then with the WorkloadCluster.
func TestProjectionFollowsWorkloadService(t *testing.T) {
	w := workloadCluster(t)
	wc := w.Client
	lb := testenv.Get(t).Client
	ctx := context.Background()
	startController(t)
	registerCluster(t, "east", kubeconfigOf(t, w), nil)
	ns := "maglb-wc-east"

	testenv.Node(t, wc, "w1", "192.0.2.11", "2001:db8::11")
	testenv.Node(t, wc, "w2", "192.0.2.12")
	testenv.Node(t, wc, "w3", "192.0.2.13")
	svc := loadBalancer(t, wc, "shop", "web", map[string]string{lbservice.AnnotationAllowSharedIP: "k"})
	testenv.SetEndpoints(t, wc, svc, testenv.Pod{Name: "a", Node: "w1", Addr: "10.0.1.1"}, testenv.Pod{Name: "b", Node: "w1", Addr: "10.0.1.2"}, testenv.Pod{Name: "c", Node: "w2", Addr: "10.0.2.1"})

	var p *corev1.Service
	testenv.Eventually(t, "projected Service with a VIP", func() error {
		var err error
		if p, err = projected(t, ns, "east", "shop", "web"); err != nil {
			return err
		}
		if len(p.Status.LoadBalancer.Ingress) == 0 {
			return errNotYet
		}
		return nil
	})
	if err := wc.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	nodePort := svc.Spec.Ports[0].NodePort
	if p.Spec.Selector != nil || p.Spec.AllocateLoadBalancerNodePorts == nil || *p.Spec.AllocateLoadBalancerNodePorts ||
		p.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyCluster || len(p.Spec.Ports) != 1 ||
		p.Spec.Ports[0].Port != 80 || p.Spec.Ports[0].TargetPort != intstr.FromInt32(nodePort) {
		t.Errorf("projected spec = %+v, want selectorless, no node ports, ETP Cluster, port 80 → NodePort %d", p.Spec, nodePort)
	}
	if p.Labels[v1alpha1.LabelWorkloadCluster] != "east" || p.Labels[v1alpha1.LabelWorkloadNamespace] != "shop" ||
		p.Labels[v1alpha1.LabelWorkloadName] != "web" || p.Labels["app"] != "web" {
		t.Errorf("projected labels = %v", p.Labels)
	}
	if p.Annotations[lbservice.AnnotationAllowSharedIP] != "east/k" || p.Annotations[projection.AnnotationWorkloadUID] != string(svc.UID) ||
		p.Annotations[projection.AnnotationWorkloadTrafficPolicy] != "Local" || p.Annotations[lbservice.AnnotationIPAllocatedFromPool] != poolName {
		t.Errorf("projected annotations = %v", p.Annotations)
	}
	var nsObj corev1.Namespace
	if err := lb.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil || nsObj.Labels[v1alpha1.LabelWorkloadCluster] != "east" {
		t.Errorf("projection namespace = %v (%v), want it labelled with the cluster", nsObj.Labels, err)
	}

	// The endpoints: one per serving node, weighted by its ready pods, at the NodePort.
	wantWeights := func(family, weights string) {
		t.Helper()
		testenv.Eventually(t, fmt.Sprintf("%s weights %q", family, weights), func() error {
			for _, s := range slicesOf(t, ns, p.Name) {
				if s.Name != p.Name+"-"+family {
					continue
				}
				if s.Labels[discoveryv1.LabelManagedBy] != v1alpha1.EndpointSliceManagedBy || len(s.Ports) != 1 || *s.Ports[0].Port != nodePort {
					return fmt.Errorf("slice %s: labels %v ports %v", s.Name, s.Labels, s.Ports)
				}
				if got := s.Annotations[v1alpha1.AnnotationEndpointWeights]; got != weights {
					return fmt.Errorf("weights %q", got)
				}
				for _, e := range s.Endpoints {
					if e.NodeName != nil {
						return fmt.Errorf("endpoint %v names a node", e.Addresses)
					}
				}
				return nil
			}
			if weights == "" {
				return nil
			}
			return fmt.Errorf("no %s slice", family)
		})
	}
	wantWeights("ipv4", "192.0.2.11=2,192.0.2.12=1")
	wantWeights("ipv6", "2001:db8::11=2")

	// The VIP goes back, with the event naming the LB cluster's pool and shard.
	var vips []string
	testenv.Eventually(t, "VIP written back", func() error {
		if vips = ingressOf(t, wc, svc); !inPool(vips) || !slices.Equal(vips, ingressIPs(p)) {
			return fmt.Errorf("workload ingress %v, want the projection's %v", vips, ingressIPs(p))
		}
		return nil
	})
	testenv.Eventually(t, "IPAllocated event", func() error {
		want := fmt.Sprintf("Normal IPAllocated: Assigned IP [%q] from the LB cluster's pool %q, shard %q", vips[0], poolName, poolShard)
		if list := events(t, wc, svc); !hasEvent(list, want) {
			return fmt.Errorf("events %v, want %s", list, want)
		}
		return nil
	})
	if err := wc.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil || !controllerutil.ContainsFinalizer(svc, projection.Finalizer) {
		t.Errorf("workload finalizers = %v, want %s", svc.Finalizers, projection.Finalizer)
	}
	waitCondition(t, "east", v1alpha1.ConditionConnected, metav1.ConditionTrue, "Connected")
	waitCondition(t, "east", v1alpha1.ConditionSynced, metav1.ConditionTrue, "Synced")
	testenv.Eventually(t, "status counts", func() error {
		_, cur := condition(t, "east", v1alpha1.ConditionSynced)
		if s := cur.Status; s.ProjectedServices != 1 || s.ServicesWithVIP != 1 || s.Namespace != ns || s.LastSyncTime == nil || s.ObservedGeneration != cur.Generation {
			return fmt.Errorf("status %+v", s)
		}
		return nil
	})

	// Endpoints move: the weights follow.
	testenv.SetEndpoints(t, wc, svc, testenv.Pod{Name: "a", Node: "w1", Addr: "10.0.1.1"}, testenv.Pod{Name: "c", Node: "w2", Addr: "10.0.2.1"}, testenv.Pod{Name: "d", Node: "w3", Addr: "10.0.3.1"}, testenv.Pod{Name: "e", Node: "w3", Addr: "10.0.3.2"})
	wantWeights("ipv4", "192.0.2.11=1,192.0.2.12=1,192.0.2.13=2")
	// A node excluded from load balancers is dropped.
	var w3 corev1.Node
	if err := wc.Get(ctx, client.ObjectKey{Name: "w3"}, &w3); err != nil {
		t.Fatal(err)
	}
	w3.Labels = map[string]string{projection.LabelExcludeFromLB: ""}
	if err := wc.Update(ctx, &w3); err != nil {
		t.Fatal(err)
	}
	wantWeights("ipv4", "192.0.2.11=1,192.0.2.12=1")
	// Only w1 has IPv6: with its pod gone, the IPv6 slice goes.
	testenv.SetEndpoints(t, wc, svc, testenv.Pod{Name: "c", Node: "w2", Addr: "10.0.2.1"})
	testenv.Eventually(t, "IPv6 slice removed", func() error {
		for _, s := range slicesOf(t, ns, p.Name) {
			if s.AddressType == discoveryv1.AddressTypeIPv6 {
				return fmt.Errorf("slice %s still there", s.Name)
			}
		}
		return nil
	})

	// A second Service, then the first deleted: its projection goes, then the Service.
	other := loadBalancer(t, wc, "shop", "api", nil)
	testenv.SetEndpoints(t, wc, other, testenv.Pod{Name: "f", Node: "w2", Addr: "10.0.2.9"})
	testenv.Eventually(t, "second Service's VIP", func() error {
		if !inPool(ingressOf(t, wc, other)) {
			return errNotYet
		}
		return nil
	})
	if err := wc.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "projection and workload Service gone", func() error {
		if _, err := projected(t, ns, "east", "shop", "web"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("projection: %v", err)
		}
		if n := len(slicesOf(t, ns, p.Name)); n != 0 {
			return fmt.Errorf("%d slices left", n)
		}
		if err := wc.Get(ctx, client.ObjectKeyFromObject(svc), svc); !apierrors.IsNotFound(err) {
			return fmt.Errorf("workload Service: %v, finalizers %v", err, svc.Finalizers)
		}
		return nil
	})

	// A Service no longer taken: projection gone, our ingress and finalizer off it.
	if err := wc.Get(ctx, client.ObjectKeyFromObject(other), other); err != nil {
		t.Fatal(err)
	}
	other.Spec.LoadBalancerClass = nil
	other.Spec.Type = corev1.ServiceTypeNodePort
	if err := wc.Update(ctx, other); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "NodePort Service released", func() error {
		if _, err := projected(t, ns, "east", "shop", "api"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("projection: %v", err)
		}
		if err := wc.Get(ctx, client.ObjectKeyFromObject(other), other); err != nil {
			return err
		}
		if len(other.Finalizers) > 0 || len(other.Status.LoadBalancer.Ingress) > 0 {
			return fmt.Errorf("finalizers %v, ingress %v", other.Finalizers, other.Status.LoadBalancer.Ingress)
		}
		return nil
	})
	if err := wc.Delete(ctx, other); err != nil {
		t.Fatal(err)
	}
}

// Deleting a WorkloadCluster removes its projections and the namespace it created, and
// releases its workload Services.
func TestDeletingWorkloadClusterRemovesProjections(t *testing.T) {
	w := workloadCluster(t)
	wc := w.Client
	lb := testenv.Get(t).Client
	ctx := context.Background()
	startController(t)
	registerCluster(t, "gone", kubeconfigOf(t, w), func(c *v1alpha1.WorkloadCluster) {
		c.Spec.ServiceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "leaving"}}
	})
	// A second registration of the same cluster takes the other Service; it keeps it.
	registerCluster(t, "keep", kubeconfigOf(t, w), func(c *v1alpha1.WorkloadCluster) {
		c.Spec.ServiceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "stays"}}
	})
	t.Cleanup(func() { deleteCluster(t, "keep") })
	testenv.Node(t, wc, "w1", "192.0.2.11", "2001:db8::11")
	svc := loadBalancer(t, wc, "leave", "leaving", nil)
	ignored := loadBalancer(t, wc, "leave", "stays", nil)
	testenv.SetEndpoints(t, wc, svc, testenv.Pod{Name: "a", Node: "w1", Addr: "10.0.1.1"})
	testenv.Eventually(t, "VIPs written back", func() error {
		if !inPool(ingressOf(t, wc, svc)) || !inPool(ingressOf(t, wc, ignored)) {
			return errNotYet
		}
		return nil
	})
	if _, err := projected(t, "maglb-wc-gone", "gone", "leave", "stays"); !apierrors.IsNotFound(err) {
		t.Errorf("a Service the selector leaves out is projected: %v", err)
	}

	deleteCluster(t, "gone")
	var list corev1.ServiceList
	if err := lb.List(ctx, &list, client.MatchingLabels{v1alpha1.LabelWorkloadCluster: "gone"}); err != nil || len(list.Items) != 0 {
		t.Errorf("projections left: %d (%v)", len(list.Items), err)
	}
	testenv.Eventually(t, "namespace maglb-wc-gone deleted", func() error {
		var ns corev1.Namespace
		err := lb.Get(ctx, client.ObjectKey{Name: "maglb-wc-gone"}, &ns)
		if apierrors.IsNotFound(err) || (err == nil && ns.DeletionTimestamp != nil) {
			return nil
		}
		return fmt.Errorf("namespace: %v", err)
	})
	if err := wc.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Finalizers) != 0 || len(svc.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("released workload Service keeps finalizers %v, ingress %v", svc.Finalizers, svc.Status.LoadBalancer.Ingress)
	}
	if err := wc.Get(ctx, client.ObjectKeyFromObject(ignored), ignored); err != nil {
		t.Fatal(err)
	}
	ingress := ingressOf(t, wc, ignored)
	if !controllerutil.ContainsFinalizer(ignored, projection.Finalizer) || !inPool(ingress) {
		t.Errorf("the Service of the other WorkloadCluster lost finalizers or ingress: %v, %v", ignored.Finalizers, ingress)
	}
	for _, s := range []*corev1.Service{svc, ignored} {
		if err := wc.Delete(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
}

// The same namespace/name in two workload clusters makes two projections with two VIPs; when
// one workload API server stops, it is reported Unreachable and its projection stays.
func TestSameServiceInTwoClusters(t *testing.T) {
	first := workloadCluster(t)
	second := startWorkloadCluster(t)
	startController(t)
	registerCluster(t, "one", kubeconfigOf(t, first), nil)
	registerCluster(t, "two", kubeconfigOf(t, second), func(c *v1alpha1.WorkloadCluster) { c.Spec.Namespace = "second-cluster" })
	var vips [2][]string
	for i, env := range []*testenv.Env{first, second} {
		testenv.Node(t, env.Client, "w1", "192.0.2.11")
		svc := loadBalancer(t, env.Client, "twin", "web", nil)
		testenv.SetEndpoints(t, env.Client, svc, testenv.Pod{Name: "a", Node: "w1", Addr: "10.0.1.1"})
		testenv.Eventually(t, fmt.Sprintf("VIP in cluster %d", i+1), func() error {
			if vips[i] = ingressOf(t, env.Client, svc); !inPool(vips[i]) {
				return errNotYet
			}
			return nil
		})
		if i == 0 {
			t.Cleanup(func() { _ = first.Client.Delete(context.Background(), svc) })
		}
	}
	if slices.Equal(vips[0], vips[1]) {
		t.Errorf("both clusters' twin/web got %v", vips[0])
	}
	for _, p := range []struct{ ns, cluster string }{{"maglb-wc-one", "one"}, {"second-cluster", "two"}} {
		if _, err := projected(t, p.ns, p.cluster, "twin", "web"); err != nil {
			t.Errorf("projection of cluster %s: %v", p.cluster, err)
		}
	}

	if err := second.Stop(); err != nil {
		t.Logf("stopping the second workload API server: %v", err) // it may take its time; it is killed anyway
	}
	c := waitCondition(t, "two", v1alpha1.ConditionConnected, metav1.ConditionFalse, "Unreachable")
	if !strings.Contains(c.Message, "connect") {
		t.Errorf("Unreachable message %q does not give the dial error", c.Message)
	}
	waitCondition(t, "two", v1alpha1.ConditionSynced, metav1.ConditionFalse, "NotConnected")
	p, err := projected(t, "second-cluster", "two", "twin", "web")
	if err != nil || !inPool(ingressIPs(p)) {
		t.Errorf("projection of the unreachable cluster: %v, %v", err, p.Status.LoadBalancer.Ingress)
	}
}

// A controller restarted while a workload cluster does not answer keeps that cluster's
// projections, says why, and carries on when the cluster answers again.
func TestRestartWithUnreachableClusterKeepsProjections(t *testing.T) {
	w := workloadCluster(t)
	wc := w.Client
	registerCluster(t, "flaky", kubeconfigOf(t, w), nil)
	testenv.Node(t, wc, "w1", "192.0.2.11")
	svc := loadBalancer(t, wc, "flaky", "web", nil)
	testenv.SetEndpoints(t, wc, svc, testenv.Pod{Name: "a", Node: "w1", Addr: "10.0.1.1"})
	var vips []string
	t.Run("before the restart", func(t *testing.T) {
		startController(t)
		testenv.Eventually(t, "VIP written back", func() error {
			if vips = ingressOf(t, wc, svc); !inPool(vips) {
				return errNotYet
			}
			return nil
		})
	})

	setSecret(t, "flaky", deadKubeconfig(t, w))
	startController(t)
	c := waitCondition(t, "flaky", v1alpha1.ConditionConnected, metav1.ConditionFalse, "Unreachable")
	if !strings.Contains(c.Message, "connect") {
		t.Errorf("Unreachable message %q does not give the dial error", c.Message)
	}
	waitCondition(t, "flaky", v1alpha1.ConditionSynced, metav1.ConditionFalse, "CacheNotSynced")
	p, err := projected(t, "maglb-wc-flaky", "flaky", "flaky", "web")
	if err != nil || !slices.Equal(ingressIPs(p), vips) {
		t.Errorf("projection while unreachable: %v, VIPs %v, want %v", err, ingressIPs(p), vips)
	}

	setSecret(t, "flaky", kubeconfigOf(t, w))
	waitCondition(t, "flaky", v1alpha1.ConditionConnected, metav1.ConditionTrue, "Connected")
	waitCondition(t, "flaky", v1alpha1.ConditionSynced, metav1.ConditionTrue, "Synced")
	if got := ingressOf(t, wc, svc); !slices.Equal(got, vips) {
		t.Errorf("VIPs after reconnecting = %v, want %v", got, vips)
	}
	if err := wc.Delete(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "projection removed", func() error {
		if _, err := projected(t, "maglb-wc-flaky", "flaky", "flaky", "web"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("projection: %v", err)
		}
		return nil
	})
	deleteCluster(t, "flaky") // while this test's controller runs
}

// deadKubeconfig is env's kubeconfig pointing at a port where nothing listens.
func deadKubeconfig(t *testing.T, env *testenv.Env) []byte {
	t.Helper()
	cfg, err := clientcmd.Load(kubeconfigOf(t, env))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = fmt.Sprintf("https://127.0.0.1:%d", testenv.FreePort(t))
	}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func ingressIPs(svc *corev1.Service) []string {
	var ips []string
	for _, i := range svc.Status.LoadBalancer.Ingress {
		ips = append(ips, i.IP)
	}
	return ips
}

// A kubeconfig that cannot be used is reported as such, naming what is wrong.
func TestKubeconfigInvalid(t *testing.T) {
	startController(t)
	for _, tc := range []struct {
		name    string
		secret  map[string][]byte // nil: no Secret
		message string
	}{
		{"nosecret", nil, "Secret metallb-system/kubeconfig-nosecret not found"},
		{"nokey", map[string][]byte{"other": []byte("x")}, `has no key "kubeconfig"`},
		{"garbage", map[string][]byte{"kubeconfig": []byte("{not yaml")}, "is not a usable kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lb := testenv.Get(t).Client
			if tc.secret != nil {
				secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: maglbNamespace, Name: secretName(tc.name)}, Data: tc.secret}
				if err := lb.Create(context.Background(), secret); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = lb.Delete(context.Background(), secret) })
			}
			wc := &v1alpha1.WorkloadCluster{ObjectMeta: metav1.ObjectMeta{Name: tc.name}}
			wc.Spec.KubeconfigSecret.Name = secretName(tc.name)
			if err := lb.Create(context.Background(), wc); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { deleteCluster(t, tc.name) })
			c := waitCondition(t, tc.name, v1alpha1.ConditionConnected, metav1.ConditionFalse, "KubeconfigInvalid")
			if !strings.Contains(c.Message, tc.message) {
				t.Errorf("message %q, want it to say %q", c.Message, tc.message)
			}
		})
	}
}

// A requested IP outside every pool: the allocator's warning reaches the workload Service, and
// nothing else changes.
func TestAllocationFailureMirroredToWorkloadService(t *testing.T) {
	w := workloadCluster(t)
	wc := w.Client
	startController(t)
	registerCluster(t, "warn", kubeconfigOf(t, w), nil)
	testenv.Node(t, wc, "w1", "192.0.2.11")
	svc := loadBalancer(t, wc, "warn", "web", map[string]string{lbservice.AnnotationLoadBalancerIPs: "203.0.113.99"})
	t.Cleanup(func() { _ = wc.Delete(context.Background(), svc) })
	testenv.SetEndpoints(t, wc, svc, testenv.Pod{Name: "a", Node: "w1", Addr: "10.0.1.1"})
	testenv.Eventually(t, "AllocationFailed on the workload Service", func() error {
		if list := events(t, wc, svc); !hasEvent(list, "Warning AllocationFailed") {
			p := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "maglb-wc-warn", Name: projection.Name("warn", "warn", "web")}}
			return fmt.Errorf("workload events %v; LB cluster events of the projection %v", list, events(t, testenv.Get(t).Client, p))
		}
		return nil
	})
	p, err := projected(t, "maglb-wc-warn", "warn", "warn", "web")
	if err != nil || p.Annotations[lbservice.AnnotationLoadBalancerIPs] != "203.0.113.99" || len(p.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("projection %v (%v), want the requested IP carried and no VIP", p.Annotations, err)
	}
	if ips := ingressOf(t, wc, svc); len(ips) != 0 {
		t.Errorf("workload ingress = %v, want none", ips)
	}
}
