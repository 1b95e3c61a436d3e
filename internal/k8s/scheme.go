// SPDX-License-Identifier: Apache-2.0

// Package k8s holds the Kubernetes glue shared by the controller and the speaker.
package k8s

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	maglbv1alpha1 "github.com/maglb/maglb/api/v1alpha1"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// NewScheme returns a scheme with the core Kubernetes kinds, CRDs, every metallb.io kind and MagLB's maglb.io kinds.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	utilruntime.Must(maglbv1beta1.AddToScheme(s))
	utilruntime.Must(maglbv1alpha1.AddToScheme(s))
	return s
}
