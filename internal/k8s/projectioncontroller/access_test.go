// SPDX-License-Identifier: Apache-2.0

package projectioncontroller_test

import (
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/testenv"
)

// tokenKubeconfig is a kubeconfig for env's API server that authenticates with token.
func tokenKubeconfig(t *testing.T, env *testenv.Env, token string) []byte {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["workload"] = &clientcmdapi.Cluster{Server: env.Config.Host, CertificateAuthorityData: env.Config.CAData}
	cfg.AuthInfos["projection"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["workload"] = &clientcmdapi.Context{Cluster: "workload", AuthInfo: "projection"}
	cfg.CurrentContext = "workload"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The workload cluster's manifest (config/workload-cluster) grants exactly what projection
// needs: its token connects; the role without one verb is reported MissingRBAC naming it; a
// token the API server does not know is reported Unauthorized.
func TestWorkloadClusterAccess(t *testing.T) {
	w := workloadCluster(t)
	startController(t)
	manifest := filepath.Join(testenv.RepoRoot(), "config", "workload-cluster")
	if out, err := w.Kubectl("apply", "-k", manifest); err != nil {
		t.Fatalf("kubectl apply -k %s: %v\n%s", manifest, err, out)
	}
	token, err := w.Kubectl("create", "token", "maglb-projection", "--namespace", "maglb-projection")
	if err != nil {
		t.Fatalf("kubectl create token: %v\n%s", err, token)
	}
	registerCluster(t, "scoped", tokenKubeconfig(t, w, strings.TrimSpace(token)), nil)
	waitCondition(t, "scoped", v1alpha1.ConditionConnected, metav1.ConditionTrue, "Connected")

	if out, err := w.Kubectl("patch", "clusterrole", "maglb-projection", "--type=json",
		`--patch=[{"op": "replace", "path": "/rules/1/verbs", "value": ["update"]}]`); err != nil {
		t.Fatalf("kubectl patch: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = w.Kubectl("apply", "-k", manifest) })
	c := waitCondition(t, "scoped", v1alpha1.ConditionConnected, metav1.ConditionFalse, "MissingRBAC")
	if !strings.Contains(c.Message, "services/status: patch") {
		t.Errorf("MissingRBAC message %q does not name services/status: patch", c.Message)
	}

	registerCluster(t, "stranger", tokenKubeconfig(t, w, "not-a-token"), nil)
	waitCondition(t, "stranger", v1alpha1.ConditionConnected, metav1.ConditionFalse, "Unauthorized")
}
