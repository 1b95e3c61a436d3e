// SPDX-License-Identifier: Apache-2.0

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is maglb.io/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: "maglb.io", Version: "v1alpha1"}

// AddToScheme registers the maglb.io/v1alpha1 kinds.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &WorkloadCluster{}, &WorkloadClusterList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
