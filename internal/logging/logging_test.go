// SPDX-License-Identifier: Apache-2.0

package logging

import (
	"bytes"
	"strings"
	"testing"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

func TestLevels(t *testing.T) {
	for _, tc := range []struct {
		level   string
		shown   []string // of debug, info, warn, error
		wantErr bool
	}{
		{level: "all", shown: []string{"debug", "info", "warn", "error"}},
		{level: "debug", shown: []string{"debug", "info", "warn", "error"}},
		{level: "info", shown: []string{"info", "warn", "error"}},
		{level: "WARN", shown: []string{"warn", "error"}},
		{level: "error", shown: []string{"error"}},
		{level: "none"},
		{level: "verbose", wantErr: true},
	} {
		t.Run(tc.level, func(t *testing.T) {
			option, err := levelOption(tc.level)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "all, debug, info, warn, error, none") {
					t.Errorf("error %v, want one listing the levels", err)
				}
				return
			}
			var buf bytes.Buffer
			logger := level.NewFilter(log.NewLogfmtLogger(&buf), option)
			level.Debug(logger).Log("msg", "debug")
			level.Info(logger).Log("msg", "info")
			level.Warn(logger).Log("msg", "warn")
			level.Error(logger).Log("msg", "error")
			for _, l := range []string{"debug", "info", "warn", "error"} {
				shown := strings.Contains(buf.String(), "msg="+l)
				want := false
				for _, s := range tc.shown {
					want = want || s == l
				}
				if shown != want {
					t.Errorf("%s shown: %v, want %v", l, shown, want)
				}
			}
		})
	}
}

// The logr bridge maps verbosity to levels and keeps key/value pairs.
func TestLogr(t *testing.T) {
	var buf bytes.Buffer
	logger := Logr(log.NewLogfmtLogger(&buf)).WithName("cache").WithValues("kind", "Service")
	logger.Info("synced")
	logger.V(1).Info("detail")
	logger.Error(nil, "failed")
	for _, want := range []string{
		`level=info kind=Service logger=cache msg=synced`,
		`level=debug kind=Service logger=cache msg=detail`,
		`level=error kind=Service logger=cache msg=failed error=null`,
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, buf.String())
		}
	}
}
