//go:build e2e

// SPDX-License-Identifier: Apache-2.0

// Package e2etest holds MagLB's end-to-end suites, in upstream MetalLB's style: they drive a
// running installation (the dev-env by default, or any cluster) through its API only.
//
//	python3 tasks.py e2etest                       # against the dev-env, brought up if needed
//	go test -tags e2e ./e2etest/ -args --kubeconfig K --namespace metallb-system
package e2etest

import (
	"flag"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/k8s"
)

// The cluster comes from --kubeconfig or KUBECONFIG (flags controller-runtime registers).
var (
	namespace = flag.String("namespace", "metallb-system", "the namespace of MagLB and its metallb.io objects")

	cs client.Client
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "MagLB e2e")
}

var _ = BeforeSuite(func() {
	// Convergence through a real API server, not a timing requirement.
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(200 * time.Millisecond)
	cfg, err := ctrl.GetConfig()
	Expect(err).NotTo(HaveOccurred(), "set --kubeconfig or KUBECONFIG")
	cs, err = client.New(cfg, client.Options{Scheme: k8s.NewScheme()})
	Expect(err).NotTo(HaveOccurred())
})
