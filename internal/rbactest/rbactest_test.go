// SPDX-License-Identifier: Apache-2.0

package rbactest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/maglb/maglb/internal/testenv"
)

func TestRowsRemoveOneVerbOfOneResource(t *testing.T) {
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "nodes"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{"metallb.io"}, Resources: []string{"bgppeers"}, Verbs: []string{"watch"}},
	}}
	rows := Rows(&testenv.RBAC{ClusterRoles: []*rbacv1.ClusterRole{role}})
	var names []string
	for _, r := range rows {
		names = append(names, r.String())
	}
	if diff := cmp.Diff([]string{
		"ClusterRole r: get services", "ClusterRole r: list services", "ClusterRole r: get nodes", "ClusterRole r: list nodes",
		"ClusterRole r: watch bgppeers.metallb.io",
	}, names); diff != "" {
		t.Fatalf("rows (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		row  int
		want []rbacv1.PolicyRule
	}{
		{1, []rbacv1.PolicyRule{ // list services
			{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list"}},
			{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get"}},
			role.Rules[1],
		}},
		{4, []rbacv1.PolicyRule{role.Rules[0]}}, // watch bgppeers: the rule goes
	} {
		got := rows[tc.row].without.(*rbacv1.ClusterRole).Rules
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", rows[tc.row], diff)
		}
		if diff := cmp.Diff(role.Rules, rows[tc.row].with.(*rbacv1.ClusterRole).Rules); diff != "" {
			t.Errorf("%s: the manifest's rules changed (-want +got):\n%s", rows[tc.row], diff)
		}
	}
}

func TestRefusedNamesVerbAndResource(t *testing.T) {
	row := Row{Group: "metallb.io", Resource: "servicebgpstatuses/status", Verb: "update"}
	for _, tc := range []struct {
		log  string
		want bool
	}{
		{`error="servicebgpstatuses.metallb.io \"x\" is forbidden: User \"system:serviceaccount:metallb-system:speaker\" cannot update resource \"servicebgpstatuses/status\" in API group \"metallb.io\" in the namespace \"metallb-system\""`, true},
		{`User "u" cannot update resource "servicebgpstatuses/status" in API group "metallb.io" in the namespace "n"`, true},
		{`User "u" cannot patch resource "servicebgpstatuses/status" in API group "metallb.io"`, false},
		{`User "u" cannot update resource "servicebgpstatuses" in API group "metallb.io"`, false},
		{`User "u" cannot update resource "servicebgpstatuses/status" in API group ""`, false},
	} {
		if got := row.Refused(tc.log); got != tc.want {
			t.Errorf("Refused(%s) = %v, want %v", tc.log, got, tc.want)
		}
	}
}
