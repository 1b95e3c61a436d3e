//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	maglbv1alpha1 "github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/k8s"
)

// workloadNamespace holds the lab's echo Pods (label app=echo) in every workload cluster; the
// projection specs put their Services there, selecting those Pods.
const workloadNamespace = "demo"

// ---------------------------------------------------------------------------------------------
// Workload clusters

var (
	workloadClientsMu sync.Mutex
	workloadClients   = map[string]client.Client{}
)

// workloadClient is a client of the named workload cluster's API server.
func workloadClient(name string) client.Client {
	GinkgoHelper()
	workloadClientsMu.Lock()
	defer workloadClientsMu.Unlock()
	if c, ok := workloadClients[name]; ok {
		return c
	}
	wc, ok := env.WorkloadClusters[name]
	Expect(ok).To(BeTrue(), "the environment has no workload cluster %q", name)
	cfg, err := clientcmd.BuildConfigFromFlags("", wc.Kubeconfig)
	Expect(err).NotTo(HaveOccurred(), "the kubeconfig of workload cluster %s", name)
	c, err := client.New(cfg, client.Options{Scheme: k8s.NewScheme()})
	Expect(err).NotTo(HaveOccurred())
	workloadClients[name] = c
	return c
}

func workloadClusterNames() []string { return slices.Sorted(maps.Keys(env.WorkloadClusters)) }

// requireWorkloadClusters skips a spec that needs more workload clusters than the
// environment has.
func requireWorkloadClusters(n int) {
	if len(env.WorkloadClusters) < n {
		Skip(fmt.Sprintf("needs %d workload clusters; the environment has %d", n, len(env.WorkloadClusters)))
	}
}

// workloadCondition is, for Eventually, the named WorkloadCluster's condition of type (a
// zero condition while there is none).
func workloadCondition(ctx context.Context, name, conditionType string) func() (metav1.Condition, error) {
	return func() (metav1.Condition, error) {
		var wc maglbv1alpha1.WorkloadCluster
		if err := cs.Get(ctx, client.ObjectKey{Name: name}, &wc); err != nil {
			return metav1.Condition{}, err
		}
		if c := meta.FindStatusCondition(wc.Status.Conditions, conditionType); c != nil {
			return *c, nil
		}
		return metav1.Condition{}, nil
	}
}

// ---------------------------------------------------------------------------------------------
// Workload Services and Pods

// createWorkloadService creates, in workload cluster wc, a LoadBalancer Service of the echo
// Pods on the environment's HTTP and UDP ports with externalTrafficPolicy Local (and the
// options' changes). At the end of the spec it is deleted and waited for: the projection
// controller holds it with its finalizer until the projection is gone.
func createWorkloadService(ctx context.Context, wc, name string, annotations map[string]string, options ...func(*corev1.Service)) *corev1.Service {
	GinkgoHelper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: workloadNamespace, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Selector:              map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{
				{Name: "http", Protocol: corev1.ProtocolTCP, Port: env.HTTPPort, TargetPort: intstr.FromInt32(env.HTTPPort)},
				{Name: "udp", Protocol: corev1.ProtocolUDP, Port: env.UDPPort, TargetPort: intstr.FromInt32(env.UDPPort)},
			},
		},
	}
	for _, o := range options {
		o(svc)
	}
	c := workloadClient(wc)
	Expect(c.Create(ctx, svc)).To(Succeed(), "Service %s/%s in %s", svc.Namespace, svc.Name, wc)
	DeferCleanup(func() { deleteWorkloadService(ctx, wc, svc) })
	return svc
}

// deleteWorkloadService deletes svc from wc and waits until it is gone.
func deleteWorkloadService(ctx context.Context, wc string, svc *corev1.Service) {
	GinkgoHelper()
	c := workloadClient(wc)
	Expect(client.IgnoreNotFound(c.Delete(ctx, svc))).To(Succeed())
	Eventually(func() bool {
		return apierrors.IsNotFound(c.Get(ctx, client.ObjectKeyFromObject(svc), &corev1.Service{}))
	}).Should(BeTrue(), "Service %s/%s of %s gone (the projection removes its finalizer)", svc.Namespace, svc.Name, wc)
}

