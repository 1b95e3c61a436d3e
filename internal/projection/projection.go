// SPDX-License-Identifier: Apache-2.0

// Package projection decides, from what a workload cluster shows, what the LB cluster must hold
// for one of its LoadBalancer Services: a selectorless Service that gets the VIP, and
// EndpointSlices whose endpoints are the workload nodes that can serve it. It does no I/O.
package projection

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/lbservice"
)

const (
	// Finalizer is on every projected workload Service: its projection goes before it does.
	Finalizer = "maglb.io/projection"
	// AnnotationWorkloadUID is the UID of the workload Service a projection comes from.
	AnnotationWorkloadUID = "maglb.io/workload-uid"
	// AnnotationWorkloadTrafficPolicy is the workload Service's externalTrafficPolicy.
	AnnotationWorkloadTrafficPolicy = "maglb.io/workload-external-traffic-policy"
	// LabelExcludeFromLB keeps a node out of every load balancer's backends.
	LabelExcludeFromLB = "node.kubernetes.io/exclude-from-external-load-balancers"
)

// carriedAnnotations are the allocation annotations copied to the projected Service.
var carriedAnnotations = []string{
	lbservice.AnnotationAddressPool, lbservice.LegacyAnnotationAddressPool,
	lbservice.AnnotationLoadBalancerIPs, lbservice.LegacyAnnotationLoadBalancerIPs,
}

// sharingAnnotations are carried with the cluster's name prefixed, so that sharing keys of
// different workload clusters never match.
var sharingAnnotations = []string{lbservice.AnnotationAllowSharedIP, lbservice.LegacyAnnotationAllowSharedIP}

// managedAnnotations are every annotation of a projected Service this package owns; the
// others (the allocator's ip-allocated-from-pool) are left alone.
var managedAnnotations = slices.Concat(carriedAnnotations, sharingAnnotations, []string{AnnotationWorkloadUID, AnnotationWorkloadTrafficPolicy})

// nameHashLen is how many hex digits of the hash end a projected name.
const nameHashLen = 8

// Name is the projected Service's name for the workload Service namespace/name of cluster: a
// readable prefix and a hash of all three, so that nothing collides across clusters.
func Name(cluster, namespace, name string) string {
	sum := sha256.Sum256([]byte(cluster + "/" + namespace + "/" + name))
	prefix := namespace + "-" + name
	if prefix[0] < 'a' || prefix[0] > 'z' {
		prefix = "s" + prefix // a Service name starts with a letter; namespaces may not
	}
	prefix = strings.TrimRight(prefix[:min(len(prefix), 63-1-nameHashLen)], "-")
	return prefix + "-" + hex.EncodeToString(sum[:])[:nameHashLen]
}

// Taken tells whether a workload cluster with class and selector projects svc: a LoadBalancer
// Service naming no class or that class, selected by selector.
func Taken(svc *corev1.Service, class string, selector labels.Selector) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if c := svc.Spec.LoadBalancerClass; c != nil && *c != class {
		return false
	}
	return selector.Matches(labels.Set(svc.Labels))
}

// Input is what a projection is made of.
type Input struct {
	Cluster string // the WorkloadCluster's name
	// Namespace is the LB-cluster namespace of the cluster's projections.
	Namespace string
	// LBClass is the LB controller's --lb-class, "" when unset.
	LBClass string
	Service *corev1.Service
	// Slices are the workload Service's EndpointSlices.
	Slices []discoveryv1.EndpointSlice
	// Nodes are the workload cluster's nodes by name.
	Nodes map[string]*corev1.Node
}

// originLabels say which workload Service a projection comes from.
func (in Input) originLabels() map[string]string {
	return map[string]string{
		v1alpha1.LabelWorkloadCluster:   in.Cluster,
		v1alpha1.LabelWorkloadNamespace: in.Service.Namespace,
		v1alpha1.LabelWorkloadName:      in.Service.Name,
	}
}

// ProjectedService is the LB-cluster Service for in.Service.
func ProjectedService(in Input) *corev1.Service {
	svc := in.Service
	out := &corev1.Service{ObjectMeta: metav1.ObjectMeta{
		Namespace:   in.Namespace,
		Name:        Name(in.Cluster, svc.Namespace, svc.Name),
		Labels:      maps.Clone(svc.Labels),
		Annotations: map[string]string{},
	}}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	maps.Copy(out.Labels, in.originLabels())
	for _, key := range carriedAnnotations {
		if v, ok := svc.Annotations[key]; ok {
			out.Annotations[key] = v
		}
	}
	for _, key := range sharingAnnotations {
		if v, ok := svc.Annotations[key]; ok {
			out.Annotations[key] = in.Cluster + "/" + v
		}
	}
	out.Annotations[AnnotationWorkloadUID] = string(svc.UID)
	out.Annotations[AnnotationWorkloadTrafficPolicy] = string(trafficPolicy(svc))

	out.Spec = corev1.ServiceSpec{
		Type:                          corev1.ServiceTypeLoadBalancer,
		AllocateLoadBalancerNodePorts: ptr.To(false),
		IPFamilies:                    slices.Clone(svc.Spec.IPFamilies),
		IPFamilyPolicy:                svc.Spec.IPFamilyPolicy,
		// The endpoints are outside the LB cluster: every LB node of the shard may serve.
		ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
		LoadBalancerIP:        svc.Spec.LoadBalancerIP,
	}
	if in.LBClass != "" {
		out.Spec.LoadBalancerClass = ptr.To(in.LBClass)
	}
	for _, p := range svc.Spec.Ports {
		out.Spec.Ports = append(out.Spec.Ports, corev1.ServicePort{
			Name: p.Name, Protocol: p.Protocol, Port: p.Port, TargetPort: intstr.FromInt32(nodePort(p)),
		})
	}
	return out
}

