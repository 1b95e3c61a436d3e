// SPDX-License-Identifier: Apache-2.0

// Package kubeproxy is the upstream datapath: the speaker only announces VIPs and kube-proxy
// on each node translates VIP traffic to endpoints, so there is nothing to program.
package kubeproxy

import (
	"context"

	"github.com/maglb/maglb/datapath"
)

// Datapath does nothing: kube-proxy forwards.
type Datapath struct{}

var _ datapath.Datapath = Datapath{}

// Sync accepts any state: kube-proxy programs the forwarding from the Services themselves.
func (Datapath) Sync(context.Context, []datapath.Service) error { return nil }

// Close has nothing to release.
func (Datapath) Close() error { return nil }
