// SPDX-License-Identifier: Apache-2.0

package v1alpha1

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// What marks a projected Service's EndpointSlices, whose endpoints are the workload nodes that
// serve it: the speakers tunnel to those addresses with these weights.
const (
	// EndpointSliceManagedBy is the endpointslice.kubernetes.io/managed-by value of projected
	// EndpointSlices.
	EndpointSliceManagedBy = "projection.maglb.io"
	// AnnotationEndpointWeights lists each endpoint address with its weight (the number of
	// ready endpoints of the workload Service on that node): "10.0.0.1=3,10.0.0.2=1".
	AnnotationEndpointWeights = "maglb.io/endpoint-weights"
)

// FormatEndpointWeights renders weights as AnnotationEndpointWeights' value, sorted by address.
func FormatEndpointWeights(weights map[netip.Addr]uint32) string {
	addrs := make([]netip.Addr, 0, len(weights))
	for a := range weights {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = a.String() + "=" + strconv.FormatUint(uint64(weights[a]), 10)
	}
	return strings.Join(parts, ",")
}

// ParseEndpointWeights reads AnnotationEndpointWeights' value.
func ParseEndpointWeights(value string) (map[netip.Addr]uint32, error) {
	weights := map[netip.Addr]uint32{}
	if value == "" {
		return weights, nil
	}
	for _, part := range strings.Split(value, ",") {
		addr, weight, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want <address>=<weight>", part)
		}
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", part, err)
		}
		w, err := strconv.ParseUint(weight, 10, 32)
		if err != nil || w == 0 {
			return nil, fmt.Errorf("%q: the weight must be a positive integer", part)
		}
		weights[a.Unmap()] = uint32(w)
	}
	return weights, nil
}
