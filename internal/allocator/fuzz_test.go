// SPDX-License-Identifier: Apache-2.0

package allocator

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/maglb/maglb/internal/lbservice"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
)

// The pool configurations a fuzzed sequence switches between: small pools, so that they
// fill up, overlapping ones across configurations, so that allocations move or go.
var fuzzPoolConfigs = [][]maglbv1beta1.IPAddressPool{
	{pool("v4", []string{"10.0.0.0/30"}), pool("v6", []string{"fd00::/126"})},
	{pool("v4", []string{"10.0.0.0/29"}), pool("v6", []string{"fd00::/126"}), pool("manual", []string{"10.1.0.0/30"}, manual)},
	{pool("v4", []string{"10.0.0.2/31"}), pool("dual", []string{"10.2.0.0/31", "fd02::/127"})},
	{pool("moved", []string{"10.0.0.0/29"}, avoidBuggy), pool("dual", []string{"10.2.0.0/31", "fd02::/127"}),
		pool("team", []string{"10.3.0.0/31"}, allocateTo(1, []string{"team"}, nil, nil))},
	{},
}

// What a fuzzed service may ask for.
var (
	fuzzSharingKeys = []string{"", "a", "b"}
	fuzzPorts       = [][]string{{"TCP/80"}, {"TCP/443"}, {"UDP/53"}, {"TCP/80", "UDP/53"}}
	fuzzRequested   = []string{"", "10.0.0.1", "10.0.0.2", "fd00::1", "10.2.0.1,fd02::1", "10.1.0.1", "10.9.9.9"}
	fuzzPoolNames   = []string{"", "v4", "manual", "dual", "nope"}
	fuzzFamilies    = []svcOpt{
		func(*corev1.Service) {},
		clusterIPs("fd00:96::1"),
		func(s *corev1.Service) { dualStack(s); familyPolicy(corev1.IPFamilyPolicyRequireDualStack)(s) },
		func(s *corev1.Service) { dualStack(s); familyPolicy(corev1.IPFamilyPolicyPreferDualStack)(s) },
	}
	fuzzNamespaces = []string{"default", "team"}
)

// FuzzAllocatorEvents plays byte strings as sequences of events — pools changed, services
// added, changed and deleted (sharing keys, ports, requested addresses and pools, address
// families, traffic policies) — through Converge as the controller does, and checks the
// allocator's invariants after every step: an address is held by several services only
// when they share it compatibly, every service holds what its status shows from one pool,
// the counters are what is held, and releasing every service returns everything.
func FuzzAllocatorEvents(f *testing.F) {
	f.Add([]byte{0, 1, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 1, 2, 1, 3, 0, 0, 0, 1, 3, 1, 3, 0, 0, 0, 0, 1, 1, 4, 0, 3, 1, 2, 3, 0, 0, 0})
	f.Add([]byte{0, 1, 1, 0, 0, 4, 2, 0, 1, 2, 0, 0, 4, 2, 0, 0, 2, 3, 0, 0, 1, 3, 0, 0, 2, 1})
	f.Add([]byte{0, 3, 1, 5, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 2, 4, 1, 0, 2, 5, 3, 2})
	f.Fuzz(func(t *testing.T, script []byte) {
		w := &allocWorld{a: New(), services: map[string]*corev1.Service{}}
		next := func() int {
			if len(script) == 0 {
				return 0
			}
			b := script[0]
			script = script[1:]
			return int(b)
		}
		for step := 0; len(script) > 0 && step < 200; step++ {
			var what string
			switch next() % 4 {
			case 0:
				cfg := next() % len(fuzzPoolConfigs)
				what = fmt.Sprintf("pools #%d", cfg)
				w.a.SetPools(buildPools(t, []corev1.Namespace{namespace("default", nil), namespace("team", nil)}, fuzzPoolConfigs[cfg]...))
				w.convergeAll()
			case 1, 2:
				svc := fuzzService(next)
				what = fmt.Sprintf("service %s: %v %v", lbservice.Key(svc), svc.Annotations, svc.Spec)
				if old := w.services[lbservice.Key(svc)]; old != nil {
					svc.Status = old.Status // an update keeps the status
					if pool, ok := old.Annotations[lbservice.AnnotationIPAllocatedFromPool]; ok {
						annotated(lbservice.AnnotationIPAllocatedFromPool, pool)(svc)
					}
				}
				w.converge(svc)
			case 3:
				key := fmt.Sprintf("%s/svc-%d", fuzzNamespaces[next()%2], next()%6)
				what = "delete " + key
				if w.services[key] != nil {
					delete(w.services, key)
					if w.a.Release(key) {
						w.convergeAll()
					}
				}
			}
			if problem := w.check(); problem != "" {
				t.Fatalf("after step %d (%s): %s", step, what, problem)
			}
		}
		for key := range w.services {
			w.a.Release(key)
		}
		if problem := w.released(); problem != "" {
			t.Fatalf("after releasing every service: %s", problem)
		}
	})
}

// fuzzService builds a service from the next bytes of a script.
func fuzzService(next func() int) *corev1.Service {
	ns, i := fuzzNamespaces[next()%2], next()%6
	opts := []svcOpt{inNamespace(ns), ports(fuzzPorts[next()%len(fuzzPorts)]...), fuzzFamilies[next()%len(fuzzFamilies)]}
	if key := fuzzSharingKeys[next()%len(fuzzSharingKeys)]; key != "" {
		opts = append(opts, shared(key))
	}
	if ips := fuzzRequested[next()%len(fuzzRequested)]; ips != "" {
		opts = append(opts, annotated(lbservice.AnnotationLoadBalancerIPs, ips))
	}
	if p := fuzzPoolNames[next()%len(fuzzPoolNames)]; p != "" {
		opts = append(opts, annotated(lbservice.AnnotationAddressPool, p))
	}
	switch next() % 3 {
	case 1:
		opts = append(opts, local(map[string]string{"app": "a"}))
	case 2:
		opts = append(opts, local(map[string]string{"app": "b"}))
	}
	return service(fmt.Sprintf("svc-%d", i), opts...)
}

