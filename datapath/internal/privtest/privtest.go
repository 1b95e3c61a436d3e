// SPDX-License-Identifier: Apache-2.0

// Package privtest gates tests that need root and BPF: they skip where they cannot run, except
// under CI=true or MAGLB_REQUIRE_PRIVILEGED=1, where not running is a failure.
package privtest

import (
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/maglb/maglb/internal/testenv"
)

// Require stops the test unless it runs as root on a kernel that creates BPF maps.
func Require(t testing.TB) {
	t.Helper()
	reason := missing()
	if reason == "" {
		return
	}
	testenv.Unavailable(t, "privileged test: "+reason)
}

func missing() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return "raising RLIMIT_MEMLOCK: " + err.Error()
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return "no BPF: " + err.Error()
	}
	m.Close()
	return ""
}
