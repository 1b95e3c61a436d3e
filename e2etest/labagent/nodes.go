// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

// nodeLeaseNamespace is where kubelets renew their node leases.
const nodeLeaseNamespace = "kube-node-lease"

// nodeKeeper plays the kubelets of the lab's nodes, as far as their Node status and lease go.
type nodeKeeper struct {
	kubeconfig string
	nodes      nodeAddrs
	interval   time.Duration
}

// nodeAddrs are the InternalIPs of each node, one per family.
type nodeAddrs map[string][]string

func (n *nodeAddrs) String() string { return fmt.Sprint(map[string][]string(*n)) }

func (n *nodeAddrs) Set(v string) error {
	name, addrs, ok := strings.Cut(v, "=")
	if !ok || name == "" || addrs == "" {
		return fmt.Errorf("%q is not NAME=ADDR[,ADDR]", v)
	}
	if *n == nil {
		*n = nodeAddrs{}
	}
	(*n)[name] = strings.Split(addrs, ",")
	return nil
}

func (k *nodeKeeper) run(ctx context.Context, logger log.Logger) error {
	if len(k.nodes) == 0 {
		return errors.New("no --node to keep")
	}
	clients, err := clientset(k.kubeconfig)
	if err != nil {
		return err
	}
	since := metav1.Now()
	for {
		for name, addrs := range k.nodes {
			if err := k.renew(ctx, clients, name, addrs, since); err != nil && ctx.Err() == nil {
				level.Error(logger).Log("op", "renew", "node", name, "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(k.interval):
		}
	}
}

// renew writes the node's Ready condition (Ready since the keeper started) and its addresses,
// and renews its lease. A node that does not exist (yet) is left alone.
func (k *nodeKeeper) renew(ctx context.Context, clients kubernetes.Interface, name string, addrs []string, since metav1.Time) error {
	now := metav1.Now()
	var addresses []corev1.NodeAddress
	for _, a := range addrs {
		addresses = append(addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
	}
	patch, err := json.Marshal(map[string]any{"status": corev1.NodeStatus{
		Addresses: append(addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name}),
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "LabNodeReady",
			Message: "the lab's node keeper holds this node Ready", LastHeartbeatTime: now, LastTransitionTime: since,
		}},
	}})
	if err != nil {
		return err
	}
	_, err = clients.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	leases := clients.CoordinationV1().Leases(nodeLeaseNamespace)
	micro := metav1.NewMicroTime(now.Time)
	lease, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: nodeLeaseNamespace},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To(int32(40)), RenewTime: &micro},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &micro
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}

// clientset connects to the API server of a kubeconfig file.
func clientset(kubeconfig string) (*kubernetes.Clientset, error) {
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(config)
}
