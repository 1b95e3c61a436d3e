// SPDX-License-Identifier: Apache-2.0

package upstreamflags

import (
	"bytes"
	"crypto/tls"
	"flag"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/maglb/maglb/internal/webhookcert"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    func(Flags) bool
		wantErr string
	}{
		{args: nil, want: func(f Flags) bool { return f.TLSMinVersion == 0 && f.CipherSuites == nil && f.CurvePreferences == nil }},
		{args: []string{"--tls-min-version=VersionTLS12"}, want: func(f Flags) bool { return f.TLSMinVersion == tls.VersionTLS12 }},
		{args: []string{"--tls-min-version=VersionTLS13"}, want: func(f Flags) bool { return f.TLSMinVersion == tls.VersionTLS13 }},
		{args: []string{"--tls-min-version=TLS12"}, wantErr: "unknown TLS version"},
		{args: []string{"--tls-cipher-suites=TLS_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}, want: func(f Flags) bool {
			return slices.Equal(f.CipherSuites, []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256})
		}},
		{args: []string{"--tls-cipher-suites=TLS_RSA_WITH_AES_128_CBC_SHA256,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"}, want: func(f Flags) bool {
			return slices.Equal(f.CipherSuites, []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256})
		}},
		{args: []string{"--tls-cipher-suites=TLS_NO_SUCH_SUITE"}, wantErr: "unknown TLS cipher suite"},
		{args: []string{"--tls-curve-preferences=29, 23,4588"}, want: func(f Flags) bool {
			return slices.Equal(f.CurvePreferences, []tls.CurveID{tls.X25519, tls.CurveP256, tls.X25519MLKEM768})
		}},
		{args: []string{"--tls-curve-preferences=X25519"}, wantErr: "invalid curve preference"},
		{args: []string{"--tls-curve-preferences=0"}, wantErr: "invalid curve preference"},
		{args: []string{"--tls-curve-preferences=29,29"}, wantErr: "duplicate curve preference"},
		{args: []string{"--tls-curve-preferences=7"}, wantErr: "not supported"},
		{args: []string{"--gratuitous-arp-interval=30"}, want: func(f Flags) bool { return f.GratuitousARPInterval == 30*time.Second }},
		{args: []string{"--gratuitous-arp-interval=0"}, want: func(f Flags) bool { return f.GratuitousARPInterval == 0 }},
		{args: []string{"--gratuitous-arp-interval=-1"}, wantErr: "between 0 and"},
		{args: []string{"--gratuitous-arp-interval=2147483648"}, wantErr: "between 0 and"},
		{args: []string{"--gratuitous-arp-interval=1s"}, wantErr: "between 0 and"},
		{args: []string{"--metrics-cert-dir=/etc/metrics", "--pprof-bind-address=127.0.0.1:6060", "--enable-pprof"}, want: func(f Flags) bool {
			return f.MetricsCertDir == "/etc/metrics" && f.PprofBindAddress == "127.0.0.1:6060" && f.EnablePprof
		}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var f Flags
			fs := flag.NewFlagSet("speaker", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			f.Bind(fs, Speaker)
			err := fs.Parse(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(f) {
				t.Errorf("parsed %+v", f)
			}
		})
	}
}

// Each ignored setting is logged once, with its reason, however many times it is given.
func TestLogIgnoredOnce(t *testing.T) {
	t.Setenv("METALLB_ML_BIND_ADDR", "10.244.0.7")
	var f Flags
	fs := flag.NewFlagSet("speaker", flag.ContinueOnError)
	f.Bind(fs, Speaker)
	if err := fs.Parse([]string{"--ml-bindaddr=10.244.0.8", "--ml-wan-config", "--ml-wan-config=false"}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	f.LogIgnored(log.NewLogfmtLogger(&buf))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines (ml-bindaddr with its variable, ml-wan-config); logged:\n%s", buf.String())
	}
	for i, want := range []string{"flag=--ml-bindaddr env=METALLB_ML_BIND_ADDR reason=", "flag=--ml-wan-config reason="} {
		if !strings.Contains(lines[i], want) || !strings.Contains(lines[i], "memberlist is not used") {
			t.Errorf("line %d %q, want it to contain %q and the reason", i, lines[i], want)
		}
	}
}

// The webhook server's TLS follows the flags: TLS 1.3 only by default, HTTP/1.1 unless
// --webhook-http2, and the minimum version, cipher suites and curves asked for.
func TestWebhookTLS(t *testing.T) {
	cert := newCertificate(t)
	for _, tc := range []struct {
		name     string
		args     []string
		client   *tls.Config
		wantErr  bool
		wantALPN string
	}{
		{name: "default refuses TLS 1.2", client: &tls.Config{MaxVersion: tls.VersionTLS12}, wantErr: true},
		{name: "default speaks TLS 1.3 over HTTP/1.1", client: &tls.Config{NextProtos: []string{"h2", "http/1.1"}}, wantALPN: "http/1.1"},
		{name: "webhook-http2", args: []string{"--webhook-http2"}, client: &tls.Config{NextProtos: []string{"h2", "http/1.1"}}, wantALPN: "h2"},
		{name: "TLS 1.2 allowed", args: []string{"--tls-min-version=VersionTLS12"}, client: &tls.Config{MaxVersion: tls.VersionTLS12}},
		{
			name:   "cipher suite not offered",
			args:   []string{"--tls-min-version=VersionTLS12", "--tls-cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"},
			client: &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, wantErr: true,
		},
		{
			name:   "cipher suite offered",
			args:   []string{"--tls-min-version=VersionTLS12", "--tls-cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"},
			client: &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}},
		},
		{name: "curve not offered", args: []string{"--tls-curve-preferences=23"}, client: &tls.Config{CurvePreferences: []tls.CurveID{tls.X25519}}, wantErr: true},
		{name: "curve offered", args: []string{"--tls-curve-preferences=23"}, client: &tls.Config{CurvePreferences: []tls.CurveID{tls.CurveP256}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f Flags
			fs := flag.NewFlagSet("controller", flag.ContinueOnError)
			f.Bind(fs, Controller)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			server := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}} // as controller-runtime's
			for _, opt := range f.WebhookTLSOpts() {
				opt(server)
			}
			state, err := handshake(t, server, tc.client)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("handshake succeeded (%s), want it refused", tls.VersionName(state.Version))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if state.NegotiatedProtocol != tc.wantALPN {
				t.Errorf("negotiated %q, want %q", state.NegotiatedProtocol, tc.wantALPN)
			}
		})
	}
}

// newCertificate returns a serving certificate (ECDSA P-256) for loopback.
func newCertificate(t *testing.T) tls.Certificate {
	t.Helper()
	b, err := webhookcert.Generate(webhookcert.Subject{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(b.Cert, b.Key)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// handshake runs a TLS handshake between server and client over loopback.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		_ = conn.(*tls.Conn).Handshake()
	}()
	client = client.Clone()
	client.InsecureSkipVerify = true // the certificate is not what is tested
	conn, err := tls.Dial("tcp", l.Addr().String(), client)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}
