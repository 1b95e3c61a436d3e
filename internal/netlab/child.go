// SPDX-License-Identifier: Apache-2.0

package netlab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Child is the test binary run again inside a namespace, driven by JSON lines on its stdin
// and stdout. Code whose own goroutines open sockets (GoBGP dials from its own) cannot be
// kept inside a namespace by a thread switch: a child process lives there.
type Child struct {
	tb      testing.TB
	logPath string
	proc    *os.Process
	in      *json.Encoder
	out     *json.Decoder
	done    chan struct{}
}

// StartChild runs the test binary in ns with env=1 in its environment, where TestMain
// hands over to ServeChild. It is killed at cleanup; its standard error, the log, is
// shown if the test failed.
func StartChild(tb testing.TB, ns *Namespace, env, name string) *Child {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	logPath := filepath.Join(tb.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := ns.Command(context.Background(), exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"=1")
	cmd.Stderr = logFile
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &Child{tb: tb, logPath: logPath, proc: cmd.Process, in: json.NewEncoder(stdin), out: json.NewDecoder(bufio.NewReader(stdout)), done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	tb.Cleanup(func() {
		c.Kill()
		if tb.Failed() {
			data, _ := os.ReadFile(logPath)
			tb.Logf("%s log:\n%s", name, data)
		}
	})
	return c
}

// Call sends req and decodes the answer into resp; a broken pipe fails the test.
func (c *Child) Call(req, resp any) {
	c.tb.Helper()
	if err := c.in.Encode(req); err != nil {
		c.tb.Fatalf("child process: %v", err)
	}
	if err := c.out.Decode(resp); err != nil {
		c.tb.Fatalf("child process: %v", err)
	}
}

// Log is what the child wrote to its standard error so far.
func (c *Child) Log() string {
	data, _ := os.ReadFile(c.logPath)
	return string(data)
}

// Kill kills the child and waits for it.
func (c *Child) Kill() {
	_ = c.proc.Kill()
	<-c.done
}

// Wait waits up to timeout for the child to exit by itself.
func (c *Child) Wait(timeout time.Duration) error {
	select {
	case <-c.done:
		return nil
	case <-time.After(timeout):
		return errors.New("the child process did not exit")
	}
}

// ServeChild answers the requests on stdin with serve, one JSON line each on stdout,
// until stdin ends or serve says it is done.
func ServeChild[Req any](serve func(Req) (resp any, done bool)) error {
	in := json.NewDecoder(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for {
		var req Req
		if err := in.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		resp, done := serve(req)
		if err := out.Encode(resp); err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}