// onlyPort keeps the Service's port of protocol.
func onlyPort(protocol corev1.Protocol) func(*corev1.Service) {
	return func(svc *corev1.Service) {
		svc.Spec.Ports = slices.DeleteFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Protocol != protocol })
	}
}

// workloadIngress is, for Eventually, the ingress IPs of svc in wc.
func workloadIngress(ctx context.Context, wc string, svc *corev1.Service) func() ([]string, error) {
	return func() ([]string, error) {
		var got corev1.Service
		if err := workloadClient(wc).Get(ctx, client.ObjectKeyFromObject(svc), &got); err != nil {
			return nil, err
		}
		ips := []string{}
		for _, in := range got.Status.LoadBalancer.Ingress {
			ips = append(ips, in.IP)
		}
		return ips, nil
	}
}

// workloadVIP waits for the one VIP written back to svc in wc.
func workloadVIP(ctx context.Context, wc string, svc *corev1.Service) string {
	GinkgoHelper()
	Eventually(workloadIngress(ctx, wc, svc)).Should(HaveLen(1), "a VIP written back to %s/%s in %s", svc.Namespace, svc.Name, wc)
	ips, _ := workloadIngress(ctx, wc, svc)()
	return ips[0]
}

// workloadEvents is, for Eventually, the "reason: message" of the events of svc in wc.
func workloadEvents(ctx context.Context, wc string, svc *corev1.Service) func() ([]string, error) {
	return func() ([]string, error) {
		var events corev1.EventList
		if err := workloadClient(wc).List(ctx, &events, client.InNamespace(svc.Namespace)); err != nil {
			return nil, err
		}
		var out []string
		for _, e := range events.Items {
			if e.InvolvedObject.Kind == "Service" && e.InvolvedObject.Name == svc.Name {
				out = append(out, e.Reason+": "+e.Message)
			}
		}
		return out, nil
	}
}

// slotsOf returns the names of wc's pod slots, on node when it is not empty.
func slotsOf(wc, node string) []string {
	var names []string
	for _, name := range slices.Sorted(maps.Keys(env.WorkloadClusters[wc].PodSlots)) {
		if node == "" || env.WorkloadClusters[wc].PodSlots[name].Node == node {
			names = append(names, name)
		}
	}
	return names
}

func workloadNodeNames(wc string) []string {
	return slices.Sorted(maps.Keys(env.WorkloadClusters[wc].Nodes))
}

// echoPods returns the names of wc's running echo Pods (app=echo in the workload namespace),
// by node.
func echoPods(ctx context.Context, wc string) map[string][]string {
	GinkgoHelper()
	var pods corev1.PodList
	Expect(workloadClient(wc).List(ctx, &pods, client.InNamespace(workloadNamespace), client.MatchingLabels{"app": "echo"})).To(Succeed())
	byNode := map[string][]string{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], p.Name)
		}
	}
	return byNode
}

// freeSlot returns a slot of wc on node that no Pod uses.
func freeSlot(ctx context.Context, wc, node string) string {
	GinkgoHelper()
	used := echoPods(ctx, wc)[node]
	for _, slot := range slotsOf(wc, node) {
		if !slices.Contains(used, slot) {
			return slot
		}
	}
	Fail(fmt.Sprintf("no free pod slot on %s of %s (used: %v)", node, wc, used))
	return ""
}

// createSlotPod creates an echo Pod in the named slot of wc (the lab's kubelet makes it Ready),
// deleted at the end of the spec. It returns a func that deletes it sooner.
func createSlotPod(ctx context.Context, wc, slot string) (remove func()) {
	GinkgoHelper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: slot, Namespace: workloadNamespace, Labels: map[string]string{"app": "echo"}},
		Spec: corev1.PodSpec{
			NodeName:   env.WorkloadClusters[wc].PodSlots[slot].Node,
			Containers: []corev1.Container{{Name: "echo", Image: "maglb-e2e/echo"}},
		},
	}
	c := workloadClient(wc)
	Expect(c.Create(ctx, pod)).To(Succeed(), "Pod %s in %s", slot, wc)
	remove = sync.OnceFunc(func() {
		Expect(client.IgnoreNotFound(c.Delete(ctx, pod, client.GracePeriodSeconds(0)))).To(Succeed())
		Eventually(func() bool { return apierrors.IsNotFound(c.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})) }).Should(BeTrue())
	})
	DeferCleanup(remove)
	return remove
}

