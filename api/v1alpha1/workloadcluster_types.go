// SPDX-License-Identifier: Apache-2.0

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of a WorkloadCluster's spec.
const (
	// DefaultKubeconfigKey is the Secret key read when spec.kubeconfigSecret.key is empty.
	DefaultKubeconfigKey = "kubeconfig"
	// DefaultLoadBalancerClass is the class a workload Service may name to be projected, besides
	// naming none, when spec.loadBalancerClass is empty.
	DefaultLoadBalancerClass = "maglb.io/lb-cluster"
	// DefaultNamespacePrefix prefixes the WorkloadCluster's name to make the LB-cluster
	// namespace of its projections when spec.namespace is empty.
	DefaultNamespacePrefix = "maglb-wc-"
)

// Condition types of a WorkloadCluster.
const (
	// ConditionConnected: the workload cluster's API server answers with the kubeconfig's
	// credentials and they grant everything projection needs.
	ConditionConnected = "Connected"
	// ConditionSynced: every taken Service of the workload cluster is projected as last seen.
	ConditionSynced = "Synced"
)

// Labels on everything projection creates in the LB cluster: where it came from.
const (
	LabelWorkloadCluster   = "maglb.io/workload-cluster"
	LabelWorkloadNamespace = "maglb.io/workload-namespace"
	LabelWorkloadName      = "maglb.io/workload-name"
)

// SecretKeyRef names a key of a Secret in MagLB's namespace.
type SecretKeyRef struct {
	// Name of the Secret, in the namespace MagLB runs in.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key holding the kubeconfig; "kubeconfig" when empty.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key,omitempty"`
}

// WorkloadClusterSpec says how to reach a workload cluster and which of its Services to project.
type WorkloadClusterSpec struct {
	// KubeconfigSecret names the Secret holding a kubeconfig for the workload cluster's API
	// server. Its credentials need only: get, list and watch on services, endpointslices and
	// nodes; update and patch on services and services/status; create and patch on events.
	KubeconfigSecret SecretKeyRef `json:"kubeconfigSecret"`

	// ServiceSelector narrows the workload Services projected to those it selects; every
	// Service of type LoadBalancer when unset.
	// +optional
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`

	// LoadBalancerClass is the class a workload Service may name to be projected; Services
	// naming no class are projected too. "maglb.io/lb-cluster" when empty.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	LoadBalancerClass string `json:"loadBalancerClass,omitempty"`

	// Namespace of the LB cluster where this cluster's projections live, one per workload
	// cluster; "maglb-wc-<name>" when empty. Created when missing.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`
}

// WorkloadClusterStatus is what the projection controller last saw of the workload cluster.
type WorkloadClusterStatus struct {
	// Conditions: Connected and Synced, each with its reason in words.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Namespace is the LB-cluster namespace the projections are in.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// ProjectedServices counts the workload Services projected into the LB cluster.
	// +optional
	ProjectedServices int32 `json:"projectedServices,omitempty"`
	// ServicesWithVIP counts those whose VIP is written back to the workload Service.
	// +optional
	ServicesWithVIP int32 `json:"servicesWithVIP,omitempty"`
	// LastSyncTime is when the projections last matched the workload cluster.
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=wlc
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Connected",type=string,JSONPath=`.status.conditions[?(@.type=="Connected")].status`
// +kubebuilder:printcolumn:name="Synced",type=string,JSONPath=`.status.conditions[?(@.type=="Synced")].status`
// +kubebuilder:printcolumn:name="Services",type=integer,JSONPath=`.status.projectedServices`
// +kubebuilder:printcolumn:name="With VIP",type=integer,JSONPath=`.status.servicesWithVIP`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.status.namespace`
// +kubebuilder:printcolumn:name="Last Sync",type=date,JSONPath=`.status.lastSyncTime`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Connected")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="has(self.spec.namespace) || self.metadata.name.size() <= 54",message="a name longer than 54 characters needs spec.namespace: the default namespace maglb-wc-<name> would exceed 63"

// WorkloadCluster registers a workload cluster: its LoadBalancer Services are projected into
// this (the LB) cluster, get their VIPs here, and the VIPs are written back to them.
type WorkloadCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   WorkloadClusterSpec   `json:"spec"`
	Status WorkloadClusterStatus `json:"status,omitempty"`
}

// KubeconfigKey is the Secret key holding the kubeconfig.
func (w *WorkloadCluster) KubeconfigKey() string {
	if w.Spec.KubeconfigSecret.Key != "" {
		return w.Spec.KubeconfigSecret.Key
	}
	return DefaultKubeconfigKey
}

// ProjectionNamespace is the LB-cluster namespace of the cluster's projections.
func (w *WorkloadCluster) ProjectionNamespace() string {
	if w.Spec.Namespace != "" {
		return w.Spec.Namespace
	}
	return DefaultNamespacePrefix + w.Name
}

// LoadBalancerClass is the class, besides none, of the workload Services to project.
func (w *WorkloadCluster) LoadBalancerClass() string {
	if w.Spec.LoadBalancerClass != "" {
		return w.Spec.LoadBalancerClass
	}
	return DefaultLoadBalancerClass
}

// +kubebuilder:object:root=true

// WorkloadClusterList contains a list of WorkloadCluster.
type WorkloadClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WorkloadCluster `json:"items"`
}
