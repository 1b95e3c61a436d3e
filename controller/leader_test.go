// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/badsettings"
	"github.com/maglb/maglb/internal/testenv"
)

// TestLeaseLostStartsOver: a leader that cannot renew its Lease (here another holder took it,
// as happens when the API server was unreachable for the renew deadline and another replica
// won) does not exit: its process starts over as a candidate, takes the Lease back when it
// is free, and allocates again. A replica killed and started again with the same pod name
// takes its Lease back at once, before it expired.
func TestLeaseLostStartsOver(t *testing.T) {
	const namespace, pod = "leader-test", "controller-7c9f4"
	env := testenv.Get(t)
	ctx := context.Background()
	ensureNamespace(t, namespace, nil)
	bin := controllerBinary(t)
	lease := &coordinationv1.Lease{}
	leaseKey := client.ObjectKey{Namespace: namespace, Name: leaderElectionID}
	readLease := func() error { return env.Client.Get(ctx, leaseKey, lease) }
	heldBy := func(identity string) func() error {
		return func() error {
			if err := readLease(); err != nil {
				return err
			}
			if holder := ptr.Deref(lease.Spec.HolderIdentity, ""); holder != identity {
				return fmt.Errorf("the Lease is held by %q", holder)
			}
			return nil
		}
	}

	controller := startControllerProcess(t, bin, env.Kubeconfig, namespace, pod)
	testenv.Eventually(t, "the Lease held by the pod's name", heldBy(pod))
	pool := newPool("leader-pool", []string{"10.17.0.0/29"}, nil)
	pool.Namespace = namespace
	create(t, pool)
	waitForIPs(t, createService(t, namespace, "before", nil), "10.17.0.0")

	// Another holder takes the Lease for 20 s.
	intruder := "intruder"
	testenv.Eventually(t, "the Lease taken", func() error {
		if err := readLease(); err != nil {
			return err
		}
		lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds = &intruder, ptr.To[int32](20)
		lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
		return env.Client.Update(ctx, lease)
	})
	testenv.Eventually(t, "the controller starting over", func() error {
		if !strings.Contains(controller.output(), "starting over as a candidate") {
			return fmt.Errorf("not yet; output:\n%s", controller.output())
		}
		return nil
	})
	if err := controller.alive(); err != nil {
		t.Fatalf("after losing the Lease: %v\n%s", err, controller.output())
	}
	testenv.Eventually(t, "the Lease back with the pod once the intruder's expired", heldBy(pod))
	waitForIPs(t, createService(t, namespace, "after-start-over", nil), "10.17.0.1")

	// kill -9 and the same pod's container started again: the Lease is its own.
	if err := readLease(); err != nil {
		t.Fatal(err)
	}
	held := lease.Spec.RenewTime.Time
	expiry := held.Add(time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second)
	controller.kill()
	startControllerProcess(t, bin, env.Kubeconfig, namespace, pod)
	testenv.Eventually(t, "the Lease renewed by the restarted replica", func() error {
		if err := heldBy(pod)(); err != nil {
			return err
		}
		if !lease.Spec.RenewTime.After(held) {
			return fmt.Errorf("renewed last at %v", lease.Spec.RenewTime.Time)
		}
		return nil
	})
	if renewed := lease.Spec.RenewTime.Time; renewed.After(expiry) {
		t.Errorf("the restarted replica took the Lease at %v, after it expired (%v): it waited as a stranger would", renewed, expiry)
	}
	waitForIPs(t, createService(t, namespace, "after-restart", nil), "10.17.0.2")
}

// controllerProcess is the built controller running as a process.
type controllerProcess struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

// startControllerProcess runs the controller binary bin against kubeconfig, with the pod name
// pod, allocating from namespace's pools and serving the webhooks, and waits until it is ready;
// it is killed at cleanup.
func startControllerProcess(t *testing.T, bin, kubeconfig, namespace, pod string) *controllerProcess {
	t.Helper()
	p := &controllerProcess{done: make(chan struct{})}
	health := testenv.FreePort(t)
	p.cmd = exec.Command(bin, "--kubeconfig", kubeconfig, "--namespace", namespace, "--port=0",
		fmt.Sprintf("--health-probe-port=%d", health), "--webhook-host=127.0.0.1",
		fmt.Sprintf("--webhook-port=%d", testenv.FreePort(t)), "--cert-dir="+t.TempDir())
	p.cmd.Env = append(badsettings.CleanEnv(), "METALLB_POD_NAME="+pod)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("controller %s:\n%s", pod, p.output())
		}
	})
	testenv.Eventually(t, "the controller ready", func() error {
		if err := p.alive(); err != nil {
			t.Fatalf("%v\n%s", err, p.output())
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", health))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
	return p
}

func (p *controllerProcess) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *controllerProcess) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// alive tells an error when the process has exited.
func (p *controllerProcess) alive() error {
	select {
	case <-p.done:
		return fmt.Errorf("the controller exited: %v", p.cmd.ProcessState)
	default:
		return nil
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *controllerProcess) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}
