// SPDX-License-Identifier: Apache-2.0

package main

import (
	"testing"

	"github.com/maglb/maglb/internal/badsettings"
	"github.com/maglb/maglb/internal/netlab"
)

const memberlist = "ignored: no memberlist"

// speakerSettings has a row for every flag and environment variable of the speaker: a value
// it must refuse, or why it accepts any. The datapath's flags are refused with the default
// kubeproxy datapath too.
var speakerSettings = []badsettings.Row{
	{Flag: "kubeconfig", Env: "KUBECONFIG", Bad: "/nonexistent/kc.yaml"},
	{Flag: "namespace", Env: "METALLB_NAMESPACE", Bad: "Not_A_Namespace"},
	{Flag: "node-name", Env: "METALLB_NODE_NAME", Bad: "Bad_Node"},
	{Flag: "log-level", Bad: "loud"},
	{Flag: "port", Bad: "70000"},
	{Flag: "health-probe-port", Bad: "-1"},
	{Flag: "lb-class", Bad: "not a class"},
	{Flag: "ignore-exclude-lb", Bad: "maybe"},
	{Flag: "role", Bad: "router"},
	{Flag: "datapath", Bad: "xdp"},
	{Flag: "xdp-mode", Bad: "turbo"},
	{Flag: "datapath-interface", Bad: "no/such"},
	{Flag: "datapath-encap", Bad: "gre"},
	{Flag: "gue-port", Bad: "70000"},
	{Flag: "keep-datapath-on-exit", Bad: "maybe"},
	{Flag: "datapath-pin-path", Bad: "relative/pins"},
	{Flag: "datapath-max-services", Bad: "0"},
	{Flag: "tunnel-source-cidr", Bad: "10.0.0.0/33"},
	{Flag: "gratuitous-arp-interval", Bad: "-1"},
	{Flag: "enable-pprof", Bad: "maybe"},
	{Flag: "pprof-bind-address", Bad: "no-port"},
	{Flag: "tls-min-version", Bad: "VersionTLS99"},
	{Flag: "tls-cipher-suites", Bad: "TLS_NO_SUCH_SUITE"},
	{Flag: "tls-curve-preferences", Bad: "x25519"},
	{Flag: "metrics-cert-dir", Bad: "/nonexistent/certs"},
	{Env: "METALLB_BGP_TYPE", Bad: "bird"},
	{Flag: "bgp-debounce-timeout", Env: "METALLB_BGP_DEBOUNCE_TIMEOUT", Accepted: "ignored: nothing to debounce"},
	{Flag: "host", Env: "METALLB_HOST", Bad: "not-an-address"},
	{Flag: "metrics-secure", Bad: "maybe"},
	{Flag: "ml-bindaddr", Env: "METALLB_ML_BIND_ADDR", Accepted: memberlist},
	{Flag: "ml-bindport", Env: "METALLB_ML_BIND_PORT", Accepted: memberlist},
	{Flag: "ml-labels", Env: "METALLB_ML_LABELS", Accepted: memberlist},
	{Flag: "ml-secret-key-path", Env: "METALLB_ML_SECRET_KEY_PATH", Accepted: memberlist},
	{Flag: "ml-wan-config", Accepted: memberlist},
	{Flag: "pod-name", Env: "METALLB_POD_NAME", Accepted: "ignored: a speaker is known by its node"},
	{Flag: "frrk8s-namespace", Env: "FRRK8S_NAMESPACE", Accepted: "ignored: no frr-k8s"},
	{Flag: "frrk8s-secret-passthrough", Accepted: "ignored: no frr-k8s"},
	{Env: "FRR_LOGGING_LEVEL", Accepted: "ignored: no FRR"},
	{Env: "FRR_CONFIG_FILE", Accepted: "ignored: no FRR"},
	{Env: "FRR_RELOADER_PID_FILE", Accepted: "ignored: no FRR"},
}

// backendAgentSettings are the backend agent's (speaker --role=backend-agent).
var backendAgentSettings = []badsettings.Row{
	{Flag: "kubeconfig", Env: "KUBECONFIG", Bad: "/nonexistent/kc.yaml"},
	{Flag: "log-level", Bad: "loud"},
	{Flag: "port", Bad: "70000"},
	{Flag: "host", Env: "METALLB_HOST", Bad: "not-an-address"},
	{Flag: "backend-interfaces", Bad: "no/such"},
	{Flag: "decap-hook", Bad: "tc"},
	{Flag: "xdp-mode", Bad: "turbo"},
	{Flag: "gue-port", Bad: "0"},
	{Flag: "datapath-pin-path", Bad: "relative/pins"},
	{Flag: "keep-datapath-on-exit", Bad: "maybe"},
	{Flag: "tunnel-sources", Bad: "10.0.0.0/33"},
	{Flag: "lb-node-selector", Bad: "a in ("},
	{Flag: "role", Accepted: "it selects the role: any other value runs the speaker, which refuses what is not its own"},
}

// reflectorSettings are the route reflector's (speaker --role=reflector).
var reflectorSettings = []badsettings.Row{
	{Flag: "kubeconfig", Env: "KUBECONFIG", Bad: "/nonexistent/kc.yaml"},
	{Flag: "namespace", Env: "METALLB_NAMESPACE", Bad: "Not_A_Namespace"},
	{Flag: "node-name", Env: "METALLB_NODE_NAME", Bad: "Bad_Node"},
	{Flag: "log-level", Bad: "loud"},
	{Flag: "port", Bad: "70000"},
	{Flag: "health-probe-port", Bad: "-1"},
	{Flag: "host", Env: "METALLB_HOST", Bad: "not-an-address"},
	{Flag: "lb-class", Bad: "not a class"},
	{Flag: "metrics-secure", Bad: "maybe"},
	{Flag: "role", Accepted: "it selects the role: any other value runs the speaker, which refuses what is not its own"},
}

// Every flag and environment variable with a bad value stops the built speaker, in each of
// its roles, before it starts anything, with a message naming it and the value.
func TestBadSettingsRefused(t *testing.T) {
	bin := binary(t)
	t.Run("speaker", func(t *testing.T) {
		badsettings.CheckEnv(t, upstreamSettings, speakerSettings)
		badsettings.Check(t, speaker(bin), speakerSettings)
	})
	t.Run("backend-agent", func(t *testing.T) {
		netlab.Require(t) // root: a backend agent that did not refuse would load its program
		badsettings.Check(t, badsettings.Binary{
			Path:        bin,
			Args:        []string{"--role=backend-agent", "--backend-interfaces=maglb-none0"},
			PortFlags:   []string{"port"},
			PinPathFlag: "datapath-pin-path",
		}, backendAgentSettings)
	})
	t.Run("reflector", func(t *testing.T) {
		badsettings.Check(t, badsettings.Binary{
			Path:      bin,
			Args:      []string{"--role=reflector", "--node-name=node-1"},
			PortFlags: []string{"port", "health-probe-port"},
		}, reflectorSettings)
	})
}

// A kubeconfig that is garbage, missing or names a server that does not answer stops the
// speaker at once with a message naming the file or the server.
func TestBadKubeconfigRefused(t *testing.T) {
	badsettings.CheckKubeconfigs(t, speaker(binary(t)))
}

func speaker(bin string) badsettings.Binary {
	return badsettings.Binary{
		Path:        bin,
		Args:        []string{"--node-name=node-1"},
		PortFlags:   []string{"port", "health-probe-port"},
		PinPathFlag: "datapath-pin-path",
	}
}