// readyAnnotation flips a Pod's readiness in the lab: "false" makes its kubelet report it not
// ready.
const readyAnnotation = "lab.maglb.io/ready"

// setPodReady makes the lab's kubelet report the Pod ready or not; a Pod made not ready is
// made ready again at the end of the spec.
func setPodReady(ctx context.Context, wc, name string, ready bool) {
	GinkgoHelper()
	c := workloadClient(wc)
	var pod corev1.Pod
	Expect(c.Get(ctx, client.ObjectKey{Namespace: workloadNamespace, Name: name}, &pod)).To(Succeed())
	patch := client.MergeFrom(pod.DeepCopy())
	if ready {
		delete(pod.Annotations, readyAnnotation)
	} else {
		pod.Annotations = mergeMaps(pod.Annotations, map[string]string{readyAnnotation: "false"})
		DeferCleanup(func() { setPodReady(ctx, wc, name, true) })
	}
	Expect(c.Patch(ctx, &pod, patch)).To(Succeed())
}

// excludeNodeLabel is Kubernetes' label that keeps a node out of external load balancers.
const excludeNodeLabel = "node.kubernetes.io/exclude-from-external-load-balancers"

// excludeNode labels wc's node out of external load balancers, until the spec ends.
func excludeNode(ctx context.Context, wc, node string) {
	GinkgoHelper()
	setNodeLabel(ctx, wc, node, excludeNodeLabel, ptr.To("true"))
	DeferCleanup(func() { setNodeLabel(ctx, wc, node, excludeNodeLabel, nil) })
}

// setNodeLabel sets (or, value nil, removes) a label of wc's node.
func setNodeLabel(ctx context.Context, wc, node, key string, value *string) {
	GinkgoHelper()
	c := workloadClient(wc)
	var n corev1.Node
	Expect(c.Get(ctx, client.ObjectKey{Name: node}, &n)).To(Succeed())
	patch := client.MergeFrom(n.DeepCopy())
	if value == nil {
		delete(n.Labels, key)
	} else {
		n.Labels = mergeMaps(n.Labels, map[string]string{key: *value})
	}
	Expect(c.Patch(ctx, &n, patch)).To(Succeed())
}

func mergeMaps(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, b)
	return out
}

// ---------------------------------------------------------------------------------------------
// Projections in the LB cluster

func projectionLabels(wc string, svc *corev1.Service) client.MatchingLabels {
	return client.MatchingLabels{
		maglbv1alpha1.LabelWorkloadCluster:   wc,
		maglbv1alpha1.LabelWorkloadNamespace: svc.Namespace,
		maglbv1alpha1.LabelWorkloadName:      svc.Name,
	}
}

// projectedServices is, for Eventually, the LB cluster's projections of svc of wc.
func projectedServices(ctx context.Context, wc string, svc *corev1.Service) func() ([]corev1.Service, error) {
	return func() ([]corev1.Service, error) {
		var list corev1.ServiceList
		err := cs.List(ctx, &list, projectionLabels(wc, svc))
		return list.Items, err
	}
}

// projectedSlices is, for Eventually, the LB cluster's EndpointSlices projecting svc of wc.
func projectedSlices(ctx context.Context, wc string, svc *corev1.Service) func() ([]discoveryv1.EndpointSlice, error) {
	return func() ([]discoveryv1.EndpointSlice, error) {
		var list discoveryv1.EndpointSliceList
		err := cs.List(ctx, &list, projectionLabels(wc, svc))
		return list.Items, err
	}
}

// projectionOf waits for the one projection of svc of wc.
func projectionOf(ctx context.Context, wc string, svc *corev1.Service) corev1.Service {
	GinkgoHelper()
	Eventually(projectedServices(ctx, wc, svc)).Should(HaveLen(1), "the projection of %s/%s of %s", svc.Namespace, svc.Name, wc)
	list, _ := projectedServices(ctx, wc, svc)()
	return list[0]
}

