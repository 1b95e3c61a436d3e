// SPDX-License-Identifier: Apache-2.0

// Package testenv runs a real etcd and kube-apiserver (built by `tasks.py k8s-bins`) with
// MagLB's CRDs installed, for tests that need the API server. One server serves a whole test
// package: TestMain starts it through Run and stops it when the package's tests end.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	maglbv1alpha1 "github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/k8s"
)

// K8sVersion is the version `tasks.py k8s-bins` builds.
const K8sVersion = "1.37.2"

// Env is a running API server.
type Env struct {
	Config     *rest.Config
	Client     client.Client
	Kubeconfig string // path of a kubeconfig file with admin rights
	env        *envtest.Environment
	dir        string
}

var (
	shared   *Env
	startErr error
)

// Required reports whether tests that need the API server or root must run: a skip is a
// failure under CI=true or MAGLB_REQUIRE_PRIVILEGED=1.
func Required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("MAGLB_REQUIRE_PRIVILEGED") == "1"
}

// Unavailable stops t for a missing prerequisite (reason): a skip, or a failure where the test
// is Required.
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s, and CI=true or MAGLB_REQUIRE_PRIVILEGED=1 requires this test to run", reason)
	}
	t.Skip(reason)
}

// Run starts the package's API server, runs the tests and stops the server. Use it from
// TestMain: os.Exit(testenv.Run(m)). Without binaries the tests that call Get skip (or fail
// when Required).
func Run(m *testing.M) int {
	shared, startErr = Start()
	if startErr == nil {
		defer shared.Stop()
	}
	return m.Run()
}

// Get returns the package's API server, skipping the test when none could start (failing it
// when Required).
func Get(t testing.TB) *Env {
	t.Helper()
	if startErr != nil {
		Unavailable(t, "no API server: "+startErr.Error())
	}
	if shared == nil {
		t.Fatal("testenv.Get called without testenv.Run in TestMain")
	}
	return shared
}

// BinDir is where `tasks.py k8s-bins` puts kube-apiserver, etcd and kubectl:
// $KUBEBUILDER_ASSETS if set, else the per-user cache.
func BinDir() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(cache, "maglb", "k8s-bins-v"+K8sVersion, "bin")
}

// RepoRoot is the repository's top directory, found from this source file.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Start runs a new API server, for tests that need one of their own (Get shares one).
func Start() (*Env, error) {
	bins := BinDir()
	for _, name := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(bins, name)); err != nil {
			return nil, fmt.Errorf("%s not found in %s (run `python3 tasks.py k8s-bins`): %w", name, bins, err)
		}
	}
	scheme := k8s.NewScheme()
	env := &envtest.Environment{
		BinaryAssetsDirectory: bins,
		CRDDirectoryPaths:     []string{filepath.Join(RepoRoot(), "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	// Dual-stack, with ClusterIPs for thousands of Services.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16,fd00:10:96::/108")
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting etcd and kube-apiserver: %w", err)
	}
	e := &Env{Config: cfg, env: env}
	if err := e.connect(); err != nil {
		return nil, errors.Join(err, e.Stop())
	}
	return e, nil
}

func (e *Env) connect() error {
	c, err := client.New(e.Config, client.Options{Scheme: e.env.Scheme})
	if err != nil {
		return err
	}
	e.Client = c
	if e.dir, err = os.MkdirTemp("", "maglb-testenv-"); err != nil {
		return err
	}
	e.Kubeconfig = filepath.Join(e.dir, "kubeconfig")
	return os.WriteFile(e.Kubeconfig, e.env.KubeConfig, 0o600)
}

// Kubectl runs the kubectl of BinDir against the API server and returns its combined output.
func (e *Env) Kubectl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(BinDir(), "kubectl"), append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Stop ends the API server and removes its files.
func (e *Env) Stop() error {
	err := e.env.Stop()
	if e.dir != "" {
		err = errors.Join(err, os.RemoveAll(e.dir))
	}
	return err
}

// RegisterWorkloadCluster makes workload a workload cluster of e, the LB cluster, named name:
// workload's admin kubeconfig in a Secret of namespace (MagLB's), and a WorkloadCluster naming it.
func (e *Env) RegisterWorkloadCluster(ctx context.Context, workload *Env, namespace, name string) error {
	kubeconfig, err := os.ReadFile(workload.Kubeconfig)
	if err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-kubeconfig", Namespace: namespace},
		Data:       map[string][]byte{maglbv1alpha1.DefaultKubeconfigKey: kubeconfig},
	}
	wc := &maglbv1alpha1.WorkloadCluster{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       maglbv1alpha1.WorkloadClusterSpec{KubeconfigSecret: maglbv1alpha1.SecretKeyRef{Name: secret.Name}},
	}
	for _, obj := range []client.Object{secret, wc} {
		if err := e.Client.Create(ctx, obj); err != nil {
			return fmt.Errorf("registering workload cluster %s: %w", name, err)
		}
	}
	return nil
}
