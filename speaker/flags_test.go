// SPDX-License-Identifier: Apache-2.0

package main

import (
	"flag"
	"strings"
	"testing"

	"github.com/go-kit/log"

	"github.com/maglb/maglb/internal/upstreamflags/upstreamsrc"
)

const (
	v015 = "v0.15.2"
	v016 = "v0.16.2"
)

var both = []string{v015, v016}

// upstreamSettings are every flag and environment variable of upstream's speaker, and what
// MagLB's does with them.
var upstreamSettings = []upstreamsrc.Setting{
	{Flag: "bgp-debounce-timeout", Env: "METALLB_BGP_DEBOUNCE_TIMEOUT", Versions: []string{v016}, Handling: upstreamsrc.Ignored, Value: "3000"},
	{Flag: "namespace", Env: "METALLB_NAMESPACE", Versions: both, Handling: upstreamsrc.Honoured, Value: "metallb-system"},
	{Flag: "host", Env: "METALLB_HOST", Versions: both, Handling: upstreamsrc.Honoured, Value: "10.0.0.11"},
	{Flag: "ml-bindaddr", Env: "METALLB_ML_BIND_ADDR", Versions: both, Handling: upstreamsrc.Ignored, Value: "10.244.0.7"},
	{Flag: "ml-bindport", Env: "METALLB_ML_BIND_PORT", Versions: both, Handling: upstreamsrc.Ignored, Value: "7946"},
	{Flag: "ml-labels", Env: "METALLB_ML_LABELS", Versions: both, Handling: upstreamsrc.Ignored, Value: "app=metallb,component=speaker"},
	{Flag: "ml-secret-key-path", Env: "METALLB_ML_SECRET_KEY_PATH", Versions: both, Handling: upstreamsrc.Ignored, Value: "/etc/ml_secret_key"},
	{Flag: "ml-wan-config", Versions: both, Handling: upstreamsrc.Ignored},
	{Flag: "node-name", Env: "METALLB_NODE_NAME", Versions: both, Handling: upstreamsrc.Honoured, Value: "node-1"},
	{Flag: "pod-name", Env: "METALLB_POD_NAME", Versions: both, Handling: upstreamsrc.Ignored, Value: "speaker-x7k2p"},
	{Flag: "port", Versions: both, Handling: upstreamsrc.Honoured, Value: "7472"},
	{Flag: "log-level", Versions: both, Handling: upstreamsrc.Honoured, Value: "debug"},
	{Flag: "enable-pprof", Versions: []string{v015}, Handling: upstreamsrc.Honoured},
	{Flag: "pprof-bind-address", Versions: []string{v016}, Handling: upstreamsrc.Honoured, Value: "127.0.0.1:6060"},
	{Flag: "health-probe-port", Versions: []string{v016}, Handling: upstreamsrc.Honoured, Value: "17472"},
	{Flag: "lb-class", Versions: both, Handling: upstreamsrc.Honoured, Value: "example-class"},
	{Flag: "ignore-exclude-lb", Versions: both, Handling: upstreamsrc.Honoured},
	{Flag: "frrk8s-namespace", Env: "FRRK8S_NAMESPACE", Versions: both, Handling: upstreamsrc.Ignored, Value: "frr-k8s-system"},
	{Flag: "frrk8s-secret-passthrough", Versions: []string{v016}, Handling: upstreamsrc.Ignored},
	{Flag: "tls-min-version", Versions: []string{v016}, Handling: upstreamsrc.Honoured, Value: "VersionTLS12"},
	{Flag: "tls-cipher-suites", Versions: []string{v016}, Handling: upstreamsrc.Honoured, Value: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"},
	{Flag: "tls-curve-preferences", Versions: []string{v016}, Handling: upstreamsrc.Honoured, Value: "4588,29"},
	{Flag: "metrics-cert-dir", Versions: []string{v016}, Handling: upstreamsrc.Honoured, Value: "/etc/metrics"},
	{Flag: "gratuitous-arp-interval", Versions: []string{v016}, Handling: upstreamsrc.Honoured, Value: "30"},
	{Env: "METALLB_BGP_TYPE", Versions: both, Handling: upstreamsrc.Honoured, Value: "native"},
	{Env: "FRR_LOGGING_LEVEL", Versions: both, Handling: upstreamsrc.Ignored, Value: "debugging"},
	{Env: "FRR_CONFIG_FILE", Versions: both, Handling: upstreamsrc.Ignored, Value: "/etc/frr_reloader/frr.conf"},
	{Env: "FRR_RELOADER_PID_FILE", Versions: both, Handling: upstreamsrc.Ignored, Value: "/etc/frr_reloader/reloader.pid"},
}

var speakerFlags = upstreamsrc.Binary{
	Component: "speaker",
	Flags: func() (*flag.FlagSet, func(log.Logger)) {
		fs := flag.NewFlagSet("speaker", flag.ContinueOnError)
		o := bindFlags(fs)
		return fs, o.Upstream.LogIgnored
	},
}

func TestUpstreamSettings(t *testing.T) {
	upstreamsrc.CheckSettings(t, speakerFlags, upstreamSettings)
}

func TestUpstreamManifestArgs(t *testing.T) {
	upstreamsrc.CheckUpstreamArgs(t, speakerFlags, upstreamSettings)
}

// Upstream's flags do not make the speaker lax: an unknown flag, or one only upstream's
// controller defines, still fails.
func TestUnknownFlagFails(t *testing.T) {
	for _, arg := range []string{"--no-such-flag=1", "--ml-secret-name=memberlist", "--webhook-http2", "--gratuitous-arp-interval=-1"} {
		err := upstreamsrc.Parse(speakerFlags, arg)
		if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(strings.Split(arg, "=")[0], "--")) {
			t.Errorf("parsing %s: error %v, want one naming the flag", arg, err)
		}
	}
}
