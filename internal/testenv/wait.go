// SPDX-License-Identifier: Apache-2.0

package testenv

import (
	"errors"
	"net"
	"testing"
	"time"
)

// eventuallyTimeout is generous: tests wait for convergence, they do not time it.
const eventuallyTimeout = 60 * time.Second

// Eventually polls check until it returns nil, and fails t with check's last error when that
// takes longer than a minute.
func Eventually(t testing.TB, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(eventuallyTimeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// FreePort returns a TCP port that is free on loopback now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// EventuallyTrue is Eventually for a condition without an error to report.
func EventuallyTrue(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Eventually(t, what, func() error {
		if cond() {
			return nil
		}
		return errors.New("not yet")
	})
}
