// SPDX-License-Identifier: Apache-2.0

package projectioncontroller

import (
	"context"
	"fmt"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/maglb/maglb/api/v1alpha1"
)

// probeTimeout bounds one probe of a workload API server.
const probeTimeout = 5 * time.Second

// permission is one verb on one resource that projection needs in a workload cluster.
type permission struct {
	group, resource, subresource string
	verbs                        []string
}

// needed is the least privilege of a workload kubeconfig (config/workload-cluster).
var needed = []permission{
	{"", "services", "", []string{"get", "list", "watch", "update", "patch"}},
	{"", "services", "status", []string{"update", "patch"}},
	{"discovery.k8s.io", "endpointslices", "", []string{"get", "list", "watch"}},
	{"", "nodes", "", []string{"get", "list", "watch"}},
	{"", "events", "", []string{"create", "patch"}},
}

func (p permission) String() string {
	name := p.resource
	if p.subresource != "" {
		name += "/" + p.subresource
	}
	if p.group != "" {
		name += "." + p.group
	}
	return name
}

// probe asks the workload API server, with the kubeconfig's credentials, whether each needed
// permission is granted: that tells reachability, authentication and RBAC in one go.
func probe(ctx context.Context, cfg *rest.Config) metav1.Condition {
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = probeTimeout
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return condition(v1alpha1.ConditionConnected, metav1.ConditionFalse, ReasonKubeconfigInvalid, err.Error())
	}
	var missing []string
	for _, p := range needed {
		var verbs []string
		for _, verb := range p.verbs {
			review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
				ResourceAttributes: &authorizationv1.ResourceAttributes{Group: p.group, Resource: p.resource, Subresource: p.subresource, Verb: verb},
			}}
			res, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
			switch {
			case apierrors.IsUnauthorized(err):
				return condition(v1alpha1.ConditionConnected, metav1.ConditionFalse, ReasonUnauthorized,
					"the workload API server refuses the kubeconfig's credentials: "+err.Error())
			case err != nil && ctx.Err() != nil:
				return condition(v1alpha1.ConditionConnected, metav1.ConditionUnknown, ReasonProbing, "stopped")
			case err != nil:
				return condition(v1alpha1.ConditionConnected, metav1.ConditionFalse, ReasonUnreachable, err.Error())
			case !res.Status.Allowed:
				verbs = append(verbs, verb)
			}
		}
		if len(verbs) > 0 {
			missing = append(missing, fmt.Sprintf("%s: %s", p, strings.Join(verbs, ", ")))
		}
	}
	if len(missing) > 0 {
		return condition(v1alpha1.ConditionConnected, metav1.ConditionFalse, ReasonMissingRBAC,
			"the kubeconfig's credentials lack "+strings.Join(missing, "; ")+" (see config/workload-cluster)")
	}
	return condition(v1alpha1.ConditionConnected, metav1.ConditionTrue, ReasonConnected, "the workload API server answers and grants every permission projection needs")
}
