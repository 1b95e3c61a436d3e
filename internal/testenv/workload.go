// SPDX-License-Identifier: Apache-2.0

package testenv

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Objects a cluster's kubelets and endpoint controller would write, for API servers that run
// neither (a workload cluster of the projection).

// Node creates a node with its InternalIPs (nothing if it exists).
func Node(t testing.TB, c client.Client, name string, addrs ...string) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	status := node.Status
	err := c.Create(context.Background(), node)
	if apierrors.IsAlreadyExists(err) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	node.Status = status // create drops the status, as for most kinds
	if err := c.Status().Update(context.Background(), node); err != nil {
		t.Fatal(err)
	}
}

// Pod is one endpoint of an EndpointSlice: a pod on a node.
type Pod struct{ Name, Node, Addr string }

// SetEndpoints writes the Service's IPv4 EndpointSlice (port 8080, every pod ready), as the
// endpoint controller would.
func SetEndpoints(t testing.TB, c client.Client, svc *corev1.Service, pods ...Pod) {
	t.Helper()
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name + "-pods"}}
	_, err := CreateOrUpdate(c, slice, func() {
		slice.Labels = map[string]string{discoveryv1.LabelServiceName: svc.Name}
		slice.AddressType = discoveryv1.AddressTypeIPv4
		slice.Ports = []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}}
		slice.Endpoints = nil
		for _, p := range pods {
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{p.Addr},
				NodeName:   ptr.To(p.Node),
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: svc.Namespace, Name: p.Name},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// CreateOrUpdate reads obj, applies mutate, and creates or updates it; it reports whether
// it created it.
func CreateOrUpdate(c client.Client, obj client.Object, mutate func()) (bool, error) {
	ctx := context.Background()
	err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
	mutate()
	switch {
	case apierrors.IsNotFound(err):
		return true, c.Create(ctx, obj)
	case err != nil:
		return false, err
	}
	return false, c.Update(ctx, obj)
}