// allocWorld is the allocator and the services as the API server would hold them.
type allocWorld struct {
	a        *Allocator
	services map[string]*corev1.Service
}

func (w *allocWorld) converge(svc *corev1.Service) bool {
	r := w.a.Converge(svc, nil)
	w.services[lbservice.Key(svc)] = apply(svc, r)
	return r.Reprocess
}

// convergeAll converges every service until nothing changes, as the controller's requeues do.
func (w *allocWorld) convergeAll() {
	for range 10 {
		keys := make([]string, 0, len(w.services))
		for key := range w.services {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		again := false
		for _, key := range keys {
			again = w.converge(w.services[key]) || again
		}
		if !again {
			return
		}
	}
}

// check says which invariant the allocator breaks, "" when none.
func (w *allocWorld) check() string {
	holders := map[netip.Addr][]string{}
	type held struct{ v4, v6 map[netip.Addr]bool }
	byPool := map[string]*held{}
	services := map[string]int64{}
	for key, svc := range w.services {
		ips := w.a.IPs(key)
		if status := lbservice.IngressIPs(svc.Status.LoadBalancer); !slices.Equal(status, ips) {
			return fmt.Sprintf("%s shows %v, holds %v", key, status, ips)
		}
		if len(ips) == 0 {
			continue
		}
		name := w.a.Pool(key)
		pool := w.a.Pools().ByName[name]
		if pool == nil {
			return fmt.Sprintf("%s holds %v from pool %q, which does not exist", key, ips, name)
		}
		if svc.Annotations[lbservice.AnnotationIPAllocatedFromPool] != name {
			return fmt.Sprintf("%s holds addresses of pool %q, annotated %q", key, name, svc.Annotations[lbservice.AnnotationIPAllocatedFromPool])
		}
		if byPool[name] == nil {
			byPool[name] = &held{map[netip.Addr]bool{}, map[netip.Addr]bool{}}
		}
		services[name]++
		for _, ip := range ips {
			if !slices.ContainsFunc(pool.CIDRs, func(c netip.Prefix) bool { return c.Contains(ip) }) {
				return fmt.Sprintf("%s holds %s, outside pool %q", key, ip, name)
			}
			if pool.AvoidBuggyIPs && confusesBuggyFirmware(ip) {
				return fmt.Sprintf("%s holds %s of pool %q, which avoids buggy addresses", key, ip, name)
			}
			holders[ip] = append(holders[ip], key)
			if ip.Is4() {
				byPool[name].v4[ip] = true
			} else {
				byPool[name].v6[ip] = true
			}
		}
	}
	for ip, keys := range holders {
		if len(keys) < 2 {
			continue
		}
		sort.Strings(keys)
		first := RequestFor(w.services[keys[0]], nil)
		ports := map[Port]string{}
		for _, key := range keys {
			r := RequestFor(w.services[key], nil)
			if r.SharingKey == "" || r.SharingKey != first.SharingKey || r.BackendKey != first.BackendKey {
				return fmt.Sprintf("%s held by %s without a common sharing key", ip, strings.Join(keys, ", "))
			}
			for _, p := range r.Ports {
				if other, ok := ports[p]; ok {
					return fmt.Sprintf("%s held by %s and %s, both on %s", ip, other, key, p)
				}
				ports[p] = key
			}
		}
	}
	for name := range w.a.Pools().ByName {
		h := byPool[name]
		if h == nil {
			h = &held{}
		}
		_, v4, v6 := capacity(w.a.Pools().ByName[name])
		want := PoolCounters{
			AssignedIPv4: int64(len(h.v4)), AssignedIPv6: int64(len(h.v6)),
			AvailableIPv4: v4 - int64(len(h.v4)), AvailableIPv6: v6 - int64(len(h.v6)),
			ServicesAllocated: services[name],
		}
		if got := w.a.Counters(name); got != want {
			return fmt.Sprintf("pool %q counters %+v, holding %+v", name, got, want)
		}
	}
	return ""
}

// released says what the allocator still holds once every service is released.
func (w *allocWorld) released() string {
	for name := range w.a.Pools().ByName {
		if c := w.a.Counters(name); c.AssignedIPv4 != 0 || c.AssignedIPv6 != 0 || c.ServicesAllocated != 0 {
			return fmt.Sprintf("pool %q still counts %+v", name, c)
		}
	}
	switch {
	case len(w.a.services) != 0:
		return fmt.Sprintf("%d allocations left", len(w.a.services))
	case len(w.a.addrs) != 0:
		return fmt.Sprintf("%d addresses still in use", len(w.a.addrs))
	case len(w.a.keyed.spans) != 0:
		return fmt.Sprintf("addresses still keyed: %v", w.a.keyed.spans)
	case len(w.a.sharedBy) != 0:
		return fmt.Sprintf("sharing keys still indexed: %v", w.a.sharedBy)
	}
	for name, u := range w.a.usage {
		if len(u.users) != 0 || u.services != 0 || u.v4 != 0 || u.v6 != 0 {
			return fmt.Sprintf("pool %q usage left: %+v", name, u)
		}
	}
	return ""
}
