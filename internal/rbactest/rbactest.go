// SPDX-License-Identifier: Apache-2.0

// Package rbactest runs a component with exactly its manifest's RBAC, and with one verb less:
// the minus-one-verb table. Every (resource, verb) a manifest role grants gets a row; the row
// removes that verb from that resource alone and expects the component's run to show the API
// server refusing it. A row whose run shows no refusal is a verb the component does without,
// which the manifest should not grant.
package rbactest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/testenv"
)

// Row is a manifest's RBAC with one verb of one resource of one role removed.
type Row struct {
	Kind, Role string // ClusterRole or Role, and its name
	Namespace  string // of a Role
	Group      string
	Resource   string // with its subresource ("services/status"), or a non-resource URL
	Verb       string
	with       client.Object
	without    client.Object
}

func (r Row) String() string {
	return fmt.Sprintf("%s %s: %s %s", r.Kind, r.Role, r.Verb, r.qualified())
}

// ID names the row in object names (lower case, no spaces).
func (r Row) ID() string {
	id := strings.ToLower(fmt.Sprintf("%s-%s-%s", r.Verb, strings.NewReplacer("/", "-", ".", "-").Replace(r.Resource), r.Group))
	return strings.Trim(regexp.MustCompile(`[^a-z0-9-]+`).ReplaceAllString(id, "-"), "-")
}

func (r Row) qualified() string {
	if r.Group == "" {
		return r.Resource
	}
	return r.Resource + "." + r.Group
}

// Refused reports whether log (a component's, or any text holding the API server's answers)
// holds the API server's refusal of the row's verb on its resource. logfmt escapes the quotes.
// The zero Row (the manifest's RBAC, nothing removed) is never refused.
func (r Row) Refused(log string) bool {
	if r.Verb == "" {
		return false
	}
	q := `\\?"`
	pattern := `cannot ` + regexp.QuoteMeta(r.Verb) + ` resource ` + q + regexp.QuoteMeta(r.Resource) + q + ` in API group ` + q + regexp.QuoteMeta(r.Group) + q
	return regexp.MustCompile(pattern).MatchString(log)
}

// Env is the environment a component runs in for the row. client-go lists by streaming
// through a watch where the API server serves that (WatchListClient); LIST is what it falls
// back to where the server does not, so a list row runs the component with streaming off.
func (r Row) Env() []string {
	if r.Verb == "list" {
		return []string{"KUBE_FEATURE_WatchListClient=false"}
	}
	return nil
}

// Rows returns a row per (resource, verb) of every rule of rbac's roles.
func Rows(rbac *testenv.RBAC) []Row {
	var rows []Row
	add := func(kind string, role client.Object, rules []rbacv1.PolicyRule, withRules func([]rbacv1.PolicyRule) client.Object) {
		for i, rule := range rules {
			for _, group := range orEmpty(rule.APIGroups) {
				for _, resource := range append(slices.Clone(rule.Resources), rule.NonResourceURLs...) {
					for _, verb := range rule.Verbs {
						rows = append(rows, Row{
							Kind: kind, Role: role.GetName(), Namespace: role.GetNamespace(),
							Group: group, Resource: resource, Verb: verb,
							with:    withRules(rules),
							without: withRules(withoutVerb(rules, i, group, resource, verb)),
						})
					}
				}
			}
		}
	}
	for _, cr := range rbac.ClusterRoles {
		add("ClusterRole", cr, cr.Rules, func(rules []rbacv1.PolicyRule) client.Object {
			o := cr.DeepCopy()
			o.Rules = rules
			return o
		})
	}
	for _, role := range rbac.Roles {
		add("Role", role, role.Rules, func(rules []rbacv1.PolicyRule) client.Object {
			o := role.DeepCopy()
			o.Rules = rules
			return o
		})
	}
	return rows
}

func orEmpty(groups []string) []string {
	if len(groups) == 0 {
		return []string{""}
	}
	return groups
}

