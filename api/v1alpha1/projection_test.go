// SPDX-License-Identifier: Apache-2.0

package v1alpha1

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEndpointWeightsRoundTrip(t *testing.T) {
	weights := map[netip.Addr]uint32{
		netip.MustParseAddr("172.31.0.32"): 1, netip.MustParseAddr("172.31.0.31"): 3, netip.MustParseAddr("fd00:31::31"): 2,
	}
	text := FormatEndpointWeights(weights)
	if want := "172.31.0.31=3,172.31.0.32=1,fd00:31::31=2"; text != want {
		t.Errorf("formatted %q, want %q", text, want)
	}
	got, err := ParseEndpointWeights(text)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(weights, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestParseEndpointWeightsRejects(t *testing.T) {
	for _, value := range []string{"172.31.0.31", "172.31.0.31=0", "172.31.0.31=-1", "node1=2", "172.31.0.31=2,"} {
		if _, err := ParseEndpointWeights(value); err == nil {
			t.Errorf("%q parsed without error", value)
		}
	}
}
