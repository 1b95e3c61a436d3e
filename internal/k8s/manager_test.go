// SPDX-License-Identifier: Apache-2.0

package k8s_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/testenv"
	"github.com/maglb/maglb/internal/upstreamflags"
	"github.com/maglb/maglb/internal/webhookcert"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m))
}

// options parses args as a binary does.
func options(t *testing.T, args ...string) k8s.Options {
	t.Helper()
	var o k8s.Options
	fs := flag.NewFlagSet("speaker", flag.ContinueOnError)
	o.Bind(fs, 7472)
	o.Upstream.Bind(fs, upstreamflags.Speaker)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o
}

// /metrics is HTTPS by default (a self-signed certificate, or --metrics-cert-dir's), for
// tokens the API server allows GET /metrics (config/rbac/metrics_reader.yaml); plain HTTP with
// --metrics-secure=false; --enable-pprof adds pprof beside it.
func TestMetricsServer(t *testing.T) {
	env := testenv.Get(t)
	certDir := t.TempDir()
	bundle, err := webhookcert.Generate(webhookcert.Subject{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := webhookcert.WriteServingPair(bundle, certDir); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(bundle.CA)
	reader, stranger := metricsTokens(t, env)
	selfSigned := &tls.Config{InsecureSkipVerify: true}

	for _, tc := range []struct {
		name    string
		args    []string
		scheme  string
		client  *tls.Config
		token   string
		path    string
		wantErr string
	}{
		{name: "plain", args: []string{"--metrics-secure=false"}, scheme: "http", path: "/metrics"},
		{name: "plain has no pprof", args: []string{"--metrics-secure=false"}, scheme: "http", path: "/debug/pprof/cmdline", wantErr: "404"},
		{name: "enable-pprof", args: []string{"--metrics-secure=false", "--enable-pprof"}, scheme: "http", path: "/debug/pprof/cmdline"},
		{name: "plain refuses TLS", args: []string{"--metrics-secure=false"}, scheme: "https", client: &tls.Config{RootCAs: roots}, path: "/metrics", wantErr: "server gave HTTP response"},
		{name: "secure by default", scheme: "https", client: selfSigned, token: reader, path: "/metrics"},
		{name: "secure refuses plain HTTP", scheme: "http", token: reader, path: "/metrics", wantErr: "400"},
		{name: "secure refuses no token", scheme: "https", client: selfSigned, path: "/metrics", wantErr: "401"},
		{name: "secure refuses a token without the role", scheme: "https", client: selfSigned, token: stranger, path: "/metrics", wantErr: "403"},
		{name: "certificate", args: []string{"--metrics-cert-dir=" + certDir}, scheme: "https", client: &tls.Config{RootCAs: roots}, token: reader, path: "/metrics"},
		{
			name: "certificate refuses TLS 1.2 by default", args: []string{"--metrics-cert-dir=" + certDir}, scheme: "https",
			client: &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS12}, token: reader, path: "/metrics", wantErr: "protocol version",
		},
		{
			name: "certificate with tls-min-version", args: []string{"--metrics-cert-dir=" + certDir, "--tls-min-version=VersionTLS12"}, scheme: "https",
			client: &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS12}, token: reader, path: "/metrics",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := testenv.FreePort(t)
			o := options(t, append(tc.args, fmt.Sprintf("--port=%d", port))...)
			httpClient, err := rest.HTTPClientFor(env.Config)
			if err != nil {
				t.Fatal(err)
			}
			server, err := metricsserver.NewServer(o.ManagerOptions().Metrics, env.Config, httpClient)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- server.Start(ctx) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("metrics server: %v", err)
				}
			})

			client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc.client, DisableKeepAlives: true}, Timeout: 10 * time.Second}
			url := fmt.Sprintf("%s://127.0.0.1:%d%s", tc.scheme, port, tc.path)
			var body string
			testenv.Eventually(t, "the metrics server listening", func() error {
				conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
				if err == nil {
					conn.Close()
				}
				return err
			})
			req, err := http.NewRequest(http.MethodGet, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := client.Do(req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = string(b)
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("%s: %s", resp.Status, body)
				}
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("GET %s: %v, want an error containing %q", url, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("GET %s: %v", url, err)
			}
			if tc.path == "/metrics" && !strings.Contains(body, "# TYPE") {
				t.Errorf("GET %s: no metrics in\n%.200s", url, body)
			}
		})
	}
}

// metricsTokens returns the token of a ServiceAccount bound to the manifest's metrics reader
// role, and one of an account without it.
func metricsTokens(t *testing.T, env *testenv.Env) (reader, stranger string) {
	t.Helper()
	ctx := context.Background()
	reader, err := env.MetricsReaderToken(ctx, "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "stranger"}}
	if err := env.Client.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	cfg, err := env.ServiceAccountConfig(ctx, sa.Namespace, sa.Name)
	if err != nil {
		t.Fatal(err)
	}
	return reader, cfg.BearerToken
}

// --pprof-bind-address serves net/http/pprof on its own listener.
func TestPprofBindAddress(t *testing.T) {
	env := testenv.Get(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	o := options(t, "--port=0", "--health-probe-port=0", "--pprof-bind-address="+addr)
	mgr, err := k8s.NewManager(env.Config, o.ManagerOptions())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	testenv.Eventually(t, "pprof answering on "+addr, func() error {
		resp, err := http.Get("http://" + addr + "/debug/pprof/cmdline")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	})
}