func trafficPolicy(svc *corev1.Service) corev1.ServiceExternalTrafficPolicy {
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		return corev1.ServiceExternalTrafficPolicyLocal
	}
	return corev1.ServiceExternalTrafficPolicyCluster
}

// nodePort is where a workload node takes the port: its NodePort, or the port itself when the
// Service has none (the backend agent hands VIP:port to the node's kube-proxy).
func nodePort(p corev1.ServicePort) int32 {
	if p.NodePort != 0 {
		return p.NodePort
	}
	return p.Port
}

// ServingNodes returns how many serving endpoints each usable node hosts: ready endpoints, or
// serving while terminating, counted once per target (a dual-stack pod is in two slices).
// Nodes missing, being deleted or excluded from load balancers are left out.
func ServingNodes(slices []discoveryv1.EndpointSlice, nodes map[string]*corev1.Node) map[string]int {
	seen := map[string]bool{}
	weights := map[string]int{}
	for _, slice := range slices {
		for _, ep := range slice.Endpoints {
			if ep.NodeName == nil || !serving(ep.Conditions) {
				continue
			}
			node, ok := nodes[*ep.NodeName]
			if !ok || node.DeletionTimestamp != nil {
				continue
			}
			if _, excluded := node.Labels[LabelExcludeFromLB]; excluded {
				continue
			}
			target := targetKey(ep)
			if seen[target] {
				continue
			}
			seen[target] = true
			weights[node.Name]++
		}
	}
	return weights
}

func serving(c discoveryv1.EndpointConditions) bool {
	if c.Ready == nil || *c.Ready {
		return true
	}
	return ptr.Deref(c.Terminating, false) && ptr.Deref(c.Serving, false)
}

// targetKey identifies the pod behind an endpoint, or the endpoint itself without one.
func targetKey(ep discoveryv1.Endpoint) string {
	if r := ep.TargetRef; r != nil && r.Name != "" {
		return r.Kind + "/" + r.Namespace + "/" + r.Name
	}
	return strings.Join(ep.Addresses, ",")
}

// nodeAddress returns the node's first InternalIP of family.
func nodeAddress(node *corev1.Node, family discoveryv1.AddressType) (netip.Addr, bool) {
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip := lbservice.ParseIP(a.Address)
		if ip.IsValid() && ip.Is4() == (family == discoveryv1.AddressTypeIPv4) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// families are the address types of projected slices, with their name suffixes.
var families = []struct {
	addressType discoveryv1.AddressType
	suffix      string
}{{discoveryv1.AddressTypeIPv4, "-ipv4"}, {discoveryv1.AddressTypeIPv6, "-ipv6"}}

// ProjectedSlices are the LB-cluster EndpointSlices for in.Service: one per family with
// endpoints, one endpoint per serving workload node, weighted by its serving endpoints.
func ProjectedSlices(in Input) []discoveryv1.EndpointSlice {
	projected := Name(in.Cluster, in.Service.Namespace, in.Service.Name)
	weights := ServingNodes(in.Slices, in.Nodes)
	var ports []discoveryv1.EndpointPort
	for _, p := range in.Service.Spec.Ports {
		ports = append(ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Protocol: ptr.To(p.Protocol), Port: ptr.To(nodePort(p))})
	}
	var out []discoveryv1.EndpointSlice
	for _, family := range families {
		endpoints := map[netip.Addr]uint32{}
		for name, weight := range weights {
			if addr, ok := nodeAddress(in.Nodes[name], family.addressType); ok {
				endpoints[addr] = uint32(weight)
			}
		}
		if len(endpoints) == 0 {
			continue
		}
		addrs := slices.SortedFunc(maps.Keys(endpoints), netip.Addr.Compare)
		slice := discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: in.Namespace,
				Name:      projected + family.suffix,
				Labels: map[string]string{
					discoveryv1.LabelServiceName: projected,
					discoveryv1.LabelManagedBy:   v1alpha1.EndpointSliceManagedBy,
				},
			},
			AddressType: family.addressType,
			Ports:       ports,
		}
		maps.Copy(slice.Labels, in.originLabels())
		for _, addr := range addrs {
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{addr.String()},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			})
		}
		slice.Annotations = map[string]string{v1alpha1.AnnotationEndpointWeights: v1alpha1.FormatEndpointWeights(endpoints)}
		out = append(out, slice)
	}
	return out
}

