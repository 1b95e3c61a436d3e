// SPDX-License-Identifier: Apache-2.0

package allocator

import (
	"github.com/maglb/maglb/internal/lbservice"

	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Event types and the reasons of the events Converge reports, as MetalLB emits them.
const (
	EventNormal  = corev1.EventTypeNormal
	EventWarning = corev1.EventTypeWarning

	ReasonIPAllocated            = "IPAllocated"
	ReasonAllocationFailed       = "AllocationFailed"
	ReasonClearAssignment        = "ClearAssignment"
	ReasonLoadBalancerFailed     = "LoadBalancerFailed"
	ReasonAdditionalAssignFailed = "AdditionalAssignFailed"
	ReasonNotEnoughClusterIPs    = "not enough clusterips"
	ReasonNoLBIPsFamily          = "nolbIPsIPFamily"
	ReasonNoClusterIPsFamily     = "noclusterIPsIPFamily"
	ReasonInternalError          = "InternalError"
	ReasonDeprecatedAnnotation   = "deprecatedAnnotation"
)

// Event is an event to record on the service.
type Event struct {
	Type    string // EventNormal or EventWarning
	Reason  string
	Message string
}

// Result is what a service should look like after Converge.
type Result struct {
	// IPs are the addresses for status.loadBalancer.ingress, in order; empty: none.
	IPs []netip.Addr
	// Pool is the value of the metallb.io/ip-allocated-from-pool annotation; "" means the
	// annotation must be absent.
	Pool string
	// Shard is the pool's shard; "" means every node.
	Shard  string
	Events []Event
	// Pending is set when the service could not be converged: retry it when another
	// service releases addresses or the pools change.
	Pending bool
	// Changed is set when the service must be updated: its ingress must become exactly
	// IPs (one entry per address, IP only), the pool annotation must become Pool, and the
	// legacy metallb.universe.tf/ip-allocated-from-pool annotation must be removed.
	// When it is not set the service must be left alone.
	Changed bool
	// Reprocess is set when the convergence may have made room for other services (it
	// released addresses, or changed how the service shares them): converge the pending
	// ones again.
	Reprocess bool
}

var errConverge = errors.New("failed to converge")

// Converge does for one service what MetalLB's controller does when the service changes:
// it keeps, changes, allocates or releases the service's addresses and tells what the
// service should look like. svc is not modified. namespaceLabels are the labels of the
// service's namespace. svc must not be nil: a deleted service is Released instead.
// Class filtering (Handles) is the caller's job. Before the first SetPools it does
// nothing and returns a Pending result with Changed unset.
func (a *Allocator) Converge(svc *corev1.Service, namespaceLabels map[string]string) Result {
	if !a.configured {
		return Result{IPs: lbservice.IngressIPs(svc.Status.LoadBalancer), Pool: svc.Annotations[lbservice.AnnotationIPAllocatedFromPool], Pending: true}
	}
	c := &convergence{
		a:           a,
		svc:         svc,
		req:         RequestFor(svc, namespaceLabels),
		status:      *svc.Status.LoadBalancer.DeepCopy(),
		annotations: copyMap(svc.Annotations),
	}
	key := c.req.Key
	prevIPs := a.IPs(key)
	prevAllocKey := a.allocationKey(key)

	err := c.run()

	res := Result{
		IPs:       lbservice.IngressIPs(c.status),
		Pool:      c.annotations[lbservice.AnnotationIPAllocatedFromPool],
		Events:    c.events,
		Pending:   err != nil,
		Reprocess: prevAllocKey != a.allocationKey(key),
	}
	if p := a.pools.ByName[res.Pool]; p != nil && res.Pool != "" {
		res.Shard = p.Shard
	}
	// Only what the controller manages counts: the API server adds fields of its own to the
	// ingress (ipMode), which must not make every pass a write.
	_, legacyPool := svc.Annotations[lbservice.LegacyAnnotationIPAllocatedFromPool]
	res.Changed = !slices.Equal(lbservice.IngressIPs(svc.Status.LoadBalancer), res.IPs) ||
		svc.Annotations[lbservice.AnnotationIPAllocatedFromPool] != res.Pool || legacyPool
	if !res.Changed {
		return res
	}
	// Like MetalLB, warn about legacy annotations only when there is something to do, so
	// that a steady service does not get an event at every resync.
	res.Events = append(res.Events, deprecationEvents(svc.Annotations)...)
	if len(prevIPs) > 0 && a.Pool(key) == "" && a.PoolForIPs(prevIPs) != nil {
		res.Reprocess = true
	}
	return res
}

// convergence is one Converge: the service as it is being changed, and the events.
type convergence struct {
	a           *Allocator
	svc         *corev1.Service
	req         Request
	status      corev1.LoadBalancerStatus
	annotations map[string]string
	events      []Event
}

func (c *convergence) info(reason, format string, args ...any) {
	c.events = append(c.events, Event{EventNormal, reason, fmt.Sprintf(format, args...)})
}

func (c *convergence) warn(reason, format string, args ...any) {
	c.events = append(c.events, Event{EventWarning, reason, fmt.Sprintf(format, args...)})
}

// clear releases the service's addresses and drops what the controller manages on it.
func (c *convergence) clear() {
	c.a.unassign(c.req.Key)
	delete(c.annotations, lbservice.AnnotationIPAllocatedFromPool)
	delete(c.annotations, lbservice.LegacyAnnotationIPAllocatedFromPool)
	c.status = corev1.LoadBalancerStatus{}
}

func (c *convergence) run() error {
	svc, key := c.svc, c.req.Key
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		c.clear()
		return nil
	}
	if len(c.a.pools.ByName) == 0 {
		c.clear()
		return errConverge
	}
	if len(svc.Spec.ClusterIPs) == 0 && svc.Spec.ClusterIP == "" {
		c.clear()
		return errConverge
	}

	var lbIPs []netip.Addr // an unparsable ingress address is the zero Addr
	for _, ing := range c.status.Ingress {
		if ing.IP != "" {
			lbIPs = append(lbIPs, lbservice.ParseIP(ing.IP))
		}
	}
	policy := policyOf(svc)
	if policy == corev1.IPFamilyPolicyRequireDualStack && len(svc.Spec.ClusterIPs) < 2 {
		c.warn(ReasonNotEnoughClusterIPs, "Service requires dual stack but not enough clusterips %v", svc.Spec.ClusterIPs)
		c.clear()
		return errConverge
	}

	// Addresses the service holds while its status shows none come from a pass whose status
	// write the service read here does not show yet: handed out again, they are no new
	// allocation and get no second IPAllocated event.
	held := c.a.IPs(key)
	if len(lbIPs) == 0 {
		c.clear()
	} else {
		current, err := familyOfAddrs(lbIPs)
		if err != nil {
			c.warn(ReasonNoLBIPsFamily, "Failed to retrieve LBIPs IPFamily for %s: %s", quoted(lbIPs), err)
		}
		cluster, err := ServiceFamily(svc)
		if err != nil {
			c.warn(ReasonNoClusterIPsFamily, "Failed to retrieve ClusterIPs IPFamily for %q %s: %s", svc.Spec.ClusterIPs, svc.Spec.ClusterIP, err)
			return errConverge
		}
		c.req.Family = cluster
		if familyChanged(current, cluster, policy) {
			c.clear()
			lbIPs = nil
		}
	}

	// Keep the current addresses if the configuration and the service still allow them.
	if len(lbIPs) > 0 {
		if err := c.a.Assign(&c.req, lbIPs); err != nil {
			c.info(ReasonClearAssignment, "current IP for %q not allowed by config, will attempt for new IP assignment: %s", key, err)
			c.clear()
			lbIPs = nil
		}
		wantPool := lbservice.AnnotationValue(svc.Annotations, lbservice.AnnotationAddressPool, lbservice.LegacyAnnotationAddressPool)
		if len(lbIPs) > 0 && wantPool != "" && c.a.Pool(key) != wantPool {
			c.clear()
			lbIPs = nil
		}
		wanted, _, err := requestedIPs(svc)
		if err != nil {
			c.warn(ReasonLoadBalancerFailed, "invalid requested loadbalancer IPs: %s", err)
			return errConverge
		}
		if len(wanted) > 0 && !sameAddrs(lbIPs, wanted) {
			c.clear()
			lbIPs = nil
		}
	}

	// Unlike upstream, only a service with both cluster IP families gets the other one: upstream
	// also adds it to a single-stack service, then drops it on the next pass as a family
	// change, and so on forever.
	if len(lbIPs) == 1 && policy == corev1.IPFamilyPolicyPreferDualStack && len(svc.Spec.ClusterIPs) == 2 {
		pool := c.a.Pool(key)
		ip, err := c.a.AllocateAdditionalFamily(&c.req, lbIPs[0], pool)
		if err != nil {
			c.info(ReasonAdditionalAssignFailed, "cannot assign additional IP in PreferDualStack: %s", err)
		}
		if ip.IsValid() {
			lbIPs = append(lbIPs, ip)
			c.info(ReasonIPAllocated, "Assigned additional IP %q%s", ip, c.shardSuffix())
		}
	}

	if len(lbIPs) == 0 {
		ips, err := c.allocate()
		if err != nil {
			c.warn(ReasonAllocationFailed, "Failed to allocate IP for %q: %s", key, err)
			return errConverge
		}
		lbIPs = ips
		if !sameAddrs(held, ips) {
			c.info(ReasonIPAllocated, "Assigned IP %s%s", quoted(lbIPs), c.shardSuffix())
		}
	}

	if len(lbIPs) == 0 {
		c.warn(ReasonInternalError, "didn't allocate an IP but also did not fail")
		c.clear()
		return errConverge
	}
	pool := c.a.Pool(key)
	if pool == "" || c.a.pools.ByName[pool] == nil {
		c.warn(ReasonInternalError, "allocated an IP that has no pool")
		c.clear()
		return errConverge
	}

	ingress := make([]corev1.LoadBalancerIngress, len(lbIPs))
	for i, ip := range lbIPs {
		ingress[i] = corev1.LoadBalancerIngress{IP: ip.String()}
	}
	c.status.Ingress = ingress
	if c.annotations == nil {
		c.annotations = map[string]string{}
	}
	c.annotations[lbservice.AnnotationIPAllocatedFromPool] = pool
	delete(c.annotations, lbservice.LegacyAnnotationIPAllocatedFromPool)
	return nil
}

