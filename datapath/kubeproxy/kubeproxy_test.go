// SPDX-License-Identifier: Apache-2.0

package kubeproxy

import (
	"net/netip"
	"testing"

	"github.com/maglb/maglb/datapath"
)

// The upstream datapath accepts any state, even one the eBPF datapath would refuse: kube-proxy
// decides what it can do with each Service.
func TestAcceptsAnything(t *testing.T) {
	var dp datapath.Datapath = Datapath{}
	odd := []datapath.Service{{VIP: netip.MustParseAddr("10.0.0.1"), Protocol: 132}}
	if err := dp.Sync(t.Context(), odd); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := dp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
