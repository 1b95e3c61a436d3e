// SPDX-License-Identifier: Apache-2.0

package allocator

import (
	"github.com/maglb/maglb/internal/lbservice"

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
		Key:             lbservice.Key(svc),
		Namespace:       svc.Namespace,
		Labels:          svc.Labels,
		NamespaceLabels: namespaceLabels,
		Policy:          policyOf(svc),
		IPv6First:       len(svc.Spec.IPFamilies) > 0 && svc.Spec.IPFamilies[0] == corev1.IPv6Protocol,
		Ports:           Ports(svc),
		SharingKey:      lbservice.SharingKey(svc),
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