// withoutVerb returns rules with rule i split: everything it granted but verb on
// group/resource.
func withoutVerb(rules []rbacv1.PolicyRule, i int, group, resource, verb string) []rbacv1.PolicyRule {
	out := slices.Clone(rules[:i])
	rule := rules[i]
	if len(rule.NonResourceURLs) > 0 {
		rest := rule.DeepCopy()
		rest.NonResourceURLs = slices.DeleteFunc(slices.Clone(rule.NonResourceURLs), func(u string) bool { return u == resource })
		if len(rest.NonResourceURLs) > 0 {
			out = append(out, *rest)
		}
	} else {
		if groups := slices.DeleteFunc(slices.Clone(rule.APIGroups), func(g string) bool { return g == group }); len(groups) > 0 {
			others := rule.DeepCopy()
			others.APIGroups = groups
			out = append(out, *others)
		}
		if resources := slices.DeleteFunc(slices.Clone(rule.Resources), func(r string) bool { return r == resource }); len(resources) > 0 {
			others := rule.DeepCopy()
			others.APIGroups, others.Resources = []string{group}, resources
			out = append(out, *others)
		}
	}
	if verbs := slices.DeleteFunc(slices.Clone(rule.Verbs), func(v string) bool { return v == verb }); len(verbs) > 0 {
		reduced := rule.DeepCopy()
		reduced.Verbs = verbs
		if len(rule.NonResourceURLs) > 0 {
			reduced.NonResourceURLs = []string{resource}
		} else {
			reduced.APIGroups, reduced.Resources = []string{group}, []string{resource}
		}
		out = append(out, *reduced)
	}
	return append(out, rules[i+1:]...)
}

// Job runs a component once (in row.Env()), with the RBAC in place, until it has done its
// job (what needs every verb of its manifest), or until row.Refused(its log so far), and
// returns its log and what of the job is not done. It fails t only for what the RBAC cannot
// explain (a broken test setup).
type Job func(t *testing.T, row Row) (log string, notDone error)

// Full runs job with the manifest's RBAC (the zero Row): the job is done, and nothing was
// refused.
func Full(t *testing.T, job Job) {
	t.Helper()
	log, err := job(t, Row{})
	if err != nil {
		t.Fatalf("with the manifest's RBAC: %v; the log ends:\n%s", err, Tail(log, 20))
	}
	if strings.Contains(log, "forbidden") {
		t.Fatalf("with the manifest's RBAC, the API server refused something:\n%s", grep(log, "forbidden"))
	}
}

func grep(s, word string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, word) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// Check runs job with the manifest's RBAC (Full) and then, with MAGLB_RBAC_TABLE=1, the
// minus-one-verb table (Table) as user.
func Check(t *testing.T, c client.Client, rbac *testenv.RBAC, user string, job Job) {
	t.Helper()
	Full(t, job)
	if os.Getenv("MAGLB_RBAC_TABLE") != "1" {
		t.Log("the minus-one-verb table runs with MAGLB_RBAC_TABLE=1")
		return
	}
	Table(t, c, rbac, user, job)
}

// Table runs job once per row of rbac (applied, as the ServiceAccount's only rights, by
// the caller) and fails a row whose run shows no refusal of its verb.
func Table(t *testing.T, c client.Client, rbac *testenv.RBAC, user string, job Job) {
	for _, row := range Rows(rbac) {
		t.Run(row.String(), func(t *testing.T) {
			ctx := context.Background()
			if err := row.Remove(ctx, c, user); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := row.Restore(ctx, c, user); err != nil {
					t.Fatal(err)
				}
			}()
			log, notDone := job(t, row)
			switch {
			case row.Refused(log):
			case notDone != nil:
				t.Errorf("without %s the job fails (%v), but the log names no refusal of it; the log ends:\n%s", row, notDone, Tail(log, 10))
			default:
				t.Errorf("the job was done without %s: the manifest should not grant it (or the job misses what needs it)", row)
			}
		})
	}
}

