// SPDX-License-Identifier: Apache-2.0

// Package logging builds the logfmt logger every MagLB binary uses, with upstream MetalLB's
// levels and keys, and bridges it to the logr interface controller-runtime and klog log through.
package logging

import (
	"fmt"
	"os"
	"strings"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
)

// Levels are the values --log-level accepts, as upstream.
var Levels = []string{"all", "debug", "info", "warn", "error", "none"}

// New returns a logfmt logger on stderr filtered at levelName, and installs it as the logger
// of controller-runtime and klog.
func New(levelName string) (log.Logger, error) {
	option, err := levelOption(levelName)
	if err != nil {
		return nil, err
	}
	logger := log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr))
	logger = log.With(logger, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller)
	logger = level.NewFilter(logger, option)
	bridge := Logr(logger)
	ctrl.SetLogger(bridge)
	klog.SetLogger(bridge)
	return logger, nil
}

// Logr adapts logger to logr: V(0) is info, higher verbosity is debug, errors are errors.
func Logr(logger log.Logger) logr.Logger {
	return logr.New(&sink{logger: logger})
}

func levelOption(name string) (level.Option, error) {
	switch strings.ToLower(name) {
	case "all":
		return level.AllowAll(), nil
	case "debug":
		return level.AllowDebug(), nil
	case "info":
		return level.AllowInfo(), nil
	case "warn":
		return level.AllowWarn(), nil
	case "error":
		return level.AllowError(), nil
	case "none":
		return level.AllowNone(), nil
	}
	return nil, fmt.Errorf("--log-level %q is not one of [%s]", name, strings.Join(Levels, ", "))
}

// sink is a logr.LogSink writing key/value pairs to a go-kit logger.
type sink struct {
	logger log.Logger
	name   string
}

func (s *sink) Init(logr.RuntimeInfo)  {}
func (s *sink) Enabled(level int) bool { return true }

func (s *sink) Info(verbosity int, msg string, keysAndValues ...any) {
	logAt := level.Info
	if verbosity > 0 {
		logAt = level.Debug
	}
	logAt(s.logger).Log(s.pairs(msg, keysAndValues)...)
}

func (s *sink) Error(err error, msg string, keysAndValues ...any) {
	level.Error(s.logger).Log(append(s.pairs(msg, keysAndValues), "error", err)...)
}

func (s *sink) WithValues(keysAndValues ...any) logr.LogSink {
	return &sink{logger: log.With(s.logger, keysAndValues...), name: s.name}
}

func (s *sink) WithName(name string) logr.LogSink {
	if s.name != "" {
		name = s.name + "." + name
	}
	return &sink{logger: s.logger, name: name}
}

func (s *sink) pairs(msg string, keysAndValues []any) []any {
	pairs := make([]any, 0, len(keysAndValues)+4)
	if s.name != "" {
		pairs = append(pairs, "logger", s.name)
	}
	pairs = append(pairs, "msg", msg)
	return append(pairs, keysAndValues...)
}

// Main is a binary's main after flag parsing: it builds the logger of levelName and runs run
// with it, exiting 2 for a bad level and 1 when run fails, with the error logged.
func Main(levelName string, run func(log.Logger) error) {
	logger, err := New(levelName)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := run(logger); err != nil {
		level.Error(logger).Log("op", "startup", "error", err)
		os.Exit(1)
	}
}
