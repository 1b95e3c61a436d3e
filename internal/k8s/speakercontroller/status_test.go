// SPDX-License-Identifier: Apache-2.0

package speakercontroller

import (
	"os"
	"slices"
	"testing"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Run(m)) }

// A speaker's cache holds its own node's status objects, not the other nodes'.
func TestStatusCacheHoldsOwnNodeOnly(t *testing.T) {
	env := testenv.Get(t)
	ctx := t.Context()
	const namespace = "status-cache"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"lb1", "lb2"} {
		meta := metav1.ObjectMeta{Namespace: namespace, Name: "svc-" + node, Labels: map[string]string{labelNode: node}}
		for _, obj := range []client.Object{
			&metallbv1beta1.ServiceBGPStatus{ObjectMeta: meta, Status: metallbv1beta1.MetalLBServiceBGPStatus{Node: node}},
			&metallbv1beta1.ServiceL2Status{ObjectMeta: meta, Status: metallbv1beta1.MetalLBServiceL2Status{Node: node}},
		} {
			if err := env.Client.Create(ctx, obj); err != nil {
				t.Fatal(err)
			}
		}
	}
	c, err := cache.New(env.Config, cache.Options{Scheme: k8s.NewScheme(), ByObject: StatusCache(namespace, "lb1")})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Start(ctx) }()
	c.WaitForCacheSync(ctx)
	var bgp metallbv1beta1.ServiceBGPStatusList
	var l2 metallbv1beta1.ServiceL2StatusList
	for _, list := range []client.ObjectList{&bgp, &l2} {
		if err := c.List(ctx, list); err != nil {
			t.Fatal(err)
		}
	}
	held := map[string][]string{}
	for _, s := range bgp.Items {
		held["ServiceBGPStatus"] = append(held["ServiceBGPStatus"], s.Name)
	}
	for _, s := range l2.Items {
		held["ServiceL2Status"] = append(held["ServiceL2Status"], s.Name)
	}
	for _, kind := range []string{"ServiceBGPStatus", "ServiceL2Status"} {
		if !slices.Equal(held[kind], []string{"svc-lb1"}) {
			t.Errorf("lb1's cache holds the %s objects %v, want [svc-lb1]", kind, held[kind])
		}
	}
}
