// SPDX-License-Identifier: Apache-2.0

// Package upstreamflags accepts the flags and environment variables that upstream MetalLB's
// controller and speaker define (v0.15 and v0.16) and that MagLB's binaries do not define
// elsewhere, so that upstream's manifests and Helm chart start MagLB's images unchanged. The
// TLS, metrics certificate, pprof, webhook HTTP/2 and gratuitous ARP settings are honoured;
// the rest (memberlist, FRR, frr-k8s, ...) is accepted and reported once, with the reason, as
// ignored.
package upstreamflags

import (
	"crypto/tls"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// Component is the binary whose upstream flags are bound: each accepts its upstream
// counterpart's flags only, so a flag neither defines still fails.
type Component int

const (
	Controller Component = iota + 1
	Speaker
)

// Flags are the values of the honoured settings once the flag set is parsed.
type Flags struct {
	// TLSMinVersion, CipherSuites and CurvePreferences configure the webhook server and the
	// metrics served over TLS. TLSMinVersion 0 means upstream v0.16's default, TLS 1.3.
	TLSMinVersion    uint16
	CipherSuites     []uint16
	CurvePreferences []tls.CurveID
	// MetricsCertDir holds the tls.crt and tls.key of metrics over TLS; empty: self-signed.
	MetricsCertDir string
	// PprofBindAddress serves net/http/pprof on its own listener (upstream v0.16).
	PprofBindAddress string
	// EnablePprof serves net/http/pprof beside /metrics (upstream v0.15).
	EnablePprof bool
	// WebhookHTTP2 lets the webhook server negotiate HTTP/2 (controller).
	WebhookHTTP2 bool
	// GratuitousARPInterval, when positive, repeats gratuitous ARP and unsolicited NA for
	// every announced IP at this interval (speaker).
	GratuitousARPInterval time.Duration

	component Component
	fs        *flag.FlagSet
}

// setting is one upstream flag and/or environment variable MagLB accepts and ignores.
type setting struct {
	flag    string // "" when upstream only reads the environment variable
	env     string // "" when the flag has no environment variable
	boolean bool
	in      []Component
	why     string
}

const (
	whyMemberlist = "memberlist is not used: speakers detect each other's failure through Leases (maglb-speaker-<node>)"
	whyFRR        = "MagLB speaks BGP with its embedded implementation, not FRR"
	whyFRRK8s     = "MagLB speaks BGP with its embedded implementation, not frr-k8s"
)

// ignoredSettings are the upstream settings that have no meaning in MagLB.
var ignoredSettings = []setting{
	{flag: "ml-secret-name", env: "METALLB_ML_SECRET_NAME", in: []Component{Controller}, why: whyMemberlist},
	{flag: "deployment", env: "METALLB_DEPLOYMENT", in: []Component{Controller}, why: whyMemberlist + "; upstream names the memberlist Secret's owner with it"},
	{flag: "pod-name", env: "METALLB_POD_NAME", in: []Component{Speaker}, why: "MagLB identifies a speaker by its node name"},
	{env: "METALLB_BGP_TYPE", in: []Component{Controller}, why: "the controller admits what any BGP implementation supports; each speaker reports what its own cannot do"},
	{flag: "ml-bindaddr", env: "METALLB_ML_BIND_ADDR", in: []Component{Speaker}, why: whyMemberlist},
	{flag: "ml-bindport", env: "METALLB_ML_BIND_PORT", in: []Component{Speaker}, why: whyMemberlist},
	{flag: "ml-labels", env: "METALLB_ML_LABELS", in: []Component{Speaker}, why: whyMemberlist},
	{flag: "ml-secret-key-path", env: "METALLB_ML_SECRET_KEY_PATH", in: []Component{Speaker}, why: whyMemberlist},
	{flag: "ml-wan-config", boolean: true, in: []Component{Speaker}, why: whyMemberlist},
	{flag: "frrk8s-namespace", env: "FRRK8S_NAMESPACE", in: []Component{Speaker}, why: whyFRRK8s},
	{flag: "frrk8s-secret-passthrough", boolean: true, in: []Component{Speaker}, why: whyFRRK8s},
	{flag: "bgp-debounce-timeout", env: "METALLB_BGP_DEBOUNCE_TIMEOUT", in: []Component{Speaker}, why: "it debounces FRR configuration reloads; the embedded BGP speaker applies each change directly, with nothing to reload"},
	{env: "FRR_LOGGING_LEVEL", in: []Component{Speaker}, why: whyFRR},
	{env: "FRR_CONFIG_FILE", in: []Component{Speaker}, why: whyFRR},
	{env: "FRR_RELOADER_PID_FILE", in: []Component{Speaker}, why: whyFRR},
}

// Bind registers c's upstream flags on fs. Ignored string flags default to their upstream
// environment variable, as upstream's do.
func (f *Flags) Bind(fs *flag.FlagSet, c Component) {
	f.component, f.fs = c, fs
	fs.Func("tls-min-version", "minimum TLS version of the webhook server and of metrics over TLS: VersionTLS12 or VersionTLS13 (default VersionTLS13)", func(s string) (err error) {
		f.TLSMinVersion, err = parseTLSVersion(s)
		return err
	})
	fs.Func("tls-cipher-suites", "comma-separated TLS cipher suites (Go's names); they apply to TLS 1.2 only (default: Go's)", func(s string) (err error) {
		f.CipherSuites, err = parseCipherSuites(s)
		return err
	})
	fs.Func("tls-curve-preferences", "comma-separated numeric TLS CurveID values, as crypto/tls numbers them (default: Go's)", func(s string) (err error) {
		f.CurvePreferences, err = parseCurvePreferences(s)
		return err
	})
	fs.StringVar(&f.MetricsCertDir, "metrics-cert-dir", "", "directory holding the tls.crt and tls.key /metrics is served with (default: a self-signed certificate)")
	fs.StringVar(&f.PprofBindAddress, "pprof-bind-address", "", "address serving net/http/pprof (e.g. 127.0.0.1:6060); empty disables it")
	fs.BoolVar(&f.EnablePprof, "enable-pprof", false, "serve net/http/pprof under /debug/pprof/ on the metrics port")
	switch c {
	case Controller:
		fs.BoolVar(&f.WebhookHTTP2, "webhook-http2", false, "let the webhook server negotiate HTTP/2 (off by default, as upstream)")
	case Speaker:
		fs.Func("gratuitous-arp-interval", "interval in seconds of periodic gratuitous ARP/NDP announcements of every announced IP; 0 disables them", func(s string) error {
			seconds, err := strconv.Atoi(s)
			if err != nil || seconds < 0 || seconds > math.MaxInt32 {
				return fmt.Errorf("%q is not a number of seconds between 0 and %d", s, math.MaxInt32)
			}
			f.GratuitousARPInterval = time.Duration(seconds) * time.Second
			return nil
		})
	}
	for _, s := range ignoredSettings {
		if s.flag == "" || !slices.Contains(s.in, c) {
			continue
		}
		usage := "accepted for compatibility with upstream MetalLB and ignored: " + s.why
		if s.boolean {
			fs.Bool(s.flag, false, usage)
		} else {
			fs.String(s.flag, os.Getenv(s.env), usage)
		}
	}
}

// Validate checks the honoured settings that parsing alone cannot: the pprof address and
// the metrics certificate's files.
func (f *Flags) Validate() error {
	if f.PprofBindAddress != "" {
		_, port, err := net.SplitHostPort(f.PprofBindAddress)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			return fmt.Errorf("--pprof-bind-address %q is not a host:port address", f.PprofBindAddress)
		}
	}
	if f.MetricsCertDir != "" {
		for _, name := range []string{"tls.crt", "tls.key"} {
			if _, err := os.Stat(filepath.Join(f.MetricsCertDir, name)); err != nil {
				return fmt.Errorf("--metrics-cert-dir %s: %w", f.MetricsCertDir, err)
			}
		}
	}
	return nil
}

