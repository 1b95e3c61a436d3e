// SPDX-License-Identifier: Apache-2.0

package bgp

import (
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// gobgpLogger hands GoBGP's log lines to the speaker's go-kit logger. GoBGP's debug lines
// (one per message) are dropped: the level the go-kit logger filters at decides the rest.
type gobgpLogger struct {
	logger log.Logger
}

func (l gobgpLogger) log(lvl func(log.Logger) log.Logger, msg string, fields gobgplog.Fields) {
	kv := make([]any, 0, 2+2*len(fields))
	kv = append(kv, "msg", msg)
	for k, v := range fields {
		kv = append(kv, k, v)
	}
	lvl(l.logger).Log(kv...)
}

func (l gobgpLogger) Panic(msg string, fields gobgplog.Fields) {
	l.log(level.Error, msg, fields)
	panic(msg)
}

// Fatal is only called by GoBGP for unrecoverable internal states; it must not return.
func (l gobgpLogger) Fatal(msg string, fields gobgplog.Fields) { l.Panic(msg, fields) }

func (l gobgpLogger) Error(msg string, fields gobgplog.Fields) { l.log(level.Error, msg, fields) }
func (l gobgpLogger) Warn(msg string, fields gobgplog.Fields)  { l.log(level.Warn, msg, fields) }
func (l gobgpLogger) Info(msg string, fields gobgplog.Fields)  { l.log(level.Info, msg, fields) }
func (l gobgpLogger) Debug(string, gobgplog.Fields)            {}
func (l gobgpLogger) SetLevel(gobgplog.LogLevel)               {}
func (l gobgpLogger) GetLevel() gobgplog.LogLevel              { return gobgplog.InfoLevel }
