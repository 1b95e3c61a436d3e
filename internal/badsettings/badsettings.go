// SPDX-License-Identifier: Apache-2.0

// Package badsettings checks that a built binary refuses bad flags and environment
// variables before it starts anything: for each bad value it must exit non-zero with a
// message naming the setting and the value, without having bound a port, sent a request to
// the API server or pinned an eBPF object. The flags come from the binary's own --help, so a
// flag without a row fails the check.
package badsettings

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maglb/maglb/internal/upstreamflags/upstreamsrc"
)

// A Row is a setting (a flag, an environment variable, or both) and a value the binary
// must refuse, or, when Bad is empty, Accepted: why no value is refused.
type Row struct {
	Flag     string // without dashes; "" for an environment variable alone
	Env      string
	Bad      string
	Accepted string
}

// Binary is a built program and how to start it with valid settings.
type Binary struct {
	Path string
	// Args start it with valid settings, except those the check gives: --kubeconfig,
	// the PortFlags and PinPathFlag.
	Args []string
	// PortFlags name the ports it listens on; the check holds each, so that a binary that
	// listens before refusing fails with "address already in use" instead.
	PortFlags []string
	// PinPathFlag, when set, names the bpffs directory flag: it must not exist afterwards.
	PinPathFlag string
}

// Flags returns the names of the flags `Path Args... --help` lists.
func (b Binary) Flags(t *testing.T) []string {
	t.Helper()
	out, _ := exec.Command(b.Path, append(slices.Clone(b.Args), "--help")...).CombinedOutput()
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllSubmatch(out, -1) {
		names = append(names, string(m[1]))
	}
	if len(names) == 0 {
		t.Fatalf("%s --help lists no flags:\n%s", b.Path, out)
	}
	return names
}

// Check runs b once per row with a bad value and fails t for each the binary does not
// refuse cleanly; it also fails t for every flag of b without a row, and every row of a
// flag b does not have.
func Check(t *testing.T, b Binary, rows []Row) {
	t.Helper()
	flags := b.Flags(t)
	for _, name := range flags {
		if !slices.ContainsFunc(rows, func(r Row) bool { return r.Flag == name }) {
			t.Errorf("--%s has no row: add one with a bad value, or say why every value is accepted", name)
		}
	}
	for _, r := range rows {
		if r.Flag != "" && !slices.Contains(flags, r.Flag) {
			t.Errorf("row for --%s, which the binary does not have", r.Flag)
		}
		if (r.Bad == "") == (r.Accepted == "") {
			t.Errorf("row %+v: give either a bad value or why every value is accepted", r)
		}
	}
	for _, r := range rows {
		if r.Bad == "" {
			continue
		}
		if r.Flag != "" {
			t.Run("--"+r.Flag+"="+r.Bad, func(t *testing.T) { b.refuses(t, []string{"--" + r.Flag + "=" + r.Bad}, nil, r.Flag, r.Bad) })
		}
		if r.Env != "" {
			// Without the flag, which would take precedence over the variable.
			b := b
			b.Args = slices.DeleteFunc(slices.Clone(b.Args), func(arg string) bool { return r.Flag != "" && strings.HasPrefix(arg, "--"+r.Flag+"=") })
			t.Run(r.Env+"="+r.Bad, func(t *testing.T) { b.refuses(t, nil, []string{r.Env + "=" + r.Bad}, r.Env, r.Bad) })
		}
	}
}

// CheckEnv fails t for every environment variable of the upstream table without a row,
// and for every row accepting any value of an upstream setting the binary honours.
func CheckEnv(t *testing.T, upstream []upstreamsrc.Setting, rows []Row) {
	t.Helper()
	for _, s := range upstream {
		i := slices.IndexFunc(rows, func(r Row) bool { return r.Flag == s.Flag && r.Env == s.Env })
		switch {
		case i < 0:
			t.Errorf("upstream setting %+v has no row", s)
		case rows[i].Accepted != "" && s.Handling != upstreamsrc.Ignored:
			t.Errorf("row for %q %q accepts any value, but the setting is honoured", s.Flag, s.Env)
		}
	}
}

// CheckKubeconfigs runs b with a kubeconfig that is garbage, one that is missing, and one
// whose server does not answer: each time it must exit non-zero at once, naming the file or
// the server.
func CheckKubeconfigs(t *testing.T, b Binary) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := l.Addr().String()
	l.Close() // nothing listens there any more
	unreachable := filepath.Join(dir, "unreachable")
	for path, content := range map[string]string{garbage: "clusters: [\x00", unreachable: Kubeconfig("https://" + server)} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct{ name, path, want string }{
		{"garbage", garbage, garbage},
		{"missing", missing, missing},
		{"unreachable server", unreachable, server},
	} {
		t.Run(tc.name, func(t *testing.T) { b.refuses(t, []string{"--kubeconfig=" + tc.path}, nil, tc.want) })
	}
}

// refuses runs b with the extra args and environment and checks that it refuses to start,
// with a message containing each of want.
func (b Binary) refuses(t *testing.T, args, env []string, want ...string) {
	out, err, requests := b.Run(t, args, env)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() <= 0 {
		t.Fatalf("want a non-zero exit, got %v; output:\n%s", err, out)
	}
	if requests > 0 {
		t.Errorf("%d requests reached the API server before the binary refused to start", requests)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("the message does not name %q:\n%s", w, out)
		}
	}
}

// Run runs b with valid settings, then args and env, until it exits (at most 30 s); it
// returns its output, how it ended, and how many requests the API server it was given got.
// It fails t if b pinned anything.
func (b Binary) Run(t *testing.T, args, env []string) (output string, err error, apiRequests int64) {
	t.Helper()
	var requests atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		http.Error(w, "this API server only counts requests", http.StatusServiceUnavailable)
	}))
	defer api.Close()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(Kubeconfig(api.URL)), 0o600); err != nil {
		t.Fatal(err)
	}

	full := slices.Clone(b.Args)
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "KUBECONFIG=") }) {
		full = append(full, "--kubeconfig="+kubeconfig)
	}
	for _, name := range b.PortFlags {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		full = append(full, fmt.Sprintf("--%s=%d", name, l.Addr().(*net.TCPAddr).Port))
	}
	pins := filepath.Join(dir, "pins")
	if b.PinPathFlag != "" {
		full = append(full, "--"+b.PinPathFlag+"="+pins)
	}
	full = append(full, args...)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.Path, full...)
	cmd.Env = append(CleanEnv(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s still running after 30 s: it started instead of refusing; output:\n%s", b.Path, strings.Join(full, " "), out.String())
	}
	if _, statErr := os.Stat(pins); b.PinPathFlag != "" && statErr == nil {
		t.Errorf("%s was created: the binary pinned before refusing", pins)
	}
	return out.String(), err, requests.Load()
}

// CleanEnv is the test's environment without the variables MetalLB's and MagLB's binaries
// read, so that only what a row sets applies.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == "KUBECONFIG" || name == "KUBERNETES_SERVICE_HOST" || strings.HasPrefix(name, "METALLB_") || strings.HasPrefix(name, "FRR") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Kubeconfig is a kubeconfig for the API server at url, without credentials.
func Kubeconfig(url string) string {
	return `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: ` + strconv.Quote(url) + `}}]
users: [{name: u, user: {}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
}
