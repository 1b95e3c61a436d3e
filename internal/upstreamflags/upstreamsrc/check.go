// SPDX-License-Identifier: Apache-2.0

package upstreamsrc

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/go-kit/log"
)

// Handling is what MagLB does with an upstream setting.
type Handling string

const (
	Honoured Handling = "honoured"
	// Ignored settings are accepted and logged once at start, with the reason.
	Ignored Handling = "ignored"
)

// Setting is one upstream flag and/or environment variable of a binary.
type Setting struct {
	Flag     string // without dashes; "" for an environment variable alone
	Env      string
	Versions []string // the releases defining it
	Handling Handling
	// Value is a valid value for the flag and the variable; "" for a boolean flag.
	Value string
	// With are the other arguments under which it is honoured (none: always).
	With []string
}

// Binary is the MagLB binary under test.
type Binary struct {
	Component string // "controller" or "speaker", as upstream's
	// Flags returns a fresh flag set with every flag of the binary, and the function that
	// logs the ignored settings once it is parsed.
	Flags func() (fs *flag.FlagSet, logIgnored func(log.Logger))
}

// chartSamples stand for the Helm values in templated arguments.
var chartSamples = map[string]string{
	"port":                    "7472",
	"health-probe-port":       "17472",
	"log-level":               "info",
	"lb-class":                "example-class",
	"webhook-mode":            "enabled",
	"tls-min-version":         "VersionTLS12",
	"tls-cipher-suites":       "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"tls-curve-preferences":   "29,23",
	"bgp-debounce-timeout":    "3000",
	"gratuitous-arp-interval": "30",
	"frrk8s-namespace":        "frr-k8s-system",
}

// CheckSettings checks table against upstream's source of every version in Versions (the
// table lists exactly the flags and environment variables upstream's binary defines), and
// the binary against table: each flag is defined, parses its value, and is logged as ignored
// exactly when the table says so; the same for each environment variable.
func CheckSettings(t *testing.T, b Binary, table []Setting) {
	for _, version := range Versions {
		t.Run("table matches upstream "+version, func(t *testing.T) {
			dir := moduleDir(t, version)
			flags, env, err := Defined(dir, b.Component)
			if err != nil {
				t.Fatal(err)
			}
			var wantFlags, wantEnv []string
			for _, s := range table {
				if slices.Contains(s.Versions, version) {
					if s.Flag != "" {
						wantFlags = append(wantFlags, s.Flag)
					}
					if s.Env != "" {
						wantEnv = append(wantEnv, s.Env)
					}
				}
			}
			slices.Sort(flags)
			slices.Sort(wantFlags)
			slices.Sort(wantEnv)
			if !slices.Equal(flags, wantFlags) {
				t.Errorf("upstream's %s defines flags\n%v\nthe table lists\n%v", b.Component, flags, wantFlags)
			}
			if !slices.Equal(env, wantEnv) {
				t.Errorf("upstream's %s reads environment variables\n%v\nthe table lists\n%v", b.Component, env, wantEnv)
			}
		})
	}
	for _, s := range table {
		if s.Flag != "" {
			t.Run("--"+s.Flag, func(t *testing.T) {
				arg := "--" + s.Flag
				if s.Value != "" {
					arg += "=" + s.Value
				}
				logged := parseAndLog(t, b, append([]string{arg}, s.With...))
				checkLogged(t, logged, "flag=--"+s.Flag, s.Handling)
			})
		}
		if s.Env != "" {
			t.Run(s.Env, func(t *testing.T) {
				t.Setenv(s.Env, s.Value)
				logged := parseAndLog(t, b, s.With)
				checkLogged(t, logged, "env="+s.Env, s.Handling)
			})
		}
	}
}

// CheckUpstreamArgs checks that the binary parses the arguments upstream's manifests and
// Helm chart pass it, and that their environment variables are in table.
func CheckUpstreamArgs(t *testing.T, b Binary, table []Setting) {
	for _, version := range Versions {
		dir := moduleDir(t, version)
		t.Run("metallb-native.yaml "+version, func(t *testing.T) {
			c, err := ManifestContainer(dir, b.Component)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Args) == 0 {
				t.Fatal("no arguments found")
			}
			parse(t, b, c.Args)
			for _, e := range c.Env {
				if !slices.ContainsFunc(table, func(s Setting) bool { return s.Env == e.Name }) {
					t.Errorf("the manifest sets %s, which the table does not list", e.Name)
				}
			}
		})
		t.Run("Helm chart "+version, func(t *testing.T) {
			args, err := ChartArgs(dir, b.Component, chartSamples)
			if err != nil {
				t.Fatal(err)
			}
			if len(args) == 0 {
				t.Fatal("no arguments found")
			}
			parse(t, b, args)
		})
	}
}

func moduleDir(t *testing.T, version string) string {
	t.Helper()
	dir, err := Dir(version)
	if err != nil {
		t.Fatalf("upstream's source: %v", err)
	}
	return dir
}

func parse(t *testing.T, b Binary, args []string) {
	t.Helper()
	if err := Parse(b, args...); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
}

func parseAndLog(t *testing.T, b Binary, args []string) string {
	t.Helper()
	fs, logIgnored := b.Flags()
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
	var buf bytes.Buffer
	logIgnored(log.NewLogfmtLogger(&buf))
	return buf.String()
}

func checkLogged(t *testing.T, logged, key string, h Handling) {
	t.Helper()
	var lines []string
	for line := range strings.Lines(logged) {
		if strings.Contains(line, key+" ") || strings.HasSuffix(strings.TrimSpace(line), key) {
			lines = append(lines, line)
		}
	}
	switch {
	case h == Ignored && (len(lines) != 1 || !strings.Contains(lines[0], "ignored") || !strings.Contains(lines[0], "reason=")):
		t.Errorf("want one line saying %s is ignored and why; logged:\n%s", key, logged)
	case h == Honoured && len(lines) != 0:
		t.Errorf("%s is honoured, yet logged:\n%s", key, logged)
	}
}

// Parse parses args with a fresh flag set of the binary.
func Parse(b Binary, args ...string) error {
	fs, _ := b.Flags()
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s: %w", b.Component, err)
	}
	return nil
}
