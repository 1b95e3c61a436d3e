// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"context"
	"log/slog"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// gokitHandler hands GoBGP's log records to the speaker's go-kit logger. GoBGP's debug
// records (one per message) are dropped, except connectFailed: the level the go-kit logger
// filters at decides the rest.
type gokitHandler struct {
	logger log.Logger
	attrs  []any // key-value pairs of WithAttrs, group names folded into the keys
	group  string
}

func newGoBGPLogger(logger log.Logger) *slog.Logger { return slog.New(gokitHandler{logger: logger}) }

// connectFailed is GoBGP's debug record of a failed connection attempt. Upstream's native
// speaker logs each failed attempt as an error, "failed to connect to peer": a session that
// never comes up (an unreachable router, a wrong MD5 password) shows in the log through it.
const connectFailed = "failed to connect"

func (h gokitHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelDebug }

func (h gokitHandler) Handle(_ context.Context, r slog.Record) error {
	message := r.Message
	if r.Level < slog.LevelInfo {
		if message != connectFailed {
			return nil
		}
		message, r.Level = "failed to connect to peer", slog.LevelError
	}
	kv := make([]any, 0, 2+len(h.attrs)+2*r.NumAttrs())
	kv = append(kv, "msg", message)
	kv = append(kv, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		kv = append(kv, h.group+a.Key, a.Value.Resolve().Any())
		return true
	})
	lvl := level.Info
	switch {
	case r.Level >= slog.LevelError:
		lvl = level.Error
	case r.Level >= slog.LevelWarn:
		lvl = level.Warn
	}
	return lvl(h.logger).Log(kv...)
}

func (h gokitHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	kv := append([]any(nil), h.attrs...)
	for _, a := range attrs {
		kv = append(kv, h.group+a.Key, a.Value.Resolve().Any())
	}
	h.attrs = kv
	return h
}

func (h gokitHandler) WithGroup(name string) slog.Handler {
	h.group += name + "."
	return h
}