// Remove takes the row's verb from its role and waits until the API server refuses it to
// user.
func (r Row) Remove(ctx context.Context, c client.Client, user string) error {
	return r.set(ctx, c, user, r.without, false)
}

// Restore gives the row's role back its manifest's rules and waits until the API server
// allows the row's verb to user.
func (r Row) Restore(ctx context.Context, c client.Client, user string) error {
	return r.set(ctx, c, user, r.with, true)
}

// set updates the row's role to role and waits until the API server's authorizer agrees
// that user may (allowed) or may not do the row's verb.
func (r Row) set(ctx context.Context, c client.Client, user string, role client.Object, allowed bool) error {
	obj := role.DeepCopyObject().(client.Object)
	if err := c.Get(ctx, client.ObjectKeyFromObject(role), obj); err != nil {
		return err
	}
	role = role.DeepCopyObject().(client.Object)
	role.SetResourceVersion(obj.GetResourceVersion())
	if err := c.Update(ctx, role); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: serviceAccountGroups(user)}}
		if strings.HasPrefix(r.Resource, "/") {
			review.Spec.NonResourceAttributes = &authorizationv1.NonResourceAttributes{Path: r.Resource, Verb: r.Verb}
		} else {
			resource, sub, _ := strings.Cut(r.Resource, "/")
			review.Spec.ResourceAttributes = &authorizationv1.ResourceAttributes{Namespace: r.Namespace, Verb: r.Verb, Group: r.Group, Resource: resource, Subresource: sub}
		}
		if err := c.Create(ctx, review); err != nil {
			return err
		}
		if review.Status.Allowed == allowed {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: after updating %s %s, %s is still allowed=%v", r, r.Kind, r.Role, user, review.Status.Allowed)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// serviceAccountGroups are the groups the API server puts a ServiceAccount's token in.
func serviceAccountGroups(user string) []string {
	parts := strings.Split(user, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" {
		return nil
	}
	return []string{"system:serviceaccounts", "system:serviceaccounts:" + parts[2], "system:authenticated"}
}

// ServiceAccountUser is the user name of ServiceAccount namespace/name.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// Kubeconfig writes a kubeconfig of cfg (a token's, from testenv's ServiceAccountConfig) into
// a file of t's and returns its path, for a component run as a process.
func Kubeconfig(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "c"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// ReadLog returns the file at path, empty when it cannot be read yet.
func ReadLog(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ErrRefused ends a job early: its component's log shows the refusal the row looks for.
var ErrRefused = errors.New("refused")

// Steps waits for the steps of a job whose component logs to LogPath, stopping as soon as
// the log shows Refused.
type Steps struct {
	LogPath string
	Refused func(log string) bool
	Timeout time.Duration // per step
}

// Wait polls check until it returns nil; it returns ErrRefused once the log shows the
// refusal, and what check last said when Timeout passes.
func (s Steps) Wait(what string, check func() error) error {
	deadline := time.Now().Add(s.Timeout)
	for {
		if s.Refused(ReadLog(s.LogPath)) {
			return ErrRefused
		}
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %w", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Grant creates the RBAC of the manifests at paths (in the repository) in env, and returns it
// with a client configuration, and a kubeconfig file, of a token of ServiceAccount
// namespace/account: the rights the manifests grant that account, and no others.
func Grant(t testing.TB, env *testenv.Env, namespace, account string, paths ...string) (rbac *testenv.RBAC, cfg *rest.Config, kubeconfig string) {
	t.Helper()
	ctx := context.Background()
	rbac, err := testenv.ReadRBAC(paths...)
	if err != nil {
		t.Fatal(err)
	}
	if err := rbac.Apply(ctx, env.Client); err != nil {
		t.Fatal(err)
	}
	if cfg, err = env.ServiceAccountConfig(ctx, namespace, account); err != nil {
		t.Fatal(err)
	}
	return rbac, cfg, Kubeconfig(t, cfg)
}
