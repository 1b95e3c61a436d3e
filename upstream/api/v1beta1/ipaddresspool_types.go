// SPDX-License-Identifier: Apache-2.0

package v1beta1

import (
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ShardLabelPrefix prefixes the node label that makes a node a member of a shard:
// a node labelled maglb.io/shard-gold serves the pools whose spec.shard is "gold".
const ShardLabelPrefix = "maglb.io/shard-"

// IPAddressPoolSpec defines the desired state of IPAddressPool: upstream's spec plus the shard.
type IPAddressPoolSpec struct {
	metallbv1beta1.IPAddressPoolSpec `json:",inline"`

	// Shard binds the pool's addresses to the LB nodes labelled maglb.io/shard-<shard>:
	// only those nodes announce and serve them. Empty means every node, as upstream.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Shard string `json:"shard,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:storageversion
// +kubebuilder:printcolumn:name="Auto Assign",type=boolean,JSONPath=`.spec.autoAssign`
// +kubebuilder:printcolumn:name="Avoid Buggy IPs",type=boolean,JSONPath=`.spec.avoidBuggyIPs`
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Shard",type=string,JSONPath=`.spec.shard`,priority=1

// IPAddressPool represents a pool of IP addresses that can be allocated
// to LoadBalancer services.
type IPAddressPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPAddressPoolSpec                  `json:"spec"`
	Status metallbv1beta1.IPAddressPoolStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// IPAddressPoolList contains a list of IPAddressPool.
type IPAddressPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAddressPool `json:"items"`
}