// UpdateService returns current with the fields of want this package owns, and whether any
// differed: an unchanged projection causes no write.
func UpdateService(current, want *corev1.Service) (*corev1.Service, bool) {
	out := current.DeepCopy()
	changed := false
	if !maps.Equal(out.Labels, want.Labels) {
		out.Labels, changed = maps.Clone(want.Labels), true
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	for _, key := range managedAnnotations {
		v, ok := want.Annotations[key]
		old, had := out.Annotations[key]
		switch {
		case ok && (!had || old != v):
			out.Annotations[key], changed = v, true
		case !ok && had:
			delete(out.Annotations, key)
			changed = true
		}
	}
	s, w := &out.Spec, &want.Spec
	if s.Type != w.Type || s.Selector != nil || !equality.Semantic.DeepEqual(s.AllocateLoadBalancerNodePorts, w.AllocateLoadBalancerNodePorts) ||
		s.ExternalTrafficPolicy != w.ExternalTrafficPolicy || !equality.Semantic.DeepEqual(s.LoadBalancerClass, w.LoadBalancerClass) ||
		s.LoadBalancerIP != w.LoadBalancerIP || !portsEqual(s.Ports, w.Ports) {
		s.Type, s.Selector, s.AllocateLoadBalancerNodePorts = w.Type, nil, w.AllocateLoadBalancerNodePorts
		s.ExternalTrafficPolicy, s.LoadBalancerClass, s.LoadBalancerIP = w.ExternalTrafficPolicy, w.LoadBalancerClass, w.LoadBalancerIP
		s.Ports = mergePorts(s.Ports, w.Ports)
		changed = true
	}
	// The API server defaults the families when the workload's were not known.
	if len(w.IPFamilies) > 0 && !slices.Equal(s.IPFamilies, w.IPFamilies) {
		s.IPFamilies, changed = slices.Clone(w.IPFamilies), true
	}
	if w.IPFamilyPolicy != nil && !equality.Semantic.DeepEqual(s.IPFamilyPolicy, w.IPFamilyPolicy) {
		s.IPFamilyPolicy, changed = w.IPFamilyPolicy, true
	}
	return out, changed
}

func portsEqual(current, want []corev1.ServicePort) bool {
	return slices.EqualFunc(current, want, func(a, b corev1.ServicePort) bool {
		return a.Name == b.Name && a.Protocol == b.Protocol && a.Port == b.Port && a.TargetPort == b.TargetPort
	})
}

// mergePorts returns want's ports; fields want does not set (appProtocol, node ports the LB
// cluster allocated) are kept from the current port of the same name.
func mergePorts(current, want []corev1.ServicePort) []corev1.ServicePort {
	out := slices.Clone(want)
	for i := range out {
		for _, c := range current {
			if c.Name == out[i].Name && c.Protocol == out[i].Protocol {
				out[i].NodePort = c.NodePort
			}
		}
	}
	return out
}

// UpdateSlice returns current with want's labels, annotations, ports and endpoints, and
// whether any differed.
func UpdateSlice(current, want *discoveryv1.EndpointSlice) (*discoveryv1.EndpointSlice, bool) {
	if maps.Equal(current.Labels, want.Labels) && maps.Equal(current.Annotations, want.Annotations) &&
		equality.Semantic.DeepEqual(current.Ports, want.Ports) && equality.Semantic.DeepEqual(current.Endpoints, want.Endpoints) {
		return current, false
	}
	out := current.DeepCopy()
	out.Labels, out.Annotations = maps.Clone(want.Labels), maps.Clone(want.Annotations)
	out.Ports, out.Endpoints = want.Ports, want.Endpoints
	return out, true
}

// Ingress is what the workload Service's status shows of its projection: the VIPs.
func Ingress(projected *corev1.Service) []corev1.LoadBalancerIngress {
	var out []corev1.LoadBalancerIngress
	for _, ip := range lbservice.IngressIPs(projected.Status.LoadBalancer) {
		out = append(out, corev1.LoadBalancerIngress{IP: ip.String()})
	}
	return out
}

// IngressEqual compares ingress lists by their addresses.
func IngressEqual(a, b []corev1.LoadBalancerIngress) bool {
	return slices.EqualFunc(a, b, func(x, y corev1.LoadBalancerIngress) bool { return x.IP == y.IP && x.Hostname == y.Hostname })
}

// AllocatedMessage is the IPAllocated event of a workload Service: upstream's words plus where
// the VIP comes from in the LB cluster.
func AllocatedMessage(ingress []corev1.LoadBalancerIngress, pool, shard string) string {
	ips := make([]string, 0, len(ingress))
	for _, i := range ingress {
		ips = append(ips, i.IP)
	}
	where := "pool " + strconv.Quote(pool)
	if shard != "" {
		where += ", shard " + strconv.Quote(shard)
	}
	return fmt.Sprintf("Assigned IP %q from the LB cluster's %s", ips, where)
}
