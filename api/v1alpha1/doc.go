// SPDX-License-Identifier: Apache-2.0

// Package v1alpha1 is MagLB's own API, maglb.io/v1alpha1: the kinds upstream MetalLB has no
// counterpart for. WorkloadCluster registers a workload cluster whose LoadBalancer Services the
// LB cluster projects, allocates, announces and forwards.
//
// +kubebuilder:object:generate=true
// +groupName=maglb.io
package v1alpha1
