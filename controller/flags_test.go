// SPDX-License-Identifier: Apache-2.0

package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"strings"
	"testing"

	"github.com/go-kit/log"

	"github.com/maglb/maglb/internal/testenv"
	"github.com/maglb/maglb/internal/upstreamflags/upstreamsrc"
)

const (
	v015 = "v0.15.2"
	v016 = "v0.16.2"
)

var both = []string{v015, v016}

// upstreamSettings are every flag and environment variable of upstream's controller, and
// what MagLB's does with them.
var upstreamSettings = []upstreamsrc.Setting{
	{Flag: "port", Versions: both, Handling: upstreamsrc.Honoured, Value: "7472"},
	{Flag: "namespace", Env: "METALLB_NAMESPACE", Versions: both, Handling: upstreamsrc.Honoured, Value: "metallb-system"},
	{Flag: "ml-secret-name", Env: "METALLB_ML_SECRET_NAME", Versions: both, Handling: upstreamsrc.Ignored, Value: "memberlist"},
	{Flag: "deployment", Env: "METALLB_DEPLOYMENT", Versions: both, Handling: upstreamsrc.Ignored, Value: "controller"},
	{Flag: "log-level", Versions: both, Handling: upstreamsrc.Honoured, Value: "debug"},
	{Flag: "enable-pprof", Versions: []string{v015}, Handling: upstreamsrc.Honoured},
	{Flag: "pprof-bind-address", Versions: []string{v016}, Handling: upstreamsrc.Honoured, Value: "127.0.0.1:6060"},
	{Flag: "health-probe-port", Versions: []string{v016}, Handling: upstreamsrc.Honoured, Value: "17472"},
	{Flag: "disable-cert-rotation", Versions: both, Handling: upstreamsrc.Honoured},
	{Flag: "cert-dir", Versions: both, Handling: upstreamsrc.Honoured, Value: "/tmp/k8s-webhook-server/serving-certs"},
	{Flag: "cert-service-name", Versions: both, Handling: upstreamsrc.Honoured, Value: "metallb-webhook-service"},
	{Flag: "lb-class", Versions: both, Handling: upstreamsrc.Honoured, Value: "example-class"},
	{Flag: "webhook-mode", Versions: both, Handling: upstreamsrc.Honoured, Value: "onlywebhook"},
	{Flag: "webhook-secret", Versions: both, Handling: upstreamsrc.Honoured, Value: "metallb-webhook-cert"},
	{Flag: "pod-name", Env: "METALLB_POD_NAME", Versions: []string{v016}, Handling: upstreamsrc.Honoured, Value: "controller-5d8f7"},
	{Flag: "webhook-http2", Versions: both, Handling: upstreamsrc.Honoured},
	{Flag: "tls-min-version", Versions: both, Handling: upstreamsrc.Honoured, Value: "VersionTLS12"},
	{Flag: "tls-cipher-suites", Versions: both, Handling: upstreamsrc.Honoured, Value: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"},
	{Flag: "tls-curve-preferences", Versions: []string{v016}, Handling: upstreamsrc.Honoured, Value: "29,23"},
	{Flag: "metrics-cert-dir", Versions: []string{v016}, Handling: upstreamsrc.Honoured, Value: "/etc/metrics"},
	{Env: "METALLB_BGP_TYPE", Versions: both, Handling: upstreamsrc.Ignored, Value: "frr-k8s"},
}

var controllerFlags = upstreamsrc.Binary{
	Component: "controller",
	Flags: func() (*flag.FlagSet, func(log.Logger)) {
		fs := flag.NewFlagSet("controller", flag.ContinueOnError)
		o := bindFlags(fs)
		return fs, o.Upstream.LogIgnored
	},
}

func TestUpstreamSettings(t *testing.T) {
	upstreamsrc.CheckSettings(t, controllerFlags, upstreamSettings)
}

func TestUpstreamManifestArgs(t *testing.T) {
	upstreamsrc.CheckUpstreamArgs(t, controllerFlags, upstreamSettings)
}

// Upstream's flags do not make the controller lax: an unknown flag, or one only upstream's
// speaker defines, still fails.
func TestUnknownFlagFails(t *testing.T) {
	for _, arg := range []string{"--no-such-flag=1", "--ml-bindaddr=10.0.0.1", "--gratuitous-arp-interval=5", "--tls-min-version=VersionTLS99"} {
		err := upstreamsrc.Parse(controllerFlags, arg)
		if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(strings.Split(arg, "=")[0], "--")) {
			t.Errorf("parsing %s: error %v, want one naming the flag", arg, err)
		}
	}
}

// The running controller's webhook server follows upstream's TLS flags: TLS 1.3 and HTTP/1.1
// by default, TLS 1.2 and HTTP/2 when asked for.
func TestWebhookServerTLS(t *testing.T) {
	env := testenv.Get(t)
	ensureNamespace(t, metallbNamespace, nil)
	for _, tc := range []struct {
		args      []string
		tls12     bool   // whether a TLS 1.2 client is accepted
		wantProto string // negotiated when the client offers h2 and http/1.1
	}{
		{wantProto: "http/1.1"},
		{args: []string{"--tls-min-version=VersionTLS12", "--webhook-http2"}, tls12: true, wantProto: "h2"},
	} {
		name := strings.Join(tc.args, " ")
		if name == "" {
			name = "defaults"
		}
		t.Run(name, func(t *testing.T) {
			fs := flag.NewFlagSet("controller", flag.ContinueOnError)
			o := bindFlags(fs)
			webhookPort := testenv.FreePort(t)
			args := append([]string{
				"--namespace=" + metallbNamespace, "--port=0", fmt.Sprintf("--health-probe-port=%d", testenv.FreePort(t)),
				"--webhook-host=127.0.0.1", fmt.Sprintf("--webhook-port=%d", webhookPort), "--cert-dir=" + t.TempDir(),
			}, tc.args...)
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			runController(t, env, *o, log.NewNopLogger())

			addr := fmt.Sprintf("127.0.0.1:%d", webhookPort)
			conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
			if err == nil {
				conn.Close()
			}
			if accepted := err == nil; accepted != tc.tls12 {
				t.Errorf("TLS 1.2 client accepted: %v (%v), want %v", accepted, err, tc.tls12)
			}
			conn, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if got := conn.ConnectionState().NegotiatedProtocol; got != tc.wantProto {
				t.Errorf("negotiated %q, want %q", got, tc.wantProto)
			}
		})
	}
}