// shardSuffix completes the IPAllocated message with the pool and its shard when the
// pool has one.
func (c *convergence) shardSuffix() string {
	pool := c.a.Pool(c.req.Key)
	if p := c.a.pools.ByName[pool]; p != nil && p.Shard != "" {
		return fmt.Sprintf(" from pool %q (shard %q)", pool, p.Shard)
	}
	return ""
}

// allocate gets the service new addresses: the requested ones, or from the requested
// pool, or from the best pool.
func (c *convergence) allocate() ([]netip.Addr, error) {
	svc, key := c.svc, c.req.Key
	if len(svc.Spec.ClusterIPs) == 0 && svc.Spec.ClusterIP == "" {
		return nil, fmt.Errorf("invalid ClusterIPs [%v] [%s], can't determine family", svc.Spec.ClusterIPs, svc.Spec.ClusterIP)
	}
	family, err := ServiceFamily(svc)
	if err != nil {
		return nil, err
	}
	c.req.Family = family
	wanted, wantedFamily, err := requestedIPs(svc)
	if err != nil {
		return nil, err
	}
	wantPool := lbservice.AnnotationValue(svc.Annotations, lbservice.AnnotationAddressPool, lbservice.LegacyAnnotationAddressPool)

	if len(wanted) > 0 {
		if family != wantedFamily {
			return nil, fmt.Errorf("requested loadBalancer IP(s) %s does not match the ipFamily of the service", quoted(wanted))
		}
		if err := c.a.Assign(&c.req, wanted); err != nil {
			return nil, err
		}
		if wantPool != "" && c.a.Pool(key) != wantPool {
			c.a.unassign(key)
			return nil, fmt.Errorf("requested loadBalancer IP(s) %s is not compatible with requested address pool %s", quoted(wanted), wantPool)
		}
		return wanted, nil
	}
	if wantPool != "" {
		return c.a.AllocateFromPool(&c.req, wantPool)
	}
	return c.a.Allocate(&c.req)
}

