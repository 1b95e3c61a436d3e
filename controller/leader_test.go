// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/badsettings"
	"github.com/maglb/maglb/internal/testenv"
)

// TestLeaseLostStartsOver: a leader that cannot reach the API server for longer than its
// renew deadline loses its Lease; it does not exit but, once the API server answers again,
// starts over in the same process, takes its Lease back at once (its identity is its pod name)
// and allocates again. A replica killed and started again with the same pod name also takes
// its Lease back at once, before it expired.
func TestLeaseLostStartsOver(t *testing.T) {
	const namespace, pod = "leader-test", "controller-7c9f4"
	env := testenv.Get(t)
	ctx := context.Background()
	ensureNamespace(t, namespace, nil)
	bin := controllerBinary(t)
	api := startAPIProxy(t, env.Config.Host)
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

	controller := startControllerProcess(t, bin, api.kubeconfig(t, env.Kubeconfig), namespace, pod)
	testenv.Eventually(t, "the Lease held by the pod's name", heldBy(pod))
	pool := newPool("leader-pool", []string{"10.17.0.0/29"}, nil)
	pool.Namespace = namespace
	create(t, pool)
	waitForIPs(t, createService(t, namespace, "before", nil), "10.17.0.0")

	// The API server out of reach for longer than the renew deadline.
	api.down()
	testenv.Eventually(t, "the controller losing its Lease", func() error {
		if !strings.Contains(controller.output(), "starting over as a candidate") {
			return errors.New("not yet")
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	if err := controller.alive(); err != nil {
		t.Fatalf("while the API server is away: %v\n%s", err, controller.output())
	}
	api.up()
	testenv.Eventually(t, "the controller started over", func() error {
		if n := strings.Count(controller.output(), "MagLB controller starting"); n != 2 {
			return fmt.Errorf("started %d times", n)
		}
		return controller.alive()
	})
	testenv.Eventually(t, "the Lease held by the pod's name again", heldBy(pod))
	waitForIPs(t, createService(t, namespace, "after-outage", nil), "10.17.0.1")
	if err := controller.alive(); err != nil {
		t.Fatal(err)
	}

	// kill -9 and the same pod's container started again: the Lease is its own.
	if err := readLease(); err != nil {
		t.Fatal(err)
	}
	held := lease.Spec.RenewTime.Time
	expiry := held.Add(time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second)
	controller.kill()
	startControllerProcess(t, bin, api.kubeconfig(t, env.Kubeconfig), namespace, pod)
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

// apiProxy forwards TCP connections on a loopback port to the API server, and can refuse
// them for a while, as an API server that went away.
type apiProxy struct {
	addr, target string
	mu           sync.Mutex
	listener     net.Listener
	conns        []net.Conn
}

func startAPIProxy(t *testing.T, server string) *apiProxy {
	t.Helper()
	u, err := url.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	p := &apiProxy{addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), target: u.Host}
	p.up()
	t.Cleanup(p.down)
	return p
}

// kubeconfig writes a copy of the kubeconfig file path that reaches the API server through p.
func (p *apiProxy) kubeconfig(t *testing.T, path string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, cluster := range cfg.Clusters {
		cluster.Server = "https://" + p.addr
	}
	proxied := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, proxied); err != nil {
		t.Fatal(err)
	}
	return proxied
}

// up listens again and forwards what it accepts.
func (p *apiProxy) up() {
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		panic(err)
	}
	p.mu.Lock()
	p.listener = l
	p.mu.Unlock()
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
}

// down closes the listener and every forwarded connection.
func (p *apiProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.listener != nil {
		p.listener.Close()
		p.listener = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// controllerProcess is the built controller running as a process.
type controllerProcess struct {
	cmd  *exec.Cmd
	out  syncBuffer
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
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
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
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/readyz", health))
	})
	return p
}

func (p *controllerProcess) output() string { return p.out.String() }

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
