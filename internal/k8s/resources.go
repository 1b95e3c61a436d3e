// SPDX-License-Identifier: Apache-2.0

package k8s

import (
	"context"
	"fmt"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/config"
	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// ListClusterResources reads everything the configuration is built from: the metallb.io
// objects and Secrets of namespace, and all Nodes and Namespaces.
func ListClusterResources(ctx context.Context, reader client.Reader, namespace string) (config.ClusterResources, error) {
	var (
		pools       maglbv1beta1.IPAddressPoolList
		peers       metallbv1beta2.BGPPeerList
		bfdProfiles metallbv1beta1.BFDProfileList
		bgpAdvs     metallbv1beta1.BGPAdvertisementList
		l2Advs      metallbv1beta1.L2AdvertisementList
		communities metallbv1beta1.CommunityList
		secrets     corev1.SecretList
		nodes       corev1.NodeList
		namespaces  corev1.NamespaceList
	)
	inNamespace := client.InNamespace(namespace)
	for _, l := range []struct {
		list client.ObjectList
		opts []client.ListOption
	}{
		{&pools, []client.ListOption{inNamespace}},
		{&peers, []client.ListOption{inNamespace}},
		{&bfdProfiles, []client.ListOption{inNamespace}},
		{&bgpAdvs, []client.ListOption{inNamespace}},
		{&l2Advs, []client.ListOption{inNamespace}},
		{&communities, []client.ListOption{inNamespace}},
		{&secrets, []client.ListOption{inNamespace}},
		{&nodes, nil},
		{&namespaces, nil},
	} {
		if err := reader.List(ctx, l.list, l.opts...); err != nil {
			return config.ClusterResources{}, fmt.Errorf("failed to get existing %T objects: %w", l.list, err)
		}
	}
	res := config.ClusterResources{
		Pools:           pools.Items,
		Peers:           peers.Items,
		BFDProfiles:     bfdProfiles.Items,
		BGPAdvs:         bgpAdvs.Items,
		L2Advs:          l2Advs.Items,
		Communities:     communities.Items,
		PasswordSecrets: make(map[string]corev1.Secret, len(secrets.Items)),
		Nodes:           nodes.Items,
		Namespaces:      namespaces.Items,
	}
	for _, s := range secrets.Items {
		res.PasswordSecrets[s.Name] = s
	}
	return res, nil
}
