// SPDX-License-Identifier: Apache-2.0

package backendagent

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// WatchNodes caches the Nodes that selector matches until ctx ends and signals changed,
// without blocking, after each change. It returns once the cache holds the current list, so that the first
// allowlist is complete, with the function listing the cached nodes.
func WatchNodes(ctx context.Context, cfg *rest.Config, selector labels.Selector, changed chan<- struct{}) (func() ([]*corev1.Node, error), error) {
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	factory := informers.NewSharedInformerFactoryWithOptions(clientset, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = selector.String()
	}))
	nodes := factory.Core().V1().Nodes()
	notify := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, obj any) { notify(obj) },
		DeleteFunc: notify,
	}); err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("caching %v: %w", typ, context.Cause(ctx))
		}
	}
	lister := nodes.Lister()
	return func() ([]*corev1.Node, error) { return lister.List(labels.Everything()) }, nil
}
