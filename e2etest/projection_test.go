//go:build e2e

// SPDX-License-Identifier: Apache-2.0

package e2etest

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	maglbv1alpha1 "github.com/maglb/maglb/api/v1alpha1"
)

// The projection specs create LoadBalancer Services in the workload clusters (namespace demo,
// selecting the lab's echo Pods) and follow them into the LB cluster: the VIP written back,
// the traffic through it answered by workload pods, the projected objects. Their VIPs come from
// a pool of their own, named by the address-pool annotation that projection carries over.
var _ = Describe("Projection", Label("projection"), Ordered, func() {
	ctx := context.Background()
	const poolName = "e2e-projection"
	inPool := map[string]string{"metallb.io/address-pool": poolName}
	var wc1 string

	BeforeAll(func() {
		requireWorkloadClusters(1)
		wc1 = workloadClusterNames()[0]
		cidrs := []string{testCIDR(6)}
		if env.VIPRange6 != "" {
			cidrs = append(cidrs, testCIDR6(2))
		}
		createAdvertisedPool(ctx, poolName, cidrs...)
		for _, wc := range workloadClusterNames() {
			Eventually(workloadCondition(ctx, wc, maglbv1alpha1.ConditionConnected)).Should(HaveField("Status", metav1.ConditionTrue), "WorkloadCluster %s connected", wc)
		}
	})

	It("writes the VIP back to a workload Service and answers through it from a workload pod", Label("smoke"), func() {
		svc := createWorkloadService(ctx, wc1, "e2e-smoke", inPool)
		Eventually(workloadIngress(ctx, wc1, svc), 30*time.Second).Should(HaveLen(1), "a VIP written back within 30 s")
		vip := workloadVIP(ctx, wc1, svc)
		Expect(netip.MustParsePrefix(testCIDR(6)).Contains(netip.MustParseAddr(vip))).To(BeTrue(), "VIP %s from pool %s", vip, poolName)
		Eventually(reachable(vip)).Should(HaveField("Pod", BeElementOf(slotsOf(wc1, ""))), "HTTP through %s answered by a pod of %s", vip, wc1)
		Eventually(workloadEvents(ctx, wc1, svc)).Should(ContainElement(And(HavePrefix("IPAllocated: "), ContainSubstring(poolName))))
	})

	It("projects a Service as a selectorless Service of the workload nodes, with their ready pods as weights", func() {
		svc := createWorkloadService(ctx, wc1, "e2e-shape", inPool)
		workloadVIP(ctx, wc1, svc)
		var workload corev1.Service
		Expect(workloadClient(wc1).Get(ctx, client.ObjectKeyFromObject(svc), &workload)).To(Succeed())
		var registered maglbv1alpha1.WorkloadCluster
		Expect(cs.Get(ctx, client.ObjectKey{Name: wc1}, &registered)).To(Succeed())

		p := projectionOf(ctx, wc1, svc)
		Expect(p.Namespace).To(Equal(registered.ProjectionNamespace()))
		Expect(len(p.Name)).To(BeNumerically("<=", 63))
		Expect(p.Spec.Type).To(Equal(corev1.ServiceTypeLoadBalancer))
		Expect(p.Spec.Selector).To(BeEmpty(), "the endpoints are outside the LB cluster")
		Expect(p.Spec.AllocateLoadBalancerNodePorts).To(HaveValue(BeFalse()))
		Expect(p.Spec.ExternalTrafficPolicy).To(Equal(corev1.ServiceExternalTrafficPolicyCluster))
		Expect(p.Annotations).To(HaveKeyWithValue("maglb.io/workload-uid", string(workload.UID)))
		Expect(p.Annotations).To(HaveKeyWithValue("maglb.io/workload-external-traffic-policy", "Local"))
		Expect(p.Annotations).To(HaveKeyWithValue("metallb.io/address-pool", poolName))
		Expect(workloadClient(wc1).Get(ctx, client.ObjectKeyFromObject(svc), &workload)).To(Succeed())
		Expect(workload.Finalizers).To(ContainElement("maglb.io/projection"))
		for _, port := range workload.Spec.Ports {
			Expect(p.Spec.Ports).To(ContainElement(And(HaveField("Name", port.Name), HaveField("Protocol", port.Protocol),
				HaveField("Port", port.Port), HaveField("TargetPort", intstr.FromInt32(port.NodePort)))), "port %s: to the workload NodePort", port.Name)
		}

		want := map[string]string{}
		for node, pods := range echoPods(ctx, wc1) {
			want[node] = strconv.Itoa(len(pods))
		}
		Eventually(projectedWeights(ctx, wc1, svc)).Should(Equal(want), "a workload node's weight is its number of ready pods")
		eps, err := projectedSlices(ctx, wc1, svc)()
		Expect(err).NotTo(HaveOccurred())
		for _, s := range eps {
			Expect(s.Labels).To(HaveKeyWithValue(discoveryv1.LabelServiceName, p.Name))
			Expect(s.Labels).To(HaveKeyWithValue(discoveryv1.LabelManagedBy, "projection.maglb.io"))
			Expect(s.Name).To(Equal(p.Name + "-" + strings.ToLower(string(s.AddressType))))
			for _, e := range s.Endpoints {
				Expect(e.NodeName).To(BeNil(), "the workload node is not in the LB cluster")
				Expect(e.Conditions.Ready).To(HaveValue(BeTrue()))
			}
		}
	})

	It("answers HTTP and UDP through the VIP from pods on several workload nodes, seeing the client's address", func() {
		if len(workloadNodeNames(wc1)) < 2 {
			Skip("needs two workload nodes")
		}
		svc := createWorkloadService(ctx, wc1, "e2e-spread", inPool)
		vip := workloadVIP(ctx, wc1, svc)
		for _, protocol := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
			var answers []answer
			// Each workload node's kube-proxy takes up the VIP on its own time: ask until every flow is answered.
			Eventually(func(g Gomega) {
				var err error
				answers, err = answersThrough(vip, protocol, 40)()
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(answers).To(HaveEach(HaveField("Client", BeElementOf(projectedClientsSeen(vip)))), "the address the pods saw")
				g.Expect(nodesOf(answers)).To(HaveLen(len(workloadNodeNames(wc1))), "%s flows spread over the workload nodes", protocol)
			}).Should(Succeed())
			AddReportEntry(string(protocol)+" pods", podsOf(answers))
			Expect(answers).To(HaveEach(HaveField("Pod", BeElementOf(slotsOf(wc1, "")))))
			Expect(len(podsOf(answers))).To(BeNumerically(">=", 2), "%s answered by several pods", protocol)
		}
	})

	It("follows the workload's pods and nodes: scaled up and down, a pod not ready, a node excluded", func() {
		nodes := workloadNodeNames(wc1)
		if len(nodes) < 2 {
			Skip("needs two workload nodes")
		}
		n1, n2 := nodes[0], nodes[1]
		svc := createWorkloadService(ctx, wc1, "e2e-follow", inPool)
		vip := workloadVIP(ctx, wc1, svc)
		initial := echoPods(ctx, wc1)
		Expect(initial[n1]).NotTo(BeEmpty(), "echo pods on %s", n1)
		all := slices.Sorted(slices.Values(append(slices.Clone(initial[n1]), initial[n2]...)))
		weight := func(pods int) string { return strconv.Itoa(pods) }
		answering := func() ([]string, error) {
			a, err := answersThrough(vip, corev1.ProtocolTCP, 40)()
			return podsOf(a), err
		}
		answeringNodes := func() ([]string, error) {
			a, err := answersThrough(vip, corev1.ProtocolTCP, 20)()
			return nodesOf(a), err
		}
		Eventually(answering).Should(ConsistOf(all))

		By("scaling up on " + n1)
		slot := freeSlot(ctx, wc1, n1)
		remove := createSlotPod(ctx, wc1, slot)
		Eventually(projectedWeights(ctx, wc1, svc)).Should(HaveKeyWithValue(n1, weight(len(initial[n1])+1)))
		Eventually(answering).Should(ConsistOf(append(slices.Clone(all), slot)))

		By("scaling down again")
		remove()
		Eventually(projectedWeights(ctx, wc1, svc)).Should(HaveKeyWithValue(n1, weight(len(initial[n1]))))
		Eventually(answering).Should(ConsistOf(all))

		By("making a pod of " + n1 + " not ready")
		notReady := initial[n1][0]
		setPodReady(ctx, wc1, notReady, false)
		Eventually(projectedWeights(ctx, wc1, svc)).Should(HaveKeyWithValue(n1, weight(len(initial[n1])-1)))
		Eventually(answering).Should(ConsistOf(slices.DeleteFunc(slices.Clone(all), func(p string) bool { return p == notReady })))
		setPodReady(ctx, wc1, notReady, true)
		Eventually(answering).Should(ConsistOf(all))

		By("excluding " + n2 + " from external load balancers")
		excludeNode(ctx, wc1, n2)
		Eventually(projectedWeights(ctx, wc1, svc)).ShouldNot(HaveKey(n2))
		Eventually(answeringNodes).Should(Equal([]string{n1}))
		setNodeLabel(ctx, wc1, n2, excludeNodeLabel, nil)
		Eventually(answeringNodes).Should(Equal([]string{n1, n2}))
	})

	It("gives the same namespace/name in two workload clusters two VIPs, each reaching its own cluster's pods", func() {
		requireWorkloadClusters(2)
		names := workloadClusterNames()[:2]
		vips := map[string]string{}
		projections := map[string]string{}
		for _, wc := range names {
			svc := createWorkloadService(ctx, wc, "e2e-twin", inPool)
			vips[wc] = workloadVIP(ctx, wc, svc)
			p := projectionOf(ctx, wc, svc)
			projections[wc] = p.Namespace + "/" + p.Name
		}
		Expect(vips[names[0]]).NotTo(Equal(vips[names[1]]))
		Expect(projections[names[0]]).NotTo(Equal(projections[names[1]]))
		for _, wc := range names {
			pods := func() ([]string, error) {
				a, err := answersThrough(vips[wc], corev1.ProtocolTCP, 20)()
				return podsOf(a), err
			}
			Eventually(pods).Should(And(Not(BeEmpty()), HaveEach(BeElementOf(slotsOf(wc, "")))), "%s's VIP %s answered by its own pods", wc, vips[wc])
		}
	})

	It("shares an IP between workload Services with the same allow-shared-ip key, per workload cluster, and assigns a requested IP", func() {
		shared, requested := nthAddress(testCIDR(6), 5), nthAddress(testCIDR(6), 6)
		sharing := map[string]string{"metallb.io/address-pool": poolName, "metallb.io/allow-shared-ip": "e2e-shared", "metallb.io/loadBalancerIPs": shared}
		http := createWorkloadService(ctx, wc1, "e2e-shared-http", sharing, onlyPort(corev1.ProtocolTCP))
		udp := createWorkloadService(ctx, wc1, "e2e-shared-udp", sharing, onlyPort(corev1.ProtocolUDP))
		Eventually(workloadIngress(ctx, wc1, http)).Should(Equal([]string{shared}))
		Eventually(workloadIngress(ctx, wc1, udp)).Should(Equal([]string{shared}))
		Eventually(reachable(shared)).Should(HaveField("Pod", BeElementOf(slotsOf(wc1, ""))))
		Eventually(func() (answer, error) { return udpEcho(shared, env.UDPPort) }).Should(HaveField("Pod", BeElementOf(slotsOf(wc1, ""))))

		svc := createWorkloadService(ctx, wc1, "e2e-requested", map[string]string{"metallb.io/address-pool": poolName, "metallb.io/loadBalancerIPs": requested})
		Eventually(workloadIngress(ctx, wc1, svc)).Should(Equal([]string{requested}))
		Eventually(reachable(requested)).Should(HaveField("Pod", BeElementOf(slotsOf(wc1, ""))))

		if len(env.WorkloadClusters) < 2 {
			return
		}
		// The same key in another cluster is another key: its Service does not share the IP.
		other := workloadClusterNames()[1]
		clash := createWorkloadService(ctx, other, "e2e-shared-other", sharing, func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{{Name: "alt", Protocol: corev1.ProtocolTCP, Port: 8080, TargetPort: intstr.FromInt32(8080)}}
		})
		Eventually(workloadEvents(ctx, other, clash)).Should(ContainElement(HavePrefix("AllocationFailed")), "the LB cluster's warning mirrored onto the workload Service")
		Consistently(workloadIngress(ctx, other, clash), 3*time.Second).Should(BeEmpty())
	})

	It("keeps forwarding while a workload API server is down for 60 s, then applies what changed", func() {
		wc := wc1
		stop, start := env.WorkloadClusters[wc].APIServerStop, env.WorkloadClusters[wc].APIServerStart
		if len(stop) == 0 || len(start) == 0 {
			Skip("the environment has no command to stop and start " + wc + "'s API server")
		}
		svc := createWorkloadService(ctx, wc, "e2e-outage", inPool)
		vip := workloadVIP(ctx, wc, svc)
		answeredHere := HaveEach(HaveField("Pod", BeElementOf(slotsOf(wc, ""))))
		Eventually(answersThrough(vip, corev1.ProtocolTCP, 10)).Should(answeredHere)
		want := map[string]string{}
		for node, pods := range echoPods(ctx, wc) {
			want[node] = strconv.Itoa(len(pods))
		}
		Eventually(projectedWeights(ctx, wc, svc)).Should(Equal(want))
		before, err := resourceVersions(ctx, wc, svc)
		Expect(err).NotTo(HaveOccurred())

		runCommand(stop)
		down := time.Now()
		restarted := false
		DeferCleanup(func() {
			if !restarted {
				runCommand(start)
			}
		})
		Eventually(workloadCondition(ctx, wc, maglbv1alpha1.ConditionConnected)).Should(
			And(HaveField("Status", metav1.ConditionFalse), HaveField("Message", Not(BeEmpty()))), "Connected=False, saying why")
		Consistently(func(g Gomega) {
			a, err := answersThrough(vip, corev1.ProtocolTCP, 5)()
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(a).To(answeredHere)
			now, err := resourceVersions(ctx, wc, svc)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(now).To(Equal(before), "the projected objects are left as they were")
		}, max(time.Until(down.Add(60*time.Second)), 5*time.Second), 2*time.Second).Should(Succeed())
		condition, err := workloadCondition(ctx, wc, maglbv1alpha1.ConditionConnected)()
		Expect(err).NotTo(HaveOccurred())
		AddReportEntry("while down", condition.Reason+": "+condition.Message)

		runCommand(start)
		restarted = true
		Eventually(workloadCondition(ctx, wc, maglbv1alpha1.ConditionConnected)).Should(HaveField("Status", metav1.ConditionTrue))
		node := workloadNodeNames(wc)[0]
		createSlotPod(ctx, wc, freeSlot(ctx, wc, node))
		Eventually(projectedWeights(ctx, wc, svc)).Should(HaveKeyWithValue(node, strconv.Itoa(len(echoPods(ctx, wc)[node]))))
	})

	It("withdraws the route at the ToR and removes the projection when the workload Service is deleted", func() {
		svc := createWorkloadService(ctx, wc1, "e2e-delete", inPool)
		vip := workloadVIP(ctx, wc1, svc)
		Eventually(reachable(vip)).Should(HaveField("Pod", BeElementOf(slotsOf(wc1, ""))))
		if env.Protocol == "bgp" {
			Eventually(nexthops("tor", vip)).ShouldNot(BeEmpty())
		}
		projectionOf(ctx, wc1, svc)

		deleteWorkloadService(ctx, wc1, svc)
		Eventually(projectedServices(ctx, wc1, svc)).Should(BeEmpty())
		Eventually(projectedSlices(ctx, wc1, svc)).Should(BeEmpty())
		if env.Protocol == "bgp" {
			Eventually(nexthops("tor", vip)).Should(BeEmpty())
		}
	})

	It("removes every projection of a deleted WorkloadCluster", func() {
		// A second registration of a workload cluster, taking only Services of its own class and
		// label, so that it never competes with the cluster's own registration.
		source := workloadClusterNames()[len(env.WorkloadClusters)-1]
		var registered maglbv1alpha1.WorkloadCluster
		Expect(cs.Get(ctx, client.ObjectKey{Name: source}, &registered)).To(Succeed())
		const name, class = "e2e-wc-tmp", "e2e.maglb.io/wc-tmp"
		// A namespace of the spec's own: projection deletes only namespaces it created, and
		// without a namespace controller a deleted one would stay terminating.
		ensureNamespace(ctx, name)
		tmp := &maglbv1alpha1.WorkloadCluster{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: maglbv1alpha1.WorkloadClusterSpec{
				KubeconfigSecret:  registered.Spec.KubeconfigSecret,
				ServiceSelector:   &metav1.LabelSelector{MatchLabels: map[string]string{"e2e": name}},
				LoadBalancerClass: class,
				Namespace:         name,
			},
		}
		create(ctx, tmp)
		Eventually(workloadCondition(ctx, name, maglbv1alpha1.ConditionConnected)).Should(HaveField("Status", metav1.ConditionTrue))

		ofTmp := func(s *corev1.Service) {
			s.Labels = map[string]string{"e2e": name}
			s.Spec.LoadBalancerClass = ptr.To(class)
		}
		var services []*corev1.Service
		var vips []string
		for _, svcName := range []string{"e2e-tmp-a", "e2e-tmp-b"} {
			svc := createWorkloadService(ctx, source, svcName, inPool, ofTmp)
			services = append(services, svc)
			vips = append(vips, workloadVIP(ctx, source, svc))
			Expect(projectionOf(ctx, name, svc).Namespace).To(Equal(name))
			Consistently(projectedServices(ctx, source, svc), 2*time.Second).Should(BeEmpty(), "%s's own registration does not take it", source)
		}

		Expect(cs.Delete(ctx, tmp)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(cs.Get(ctx, client.ObjectKey{Name: name}, &maglbv1alpha1.WorkloadCluster{}))
		}).Should(BeTrue(), "WorkloadCluster %s gone", name)
		byCluster := client.MatchingLabels{maglbv1alpha1.LabelWorkloadCluster: name}
		Eventually(func() ([]corev1.Service, error) {
			var list corev1.ServiceList
			err := cs.List(ctx, &list, byCluster)
			return list.Items, err
		}).Should(BeEmpty())
		Eventually(func() ([]discoveryv1.EndpointSlice, error) {
			var list discoveryv1.EndpointSliceList
			err := cs.List(ctx, &list, byCluster)
			return list.Items, err
		}).Should(BeEmpty())
		for i, svc := range services {
			Eventually(workloadIngress(ctx, source, svc)).Should(BeEmpty(), "the VIP taken back from %s", svc.Name)
			Eventually(func() ([]string, error) {
				var got corev1.Service
				err := workloadClient(source).Get(ctx, client.ObjectKeyFromObject(svc), &got)
				return got.Finalizers, err
			}).ShouldNot(ContainElement("maglb.io/projection"))
			if env.Protocol == "bgp" {
				Eventually(nexthops("tor", vips[i])).Should(BeEmpty())
			}
		}
	})

	It("answers through both VIPs of a dual-stack workload Service", func() {
		if env.VIPRange6 == "" {
			Skip("the environment has no IPv6 VIP range")
		}
		svc := createWorkloadService(ctx, wc1, "e2e-dual", inPool, dualStack)
		Eventually(workloadIngress(ctx, wc1, svc)).Should(HaveLen(2))
		vips, _ := workloadIngress(ctx, wc1, svc)()
		Expect(slices.ContainsFunc(vips, func(ip string) bool { return strings.Contains(ip, ":") })).To(BeTrue(), "an IPv6 VIP among %v", vips)
		Eventually(projectedSlices(ctx, wc1, svc)).Should(ConsistOf(HaveField("AddressType", discoveryv1.AddressTypeIPv4), HaveField("AddressType", discoveryv1.AddressTypeIPv6)))
		for _, vip := range vips {
			Eventually(reachable(vip)).Should(And(HaveField("Pod", BeElementOf(slotsOf(wc1, ""))), HaveField("Client", BeElementOf(projectedClientsSeen(vip)))),
				"HTTP through %s", vip)
		}
	})

	It("reports a bad kubeconfig Secret: Connected=False, saying what is wrong", func() {
		secretNamespace := cmp.Or(env.KubeconfigSecretNamespace, env.Namespace)
		create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "e2e-bad-kubeconfig", Namespace: secretNamespace},
			StringData: map[string]string{maglbv1alpha1.DefaultKubeconfigKey: "this is not a kubeconfig"},
		})
		bad := &maglbv1alpha1.WorkloadCluster{
			ObjectMeta: metav1.ObjectMeta{Name: "e2e-bad"},
			Spec:       maglbv1alpha1.WorkloadClusterSpec{KubeconfigSecret: maglbv1alpha1.SecretKeyRef{Name: "e2e-bad-kubeconfig"}},
		}
		create(ctx, bad)
		notConnected := And(HaveField("Status", metav1.ConditionFalse), HaveField("Message", Not(BeEmpty())))
		Eventually(workloadCondition(ctx, bad.Name, maglbv1alpha1.ConditionConnected)).Should(notConnected)

		Expect(cs.Get(ctx, client.ObjectKeyFromObject(bad), bad)).To(Succeed())
		bad.Spec.KubeconfigSecret.Name = "e2e-missing-kubeconfig"
		Expect(cs.Update(ctx, bad)).To(Succeed())
		Eventually(workloadCondition(ctx, bad.Name, maglbv1alpha1.ConditionConnected)).Should(
			And(notConnected, HaveField("Message", ContainSubstring("e2e-missing-kubeconfig"))), "the message names the missing Secret")
	})
})

// nthAddress is the n-th address of cidr (its first is the 0th).
func nthAddress(cidr string, n int) string {
	a := netip.MustParsePrefix(cidr).Addr()
	for range n {
		a = a.Next()
	}
	return a.String()
}
