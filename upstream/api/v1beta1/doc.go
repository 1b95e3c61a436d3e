// SPDX-License-Identifier: Apache-2.0

// Package v1beta1 is MetalLB's metallb.io/v1beta1 API as MagLB serves it: upstream's types
// unchanged, except IPAddressPool, whose spec gains the optional QoS shard.
//
// +kubebuilder:object:generate=true
// +groupName=metallb.io
package v1beta1
