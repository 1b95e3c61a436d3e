// SPDX-License-Identifier: Apache-2.0

package v1beta1

import (
	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// GroupVersion is metallb.io/v1beta1, the group and version upstream serves.
var GroupVersion = metallbv1beta1.GroupVersion

// AddToScheme registers every metallb.io kind: upstream's v1beta1 types with MagLB's
// IPAddressPool in place of upstream's, and upstream's v1beta2 BGPPeer (the storage version,
// the hub of BGPPeer conversion). Upstream's own AddToScheme cannot be used: it registers its
// IPAddressPool, and a scheme refuses two Go types for one kind.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&IPAddressPool{}, &IPAddressPoolList{},
		&metallbv1beta1.BFDProfile{}, &metallbv1beta1.BFDProfileList{},
		&metallbv1beta1.BGPAdvertisement{}, &metallbv1beta1.BGPAdvertisementList{},
		&metallbv1beta1.BGPPeer{}, &metallbv1beta1.BGPPeerList{},
		&metallbv1beta1.Community{}, &metallbv1beta1.CommunityList{},
		&metallbv1beta1.ConfigurationState{}, &metallbv1beta1.ConfigurationStateList{},
		&metallbv1beta1.L2Advertisement{}, &metallbv1beta1.L2AdvertisementList{},
		&metallbv1beta1.ServiceBGPStatus{}, &metallbv1beta1.ServiceBGPStatusList{},
		&metallbv1beta1.ServiceL2Status{}, &metallbv1beta1.ServiceL2StatusList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return metallbv1beta2.AddToScheme(s)
}