// weightsAnnotation carries a projected EndpointSlice's weights: "<addr>=<weight>,...".
const weightsAnnotation = "maglb.io/endpoint-weights"

// projectedWeights is, for Eventually, the weights of the projected IPv4 EndpointSlice of svc
// of wc, by workload node name.
func projectedWeights(ctx context.Context, wc string, svc *corev1.Service) func() (map[string]string, error) {
	byAddress := map[string]string{}
	for name, n := range env.WorkloadClusters[wc].Nodes {
		byAddress[n.Address] = name
	}
	return func() (map[string]string, error) {
		eps, err := projectedSlices(ctx, wc, svc)()
		if err != nil {
			return nil, err
		}
		weights := map[string]string{}
		for _, s := range eps {
			if s.AddressType != discoveryv1.AddressTypeIPv4 {
				continue
			}
			for pair := range strings.SplitSeq(s.Annotations[weightsAnnotation], ",") {
				addr, weight, ok := strings.Cut(pair, "=")
				if !ok {
					continue
				}
				node := byAddress[addr]
				if node == "" {
					return nil, fmt.Errorf("weight %q of an address that is no node of %s", pair, wc)
				}
				weights[node] = weight
			}
		}
		return weights, nil
	}
}

// resourceVersions returns the resourceVersions of svc's projected objects, by kind/name.
func resourceVersions(ctx context.Context, wc string, svc *corev1.Service) (map[string]string, error) {
	services, err := projectedServices(ctx, wc, svc)()
	if err != nil {
		return nil, err
	}
	eps, err := projectedSlices(ctx, wc, svc)()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, s := range services {
		out["Service/"+s.Name] = s.ResourceVersion
	}
	for _, s := range eps {
		out["EndpointSlice/"+s.Name] = s.ResourceVersion
	}
	return out, nil
}

// ---------------------------------------------------------------------------------------------
// Traffic to workload pods

// answersThrough is, for Eventually, the answers to flows requests through vip (HTTP on the
// environment's port, or one UDP datagram each), each from a port of its own.
func answersThrough(vip string, protocol corev1.Protocol, flows int) func() ([]answer, error) {
	return func() ([]answer, error) {
		out := make([]answer, 0, flows)
		for i := range flows {
			var a answer
			var err error
			if protocol == corev1.ProtocolUDP {
				a, err = udpEcho(vip, env.UDPPort)
			} else {
				a, _, err = fetch(vip, env.HTTPPort, "/", 0)
			}
			if err != nil {
				return out, fmt.Errorf("%s flow %d of %d through %s: %w", protocol, i+1, flows, vip, err)
			}
			out = append(out, a)
		}
		return out, nil
	}
}

// podsOf returns the sorted pod names of answers, each once.
func podsOf(answers []answer) []string {
	var pods []string
	for _, a := range answers {
		pods = append(pods, a.Pod)
	}
	slices.Sort(pods)
	return slices.Compact(pods)
}

// nodesOf returns the sorted node names of answers, each once.
func nodesOf(answers []answer) []string {
	var nodes []string
	for _, a := range answers {
		nodes = append(nodes, a.Backend)
	}
	slices.Sort(nodes)
	return slices.Compact(nodes)
}

// projectedClientsSeen returns the addresses a workload pod may see as the client's behind an
// externalTrafficPolicy Local workload Service: the client's own through the ebpf datapath
// (tunnelled to the workload node, whose kube-proxy delivers it locally); with the kubeproxy
// datapath, the LB nodes', whose kube-proxy masquerades the client on its way to the
// workload node's NodePort.
func projectedClientsSeen(vip string) []string {
	family, client := corev1.IPv4Protocol, env.ClientAddress
	if strings.Contains(vip, ":") {
		family, client = corev1.IPv6Protocol, env.ClientAddress6
	}
	if env.Datapath == "ebpf" {
		return []string{client}
	}
	return nodeAddressesOf(family, lbNames()...)
}
