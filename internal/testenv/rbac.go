// SPDX-License-Identifier: Apache-2.0

package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RBAC is what an RBAC manifest grants: its roles and bindings, and the ServiceAccounts it
// declares.
type RBAC struct {
	ServiceAccounts     []*corev1.ServiceAccount
	ClusterRoles        []*rbacv1.ClusterRole
	ClusterRoleBindings []*rbacv1.ClusterRoleBinding
	Roles               []*rbacv1.Role
	RoleBindings        []*rbacv1.RoleBinding
}

// ReadRBAC parses the RBAC objects of the YAML files at paths (relative to the repository);
// other kinds in them are skipped.
func ReadRBAC(paths ...string) (*RBAC, error) {
	var r RBAC
	for _, p := range paths {
		data, err := os.ReadFile(filepath.Join(RepoRoot(), p))
		if err != nil {
			return nil, err
		}
		dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var raw map[string]any
			if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			var obj any
			switch raw["kind"] {
			case "ServiceAccount":
				obj = appendNew(&r.ServiceAccounts)
			case "ClusterRole":
				obj = appendNew(&r.ClusterRoles)
			case "ClusterRoleBinding":
				obj = appendNew(&r.ClusterRoleBindings)
			case "Role":
				obj = appendNew(&r.Roles)
			case "RoleBinding":
				obj = appendNew(&r.RoleBindings)
			default:
				continue
			}
			if err := remarshal(raw, obj); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", p, raw["kind"], err)
			}
		}
	}
	return &r, nil
}

func appendNew[T any](list *[]*T) *T {
	v := new(T)
	*list = append(*list, v)
	return v
}

func remarshal(raw map[string]any, into any) error {
	data, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, into)
}

// Apply creates r's objects (the namespaces of namespaced ones must exist).
func (r *RBAC) Apply(ctx context.Context, c client.Client) error {
	var objs []client.Object
	for _, o := range r.ServiceAccounts {
		objs = append(objs, o.DeepCopy())
	}
	for _, o := range r.ClusterRoles {
		objs = append(objs, o.DeepCopy())
	}
	for _, o := range r.ClusterRoleBindings {
		objs = append(objs, o.DeepCopy())
	}
	for _, o := range r.Roles {
		objs = append(objs, o.DeepCopy())
	}
	for _, o := range r.RoleBindings {
		objs = append(objs, o.DeepCopy())
	}
	for _, o := range objs {
		if err := c.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// ServiceAccountConfig returns a client configuration of e's API server that authenticates
// with a token of ServiceAccount namespace/name: it has the rights RBAC grants that account,
// and no others.
func (e *Env) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return nil, err
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("a token of %s/%s: %w", namespace, name, err)
	}
	cfg := rest.AnonymousClientConfig(e.Config)
	cfg.BearerToken = tr.Status.Token
	return cfg, nil
}

// MetricsReaderToken returns a token of ServiceAccount default/name, bound to the manifest's
// metrics reader role (config/rbac/metrics_reader.yaml) as Prometheus' would be.
func (e *Env) MetricsReaderToken(ctx context.Context, name string) (string, error) {
	rbac, err := ReadRBAC("config/rbac/metrics_reader.yaml")
	if err != nil {
		return "", err
	}
	rbac.ServiceAccounts = []*corev1.ServiceAccount{{ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceDefault, Name: name}}}
	rbac.ClusterRoleBindings = []*rbacv1.ClusterRoleBinding{{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-metrics-reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: rbac.ClusterRoles[0].Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: metav1.NamespaceDefault, Name: name}},
	}}
	if err := rbac.Apply(ctx, e.Client); err != nil {
		return "", err
	}
	cfg, err := e.ServiceAccountConfig(ctx, metav1.NamespaceDefault, name)
	if err != nil {
		return "", err
	}
	return cfg.BearerToken, nil
}