// LogIgnored logs, once per setting, the upstream flags given and environment variables set
// that MagLB ignores, and why. Call it once at start, after the flag set is parsed.
func (f *Flags) LogIgnored(logger log.Logger) {
	given := map[string]bool{}
	if f.fs != nil {
		f.fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	}
	for _, s := range ignoredSettings {
		set := given[s.flag] || s.env != "" && os.Getenv(s.env) != ""
		if !set || !slices.Contains(s.in, f.component) {
			continue
		}
		keyvals := []any{"op", "startup", "msg", "upstream MetalLB setting accepted and ignored"}
		if s.flag != "" {
			keyvals = append(keyvals, "flag", "--"+s.flag)
		}
		if s.env != "" {
			keyvals = append(keyvals, "env", s.env)
		}
		level.Info(logger).Log(append(keyvals, "reason", s.why)...)
	}
}

// TLSOpt applies the TLS flags to a server's configuration.
func (f *Flags) TLSOpt(c *tls.Config) {
	c.MinVersion = f.TLSMinVersion
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS13
	}
	if f.CipherSuites != nil {
		c.CipherSuites = f.CipherSuites
	}
	if f.CurvePreferences != nil {
		c.CurvePreferences = f.CurvePreferences
	}
}

// WebhookTLSOpts configures the webhook server: the TLS flags, and HTTP/1.1 only unless
// --webhook-http2 (HTTP/2 stays off by default, as upstream, against its rapid-reset attacks).
func (f *Flags) WebhookTLSOpts() []func(*tls.Config) {
	return []func(*tls.Config){
		func(c *tls.Config) {
			if !f.WebhookHTTP2 {
				c.NextProtos = []string{"http/1.1"}
			}
		},
		f.TLSOpt,
	}
}

