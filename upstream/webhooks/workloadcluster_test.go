// SPDX-License-Identifier: Apache-2.0

package webhooks_test

import (
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/testenv"
)

// WorkloadClusters are admitted only with a service selector that parses and a projection
// namespace of their own.
func TestWorkloadClusterValidation(t *testing.T) {
	startComponents(t, metallbNamespace, "")
	ctx := context.Background()
	c := testenv.Get(t).Client
	t.Cleanup(func() {
		if err := c.DeleteAllOf(ctx, &v1alpha1.WorkloadCluster{}); err != nil {
			t.Error(err)
		}
	})
	create := func(text string) error {
		t.Helper()
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(text), &obj.Object); err != nil {
			t.Fatal(err)
		}
		return c.Create(ctx, obj)
	}
	for _, ok := range []string{`
apiVersion: maglb.io/v1alpha1
kind: WorkloadCluster
metadata: {name: east}
spec: {kubeconfigSecret: {name: east}, serviceSelector: {matchLabels: {expose: lb}}}`, `
apiVersion: maglb.io/v1alpha1
kind: WorkloadCluster
metadata: {name: west}
spec: {kubeconfigSecret: {name: west}, namespace: projections-west}`} {
		if err := create(ok); err != nil {
			t.Fatalf("a valid WorkloadCluster is refused: %v", err)
		}
	}

	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"selector that does not parse", `
apiVersion: maglb.io/v1alpha1
kind: WorkloadCluster
metadata: {name: badselector}
spec: {kubeconfigSecret: {name: x}, serviceSelector: {matchExpressions: [{key: tier, operator: In}]}}`,
			`WorkloadCluster badselector: invalid spec.serviceSelector: values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty`},
		{"MagLB's own namespace", `
apiVersion: maglb.io/v1alpha1
kind: WorkloadCluster
metadata: {name: inside}
spec: {kubeconfigSecret: {name: x}, namespace: metallb-system}`,
			`WorkloadCluster inside: projection namespace metallb-system is MagLB's own namespace`},
		{"another cluster's explicit namespace", `
apiVersion: maglb.io/v1alpha1
kind: WorkloadCluster
metadata: {name: copycat}
spec: {kubeconfigSecret: {name: x}, namespace: projections-west}`,
			`WorkloadCluster copycat: projection namespace projections-west is already WorkloadCluster west's`},
		{"another cluster's default namespace", `
apiVersion: maglb.io/v1alpha1
kind: WorkloadCluster
metadata: {name: other}
spec: {kubeconfigSecret: {name: x}, namespace: maglb-wc-east}`,
			`projection namespace maglb-wc-east is already WorkloadCluster east's`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := create(tc.yaml)
			if err == nil {
				t.Fatalf("created, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}

	t.Run("projection namespace changed", func(t *testing.T) {
		var west v1alpha1.WorkloadCluster
		if err := c.Get(ctx, client.ObjectKey{Name: "west"}, &west); err != nil {
			t.Fatal(err)
		}
		west.Spec.Namespace = "elsewhere"
		want := "the projection namespace cannot change from projections-west to elsewhere"
		if err := c.Update(ctx, &west); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("update: %v, want an error containing %q", err, want)
		}
	})
}
