// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/go-kit/log"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	maglbv1alpha1 "github.com/maglb/maglb/api/v1alpha1"
	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/testenv"
)

// The controller projects workload clusters when the API server serves WorkloadClusters: a
// WorkloadCluster gets its status.
func TestProjectionRunsWithMaglbCRD(t *testing.T) {
	startController(t, "")
	c := testenv.Get(t).Client
	wc := &maglbv1alpha1.WorkloadCluster{ObjectMeta: metav1.ObjectMeta{Name: "wired"}}
	wc.Spec.KubeconfigSecret.Name = "absent"
	create(t, wc)
	testenv.Eventually(t, "WorkloadCluster status", func() error {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(wc), wc); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(wc.Status.Conditions, maglbv1alpha1.ConditionConnected)
		if cond == nil || cond.Reason != "KubeconfigInvalid" {
			return fmt.Errorf("conditions %v", wc.Status.Conditions)
		}
		return nil
	})
	if err := c.Delete(context.Background(), wc); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "WorkloadCluster deleted", func() error {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(wc), wc); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
}

// A cluster with upstream's CRDs only (no maglb.io) still runs the controller, without
// projection, and says so once.
func TestProjectionDisabledWithoutMaglbCRD(t *testing.T) {
	testenv.Get(t) // skips or fails like the package's other tests
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	crd := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: "workloadclusters.maglb.io"}}
	if err := env.Client.Delete(context.Background(), crd); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "maglb.io/v1alpha1 no longer served", func() error {
		served, err := servesWorkloadClusters(env.Config)
		if err != nil || served {
			return fmt.Errorf("served %v, %v", served, err)
		}
		return nil
	})
	if err := env.Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: metallbNamespace}}); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	o := options{
		Options:     k8s.Options{Namespace: metallbNamespace, LogLevel: "info", HealthProbePort: testenv.FreePort(t)},
		webhookMode: webhookDisabled,
	}
	runController(t, env, o, log.NewLogfmtLogger(&out))
	if got := strings.Count(out.String(), "projection disabled"); got != 1 {
		t.Errorf("%d lines say projection is disabled, want 1; log:\n%s", got, out.String())
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
