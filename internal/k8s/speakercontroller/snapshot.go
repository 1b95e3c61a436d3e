// SPDX-License-Identifier: Apache-2.0

package speakercontroller

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A pass reads every Service and EndpointSlice. At 10,000 Services, listing them through the
// cache (which copies each object into the list) and deriving the decisions' input from each
// anew took more than half of a speaker's CPU while their IPs were being written. So a pass
// reads the informer's store, whose objects it shares and never modifies, and derives its
// input only from objects that changed since the pass before.

// store lists the cached objects of one kind without copying them.
type store[T client.Object] struct{ informer toolscache.Store }

func newStore[T client.Object](ctx context.Context, c cache.Cache, obj T) (store[T], error) {
	informer, err := c.GetInformer(ctx, obj)
	if err != nil {
		return store[T]{}, err
	}
	shared, ok := informer.(toolscache.SharedIndexInformer)
	if !ok {
		return store[T]{}, fmt.Errorf("the cache's informer of %T is a %T, which has no store", obj, informer)
	}
	return store[T]{informer: shared.GetStore()}, nil
}

// list returns the cached objects: shared with the cache, read-only.
func (s store[T]) list() []T {
	items := s.informer.List()
	out := make([]T, 0, len(items))
	for _, item := range items {
		if obj, ok := item.(T); ok {
			out = append(out, obj)
		}
	}
	return out
}

// memo keeps a value derived from each object, for as long as the object keeps its UID and
// resourceVersion. forgetUnseen drops the objects no lookup asked for since its last call.
type memo[V any] struct {
	kept, seen map[types.NamespacedName]memoized[V]
}

type memoized[V any] struct {
	uid     types.UID
	version string
	value   V
}

// get returns the value derived from obj, deriving it when obj is new or changed.
func (m *memo[V]) get(obj metav1.Object, derive func() V) V {
	if m.seen == nil {
		m.seen = map[types.NamespacedName]memoized[V]{}
	}
	key := types.NamespacedName{Namespace: obj.GetNamespace(), Name: obj.GetName()}
	e, ok := m.kept[key]
	if !ok || e.uid != obj.GetUID() || e.version != obj.GetResourceVersion() {
		e = memoized[V]{uid: obj.GetUID(), version: obj.GetResourceVersion(), value: derive()}
	}
	m.seen[key] = e
	return e.value
}

func (m *memo[V]) forgetUnseen() {
	m.kept, m.seen = m.seen, make(map[types.NamespacedName]memoized[V], len(m.seen))
}