var tlsVersions = map[string]uint16{
	"VersionTLS10": tls.VersionTLS10,
	"VersionTLS11": tls.VersionTLS11,
	"VersionTLS12": tls.VersionTLS12,
	"VersionTLS13": tls.VersionTLS13,
}

// parseTLSVersion accepts the names upstream accepts (Kubernetes' --tls-min-version values).
func parseTLSVersion(s string) (uint16, error) {
	if s == "" {
		return 0, nil
	}
	if v, ok := tlsVersions[s]; ok {
		return v, nil
	}
	return 0, fmt.Errorf("unknown TLS version %q: use VersionTLS12 or VersionTLS13", s)
}

// cipherSuiteAliases are the older names Kubernetes (and so upstream) also accepts.
var cipherSuiteAliases = map[string]uint16{
	"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

func parseCipherSuites(s string) ([]uint16, error) {
	if s == "" {
		return nil, nil
	}
	known := map[string]uint16{}
	for _, suite := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		known[suite.Name] = suite.ID
	}
	var ids []uint16
	for name := range strings.SplitSeq(s, ",") {
		name = strings.TrimSpace(name)
		id, ok := known[name]
		if !ok {
			if id, ok = cipherSuiteAliases[name]; !ok {
				return nil, fmt.Errorf("unknown TLS cipher suite %q", name)
			}
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// parseCurvePreferences reads numeric CurveIDs, checked as upstream does: in range, no
// duplicates, known to this Go version.
func parseCurvePreferences(s string) ([]tls.CurveID, error) {
	if s == "" {
		return nil, nil
	}
	var curves []tls.CurveID
	for part := range strings.SplitSeq(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(part), 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("invalid curve preference %q: a numeric CurveID between 1 and %d", part, math.MaxUint16)
		}
		curve := tls.CurveID(n)
		if slices.Contains(curves, curve) {
			return nil, fmt.Errorf("duplicate curve preference %d", n)
		}
		if strings.HasPrefix(curve.String(), "CurveID(") {
			return nil, fmt.Errorf("curve preference %d is not supported by this Go version", n)
		}
		curves = append(curves, curve)
	}
	return curves, nil
}
