// SPDX-License-Identifier: Apache-2.0

package main

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/maglb/maglb/internal/badsettings"
)

// controllerSettings has a row for every flag and environment variable of the controller:
// a value it must refuse, or why it accepts any.
var controllerSettings = []badsettings.Row{
	{Flag: "kubeconfig", Env: "KUBECONFIG", Bad: "/nonexistent/kubeconfig"},
	{Flag: "namespace", Env: "METALLB_NAMESPACE", Bad: "Not_A_Namespace"},
	{Flag: "log-level", Bad: "loud"},
	{Flag: "port", Bad: "70000"},
	{Flag: "health-probe-port", Bad: "-1"},
	{Flag: "webhook-mode", Bad: "sometimes"},
	{Flag: "webhook-host", Bad: "not a host"},
	{Flag: "webhook-port", Bad: "0"},
	{Flag: "cert-dir", Bad: "/etc/hostname"},
	{Flag: "cert-service-name", Bad: "Bad.Service"},
	{Flag: "webhook-secret", Bad: "bad/secret"},
	{Flag: "disable-cert-rotation", Bad: "maybe"},
	{Flag: "lb-class", Bad: "not a class"},
	{Flag: "metrics-secure", Bad: "maybe"},
	{Flag: "disable-leader-election", Bad: "maybe"},
	{Flag: "webhook-http2", Bad: "maybe"},
	{Flag: "enable-pprof", Bad: "maybe"},
	{Flag: "pprof-bind-address", Bad: "no-port"},
	{Flag: "tls-min-version", Bad: "VersionTLS99"},
	{Flag: "tls-cipher-suites", Bad: "TLS_NO_SUCH_SUITE"},
	{Flag: "tls-curve-preferences", Bad: "x25519"},
	{Flag: "metrics-cert-dir", Bad: "/nonexistent/certs"},
	{Flag: "ml-secret-name", Env: "METALLB_ML_SECRET_NAME", Accepted: "ignored: no memberlist"},
	{Flag: "deployment", Env: "METALLB_DEPLOYMENT", Accepted: "ignored: no memberlist"},
	{Flag: "pod-name", Env: "METALLB_POD_NAME", Bad: "Not_A_Pod"},
	{Env: "METALLB_BGP_TYPE", Accepted: "ignored by the controller: each speaker checks its own"},
}

// Every flag and environment variable with a bad value stops the built controller before it
// starts anything, with a message naming it and the value.
func TestBadSettingsRefused(t *testing.T) {
	badsettings.CheckEnv(t, upstreamSettings, controllerSettings)
	badsettings.Check(t, controller(t), controllerSettings)
}

// A kubeconfig that is garbage, missing or names a server that does not answer stops the
// controller at once with a message naming the file or the server.
func TestBadKubeconfigRefused(t *testing.T) {
	badsettings.CheckKubeconfigs(t, controller(t))
}

func controller(t *testing.T) badsettings.Binary {
	return badsettings.Binary{
		Path:      controllerBinary(t),
		Args:      []string{"--webhook-host=127.0.0.1", "--cert-dir=" + t.TempDir()},
		PortFlags: []string{"port", "health-probe-port", "webhook-port"},
	}
}

// controllerBinary builds the controller into the test's directory.
func controllerBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "controller")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
