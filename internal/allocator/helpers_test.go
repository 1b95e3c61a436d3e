// SPDX-License-Identifier: Apache-2.0

package allocator

import (
	"net/netip"
	"testing"

	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/lbservice"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Pools are built from IPAddressPool resources by the configuration package, so that
// the tests see ranges and selectors exactly as the controller will.

type poolOpt func(*maglbv1beta1.IPAddressPool)

func pool(name string, addresses []string, opts ...poolOpt) maglbv1beta1.IPAddressPool {
	p := maglbv1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "metallb-system"}}
	p.Spec.Addresses = addresses
	for _, o := range opts {
		o(&p)
	}
	return p
}

func manual(p *maglbv1beta1.IPAddressPool) {
	f := false
	p.Spec.AutoAssign = &f
}

func avoidBuggy(p *maglbv1beta1.IPAddressPool) { p.Spec.AvoidBuggyIPs = true }

func shard(s string) poolOpt {
	return func(p *maglbv1beta1.IPAddressPool) { p.Spec.Shard = s }
}

func allocateTo(priority int, namespaces []string, namespaceSelectors, serviceSelectors []map[string]string) poolOpt {
	return func(p *maglbv1beta1.IPAddressPool) {
		sa := &metallbv1beta1.ServiceAllocation{Priority: priority, Namespaces: namespaces}
		for _, l := range namespaceSelectors {
			sa.NamespaceSelectors = append(sa.NamespaceSelectors, metav1.LabelSelector{MatchLabels: l})
		}
		for _, l := range serviceSelectors {
			sa.ServiceSelectors = append(sa.ServiceSelectors, metav1.LabelSelector{MatchLabels: l})
		}
		p.Spec.AllocateTo = sa
	}
}

func namespace(name string, labels map[string]string) corev1.Namespace {
	return corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func buildPools(t testing.TB, namespaces []corev1.Namespace, crs ...maglbv1beta1.IPAddressPool) *config.Pools {
	t.Helper()
	cfg, err := config.For(config.ClusterResources{Pools: crs, Namespaces: namespaces}, config.DontValidate)
	if err != nil {
		t.Fatalf("building pools: %v", err)
	}
	return &cfg.Pools
}

type svcOpt func(*corev1.Service)

// service is a LoadBalancer service in namespace "default" with one IPv4 cluster IP and
// the port TCP/80, changed by opts.
func service(name string, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeLoadBalancer,
			ClusterIP:  "10.96.0.1",
			ClusterIPs: []string{"10.96.0.1"},
			Ports:      []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80}},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func inNamespace(ns string) svcOpt {
	return func(s *corev1.Service) { s.Namespace = ns }
}

func labelled(l map[string]string) svcOpt {
	return func(s *corev1.Service) { s.Labels = l }
}

func annotated(kv ...string) svcOpt {
	return func(s *corev1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		for i := 0; i < len(kv); i += 2 {
			s.Annotations[kv[i]] = kv[i+1]
		}
	}
}

func lbIP(ip string) svcOpt {
	return func(s *corev1.Service) { s.Spec.LoadBalancerIP = ip }
}

func ports(ps ...string) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.Ports = nil
		for _, p := range ps {
			proto, port := parsePort(p)
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Protocol: proto, Port: port})
		}
	}
}

func parsePort(s string) (corev1.Protocol, int32) {
	for i := range s {
		if s[i] == '/' {
			n := int32(0)
			for _, c := range s[i+1:] {
				n = n*10 + int32(c-'0')
			}
			return corev1.Protocol(s[:i]), n
		}
	}
	panic("bad port " + s)
}

func clusterIPs(ips ...string) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.ClusterIPs = ips
		s.Spec.ClusterIP = ""
		if len(ips) > 0 {
			s.Spec.ClusterIP = ips[0]
		}
	}
}

func dualStack(s *corev1.Service) {
	clusterIPs("10.96.0.1", "fd00:96::1")(s)
}

func familyPolicy(p corev1.IPFamilyPolicy) svcOpt {
	return func(s *corev1.Service) { s.Spec.IPFamilyPolicy = &p }
}

func ipFamilies(f ...corev1.IPFamily) svcOpt {
	return func(s *corev1.Service) { s.Spec.IPFamilies = f }
}

func shared(key string) svcOpt {
	return annotated(lbservice.AnnotationAllowSharedIP, key)
}

func local(selector map[string]string) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyTypeLocal
		s.Spec.Selector = selector
	}
}

func typed(t corev1.ServiceType) svcOpt {
	return func(s *corev1.Service) { s.Spec.Type = t }
}

func withStatus(ips ...string) svcOpt {
	return func(s *corev1.Service) {
		s.Status.LoadBalancer.Ingress = nil
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
	}
}

func normal(reason, msg string) Event  { return Event{EventNormal, reason, msg} }
func warning(reason, msg string) Event { return Event{EventWarning, reason, msg} }

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func texts(ips []netip.Addr) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// apply writes a Converge result back to the service, as the controller does.
func apply(svc *corev1.Service, r Result) *corev1.Service {
	out := svc.DeepCopy()
	if !r.Changed {
		return out
	}
	out.Status.LoadBalancer = corev1.LoadBalancerStatus{}
	for _, ip := range r.IPs {
		out.Status.LoadBalancer.Ingress = append(out.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip.String()})
	}
	if r.Pool != "" {
		if out.Annotations == nil {
			out.Annotations = map[string]string{}
		}
		out.Annotations[lbservice.AnnotationIPAllocatedFromPool] = r.Pool
	} else {
		delete(out.Annotations, lbservice.AnnotationIPAllocatedFromPool)
	}
	delete(out.Annotations, lbservice.LegacyAnnotationIPAllocatedFromPool)
	return out
}
