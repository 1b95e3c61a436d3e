// SPDX-License-Identifier: Apache-2.0

package main

// Running upstream MetalLB's controller and MagLB's side by side, each against an API server
// of its own, for the differential test and the end-to-end benchmark.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/testenv"
)

// upstreamMetalLBVersion is the release the differential test and the benchmark compare with,
// built by hack/build-upstream-metallb.sh.
const upstreamMetalLBVersion = "0.15.2"

// controllerImpl is one of the two controllers under comparison.
type controllerImpl struct {
	name string
	// start runs the controller against env, logging to logPath, until stop is called or
	// the test ends. It returns once the controller is serving.
	start func(tb testing.TB, env *testenv.Env, logPath string) running
}

// running is a started controller.
type running struct {
	stop func()
	pid  int // the process the controller runs in: ours runs in the test's
}

// implementations returns upstream's controller and ours, upstream first: it is the reference.
// Without upstream's binary the test skips, or fails when testenv.Required.
func implementations(tb testing.TB) []controllerImpl {
	tb.Helper()
	bin := upstreamMetalLB(tb)
	return []controllerImpl{
		{name: "upstream", start: func(tb testing.TB, env *testenv.Env, logPath string) running {
			return startUpstreamController(tb, bin, env, logPath)
		}},
		{name: "maglb", start: startMagLBController},
	}
}

// upstreamMetalLB locates upstream's controller binary: $MAGLB_UPSTREAM_METALLB, else where
// `tasks.py` builds it in the per-user cache.
func upstreamMetalLB(tb testing.TB) string {
	tb.Helper()
	path := os.Getenv("MAGLB_UPSTREAM_METALLB")
	if path == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			tb.Fatalf("no user cache directory to find upstream MetalLB in: %v", err)
		}
		path = filepath.Join(cache, "maglb", "upstream-metallb-v"+upstreamMetalLBVersion, "bin", "metallb-controller")
	}
	if _, err := os.Stat(path); err != nil {
		msg := fmt.Sprintf("upstream MetalLB v%s controller not found (build it with hack/build-upstream-metallb.sh, or set MAGLB_UPSTREAM_METALLB): %v", upstreamMetalLBVersion, err)
		testenv.Unavailable(tb, msg)
	}
	return path
}

// startAPIServer starts an API server of the test's own (the package's shared one carries
// other tests' objects), stopped when the test ends.
func startAPIServer(tb testing.TB) *testenv.Env {
	tb.Helper()
	testenv.Get(tb) // skips, or fails when required, where no API server can start
	// envtest logs through controller-runtime's logger, which nothing in these tests sets:
	// without this, it prints a warning with a stack trace once the process is 30 s old.
	ctrllog.SetLogger(logr.Discard())
	env, err := testenv.Start()
	if err != nil {
		tb.Fatalf("starting an API server: %v", err)
	}
	tb.Cleanup(func() {
		if err := env.Stop(); err != nil {
			tb.Errorf("stopping the API server: %v", err)
		}
	})
	createNamespace(tb, env, metallbNamespace, nil)
	return env
}

func createNamespace(tb testing.TB, env *testenv.Env, name string, labels map[string]string) {
	tb.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := env.Client.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatalf("creating namespace %s: %v", name, err)
	}
}

// startUpstreamController runs upstream's controller binary out of cluster, as
// ENVIRONMENT.md describes: no webhooks, metrics on a free port.
func startUpstreamController(tb testing.TB, bin string, env *testenv.Env, logPath string) running {
	tb.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	port := testenv.FreePort(tb)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin,
		"--kubeconfig", env.Kubeconfig,
		"--namespace", metallbNamespace,
		"--webhook-mode=disabled",
		"--port", strconv.Itoa(port),
		"--log-level", "info",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		cancel()
		logFile.Close()
		tb.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	reported := false
	reportExit := func() {
		if !reported {
			reported = true
			tb.Errorf("upstream controller exited: %v\n%s", waitErr, logTail(logPath, 30))
		}
	}
	stop := sync.OnceFunc(func() {
		// Killed by its id; an exit before that is a crash worth reporting.
		select {
		case <-exited:
			reportExit()
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		cancel()
		logFile.Close()
	})
	tb.Cleanup(stop)
	testenv.Eventually(tb, "upstream controller serving metrics", func() error {
		select {
		case <-exited:
			reportExit()
			tb.FailNow()
		default:
		}
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	})
	return running{stop: stop, pid: cmd.Process.Pid}
}

// startMagLBController runs our controller in-process, configured as upstream's above: no
// webhooks and, as upstream, no leader election.
func startMagLBController(tb testing.TB, env *testenv.Env, logPath string) running {
	tb.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	logger := log.With(log.NewLogfmtLogger(log.NewSyncWriter(logFile)), "ts", log.DefaultTimestampUTC)
	logger = level.NewFilter(logger, level.AllowInfo())
	o := options{
		Options:               k8s.Options{Namespace: metallbNamespace, LogLevel: "info", HealthProbePort: testenv.FreePort(tb)},
		webhookMode:           webhookDisabled,
		disableLeaderElection: true,
	}
	stopController := runController(tb, env, o, logger)
	stop := sync.OnceFunc(func() {
		stopController()
		logFile.Close()
	})
	tb.Cleanup(stop)
	return running{stop: stop, pid: os.Getpid()}
}

// logTail returns the last n lines of the file at path.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logSize is the current size of the file at path, to cut a log into the parts written during
// each step.
func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logExcerpt returns at most maxLines lines of the file at path between the byte offsets
// from and to, without upstream's pool status chatter.
func logExcerpt(path string, from, to int64, maxLines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	from, to = min(from, int64(len(data))), min(to, int64(len(data)))
	var lines []string
	for line := range strings.SplitSeq(string(bytes.TrimRight(data[from:to], "\n")), "\n") {
		if !strings.Contains(line, "PoolStatusReconciler") {
			lines = append(lines, line)
		}
	}
	if len(lines) > maxLines {
		omitted := len(lines) - maxLines
		lines = append(lines[:maxLines:maxLines], fmt.Sprintf("... (%d more lines)", omitted))
	}
	return strings.Join(lines, "\n")
}

// errTimeout tells a bounded wait that ran out from other errors.
var errTimeout = errors.New("timed out")

// pollUntil calls check every interval until it returns true or an error, or until timeout.
func pollUntil(timeout, interval time.Duration, check func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := check()
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return errTimeout
		}
		time.Sleep(interval)
	}
}