// requestedIPs returns the addresses the service asks for, from the loadBalancerIPs
// annotation or spec.loadBalancerIP, and their family; none when it asks for none.
func requestedIPs(svc *corev1.Service) ([]netip.Addr, Family, error) {
	list := lbservice.AnnotationValue(svc.Annotations, lbservice.AnnotationLoadBalancerIPs, lbservice.LegacyAnnotationLoadBalancerIPs)
	single := svc.Spec.LoadBalancerIP
	switch {
	case list == "" && single == "":
		return nil, "", nil
	case list != "" && single != "":
		return nil, "", fmt.Errorf("service can not have both %s and svc.Spec.LoadBalancerIP", lbservice.AnnotationLoadBalancerIPs)
	case list != "":
		var ips []netip.Addr
		for _, s := range strings.Split(list, ",") {
			ip := lbservice.ParseIP(strings.TrimSpace(s))
			if !ip.IsValid() {
				return nil, "", fmt.Errorf("invalid %s: %q", lbservice.AnnotationLoadBalancerIPs, list)
			}
			ips = append(ips, ip)
		}
		family, err := familyOfAddrs(ips)
		if err != nil {
			return nil, "", err
		}
		return ips, family, nil
	}
	ip := lbservice.ParseIP(single)
	if !ip.IsValid() {
		return nil, "", fmt.Errorf("invalid spec.loadBalancerIP %q", single)
	}
	return []netip.Addr{ip}, familyOf(ip), nil
}

// sameAddrs tells whether current and wanted hold the same addresses. Like MetalLB, it
// leaves current sorted by text, which is then the order the ingress gets.
func sameAddrs(current, wanted []netip.Addr) bool {
	byText := func(x, y netip.Addr) int { return strings.Compare(x.String(), y.String()) }
	slices.SortFunc(current, byText)
	w := slices.Clone(wanted)
	slices.SortFunc(w, byText)
	return slices.Equal(current, w)
}

// deprecationEvents warns about each legacy annotation the service carries, naming the
// annotation to use instead.
func deprecationEvents(annotations map[string]string) []Event {
	var keys []string
	for k := range annotations {
		if strings.HasPrefix(k, lbservice.LegacyAnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var events []Event
	for _, k := range keys {
		msg := "Service uses deprecated annotation " + k
		if current, ok := currentFor(k); ok {
			_, both := annotations[current]
			switch {
			case k == lbservice.LegacyAnnotationIPAllocatedFromPool:
				msg += fmt.Sprintf("; it is removed, the controller records the pool in %s", current)
			case both:
				msg += fmt.Sprintf("; it is ignored because %s is set", current)
			default:
				msg += fmt.Sprintf("; use %s instead", current)
			}
		}
		events = append(events, Event{EventWarning, ReasonDeprecatedAnnotation, msg})
	}
	return events
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
