// SPDX-License-Identifier: Apache-2.0

package allocator

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Port is one protocol and port a service listens on; two services may share an address
// only when they have no Port in common.
type Port struct {
	Proto string
	Port  int
}

func (p Port) String() string {
	return fmt.Sprintf("%s/%d", p.Proto, p.Port)
}

// Request is what the allocator needs to know about a service.
type Request struct {
	// Key identifies the service: "namespace/name".
	Key       string
	Namespace string
	// Labels are the service's labels, matched by the pools' service selectors.
	Labels map[string]string
	// NamespaceLabels are the labels of the service's namespace, matched by the pools'
	// namespace selectors (in addition to the namespaces the configuration resolved).
	NamespaceLabels map[string]string
	// Family is the family of the service's cluster IPs; the allocating methods need it.
	Family Family
	// Policy is spec.ipFamilyPolicy; empty means SingleStack.
	Policy corev1.IPFamilyPolicy
	// IPv6First is set when spec.ipFamilies starts with IPv6: a PreferDualStack service
	// that can get only one family then prefers IPv6.
	IPv6First  bool
	Ports      []Port
	SharingKey string
	BackendKey string
}

// RequestFor describes svc. Family is left empty when the cluster IPs do not give one.
func RequestFor(svc *corev1.Service, namespaceLabels map[string]string) Request {
	r := Request{
		Key:             Key(svc),
		Namespace:       svc.Namespace,
		Labels:          svc.Labels,
		NamespaceLabels: namespaceLabels,
		Policy:          policyOf(svc),
		IPv6First:       len(svc.Spec.IPFamilies) > 0 && svc.Spec.IPFamilies[0] == corev1.IPv6Protocol,
		Ports:           Ports(svc),
		SharingKey:      SharingKey(svc),
		BackendKey:      BackendKey(svc),
	}
	if f, err := ServiceFamily(svc); err == nil {
		r.Family = f
	}
	return r
}

func (r *Request) policy() corev1.IPFamilyPolicy {
	if r.Policy == "" {
		return corev1.IPFamilyPolicySingleStack
	}
	return r.Policy
}

// Key is the allocator's name for a service: "namespace/name".
func Key(svc *corev1.Service) string {
	return svc.Namespace + "/" + svc.Name
}

// Ports lists the service's ports, in spec order.
func Ports(svc *corev1.Service) []Port {
	var ports []Port
	for _, p := range svc.Spec.Ports {
		ports = append(ports, Port{Proto: string(p.Protocol), Port: int(p.Port)})
	}
	return ports
}

// BackendKey is what services sharing an address must have in common besides the sharing
// key: with externalTrafficPolicy Local, the same selector (the same pods, hence the same
// nodes announce the address); nothing with Cluster.
func BackendKey(svc *corev1.Service) string {
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyTypeLocal {
		return labels.Set(svc.Spec.Selector).String()
	}
	return ""
}

// SharingKey is the service's allow-shared-ip annotation; the metallb.io one wins when
// both are set.
func SharingKey(svc *corev1.Service) string {
	return annotationValue(svc.Annotations, AnnotationAllowSharedIP, LegacyAnnotationAllowSharedIP)
}

// Handles tells whether a controller started with lbClass (the --lb-class flag, "" when
// unset) is in charge of svc: without a class, only services that name none; with one,
// only services that name it. A nil service (a deletion) is always handled.
func Handles(svc *corev1.Service, lbClass string) bool {
	if svc == nil {
		return true
	}
	if svc.Spec.LoadBalancerClass == nil {
		return lbClass == ""
	}
	return *svc.Spec.LoadBalancerClass == lbClass
}
