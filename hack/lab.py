"""The local development environment (`tasks.py dev-env`): etcd and kube-apiserver on loopback,
the metallb.io CRDs, the controller run from bin/ and the samples.

State lives in <repo>/.dev-env/: pki/, etcd/, logs/<process>.log, pids/<process>.pid (pid and
start time, so a recycled pid is never signalled), kubeconfig. Processes run in their own
session, so they outlive the task and a Ctrl-C in the terminal; `dev-env-cleanup` stops them.

A fresh start runs Lab.steps() in order; a bigger network lab adds its steps and processes the
same way.
"""

import base64
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tooling import REPO, TaskError, note, step

STATE = REPO / ".dev-env"
NAMESPACE = "metallb-system"

# Loopback ports, all in 2xxxx so they never meet the random ports the tests pick.
ETCD_CLIENT_PORT = 23790
ETCD_PEER_PORT = 23800
APISERVER_PORT = 26443
METRICS_PORT = 27472
HEALTH_PORT = 27473
WEBHOOK_PORT = 29443

# Stopped in reverse order.
PROCESS_ORDER = ["etcd", "kube-apiserver", "controller"]
STOP_TIMEOUT = 10.0
TAIL_LINES = 30


class LabError(TaskError):
    """A failed step; log names the log file whose tail explains it."""

    def __init__(self, message, log=None):
        super().__init__(message)
        self.log = log


def tail(path, lines=TAIL_LINES):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# Processes


def _start_time(pid):
    """The process's start time in clock ticks since boot, or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


class Processes:
    """The lab's background processes, tracked through pid files."""

    def __init__(self, state=STATE):
        self.pids = state / "pids"
        self.logs = state / "logs"

    def log(self, name):
        return self.logs / f"{name}.log"

    def _pidfile(self, name):
        return self.pids / f"{name}.pid"

    def start(self, name, argv, env=None):
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.log(name), "ab") as log:
            try:
                proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                                        env=dict(os.environ, **(env or {})))
            except OSError as e:
                raise LabError(f"starting {name}: {e}") from None
        self._pidfile(name).write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
        return proc.pid

    def pid(self, name):
        """The pid of the named process if it runs (same pid and start time as recorded)."""
        try:
            fields = self._pidfile(name).read_text().split()
        except OSError:
            return None
        if not fields or not fields[0].isdigit():
            return None
        pid = int(fields[0])
        started = _start_time(pid)
        if started is None or (len(fields) > 1 and fields[1] != started):
            return None
        return pid

    def names(self):
        found = [p.stem for p in self.pids.glob("*.pid")] if self.pids.is_dir() else []
        known = [n for n in PROCESS_ORDER if n in found]
        return known + sorted(n for n in found if n not in PROCESS_ORDER)

    def running(self):
        return {n: pid for n in self.names() if (pid := self.pid(n)) is not None}

    def stop(self, name):
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; only the pid recorded for name."""
        pid = self.pid(name)
        if pid is not None:
            note(f"stopping {name} (pid {pid})")
            self._signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while self._alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self._alive(pid):
                note(f"{name} (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT:.0f}s: SIGKILL")
                self._signal(pid, signal.SIGKILL)
                deadline = time.monotonic() + STOP_TIMEOUT
                while self._alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if self._alive(pid):
                    raise TaskError(f"{name} (pid {pid}) survived SIGKILL")
        self._pidfile(name).unlink(missing_ok=True)

    def stop_all(self):
        for name in reversed(self.names()):
            self.stop(name)

    @staticmethod
    def _signal(pid, sig):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    @staticmethod
    def _alive(pid):
        # Reap it if it is our child (started in this run), else a zombie would look alive.
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return _start_time(pid) is not None


def check_ports_free(ports):
    for port, what in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise LabError(f"port {port} ({what}) is in use by another process; free it and retry") from None


def wait_until(what, check, timeout, proc_name, procs, interval=0.25):
    """Polls check() until it returns true; fails early when the process proc_name exits."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - reported when the wait times out
            last = e
        if procs.pid(proc_name) is None:
            raise LabError(f"{proc_name} exited while waiting for {what}", log=procs.log(proc_name))
        time.sleep(interval)
    detail = f" (last error: {last})" if last else ""
    raise LabError(f"{what}: not ready after {timeout:.0f}s{detail}", log=procs.log(proc_name))


# ---------------------------------------------------------------------------------------------
# PKI


OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {sans}
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
"""

APISERVER_SANS = ["IP:127.0.0.1", "IP:10.96.0.1", "DNS:localhost", "DNS:kubernetes",
                  "DNS:kubernetes.default", "DNS:kubernetes.default.svc"]


def _openssl(pki, *args):
    proc = subprocess.run(["openssl", *args], cwd=pki, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise LabError(f"openssl {' '.join(args[:2])} failed:\n{proc.stdout}")


def generate_pki(pki):
    """CA, apiserver serving certificate, admin client certificate (system:masters) and the
    service-account key pair."""
    if shutil.which("openssl") is None:
        raise LabError("openssl not found (python3 tasks.py deps installs it)")
    pki.mkdir(parents=True, exist_ok=True)
    cnf = pki / "openssl.cnf"
    cnf.write_text(OPENSSL_CONFIG.format(sans=", ".join(APISERVER_SANS)))
    _openssl(pki, "req", "-x509", "-config", cnf, "-extensions", "ca", "-newkey", "rsa:2048", "-nodes",
             "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650", "-subj", "/CN=maglb-dev-env-ca")
    for name, subject, extensions in (
        ("apiserver", "/CN=kube-apiserver", "server"),
        ("admin", "/O=system:masters/CN=admin", "client"),
    ):
        _openssl(pki, "req", "-new", "-config", cnf, "-newkey", "rsa:2048", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        _openssl(pki, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "365",
                 "-extfile", cnf, "-extensions", extensions)
    _openssl(pki, "genrsa", "-out", "sa.key", "2048")
    _openssl(pki, "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")
    for key in pki.glob("*.key"):
        key.chmod(0o600)


def write_kubeconfig(path, server, pki):
    def b64(name):
        return base64.b64encode((pki / name).read_bytes()).decode()

    path.write_text(f"""\
apiVersion: v1
kind: Config
clusters:
- name: maglb-dev-env
  cluster:
    server: {server}
    certificate-authority-data: {b64("ca.crt")}
users:
- name: admin
  user:
    client-certificate-data: {b64("admin.crt")}
    client-key-data: {b64("admin.key")}
contexts:
- name: maglb-dev-env
  context:
    cluster: maglb-dev-env
    user: admin
    namespace: {NAMESPACE}
current-context: maglb-dev-env
""")
    path.chmod(0o600)


# ---------------------------------------------------------------------------------------------
# The lab


class Lab:
    def __init__(self, bin_dir, k8s_version, state=STATE):
        self.bin_dir = Path(bin_dir)
        self.k8s_version = k8s_version
        self.state = state
        self.procs = Processes(state)
        self.pki = state / "pki"
        self.kubeconfig = state / "kubeconfig"
        self.server = f"https://127.0.0.1:{APISERVER_PORT}"
        self.controller_bin = REPO / "bin" / "controller"

    # kubectl ---------------------------------------------------------------------------------

    @property
    def kubectl_path(self):
        return self.bin_dir / "kubectl"

    def kubectl(self, *args, input=None, capture=False):
        proc = subprocess.run([str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *map(str, args)],
                              cwd=REPO, input=input, text=True,
                              stdout=subprocess.PIPE if capture else sys.stderr, stderr=subprocess.STDOUT if capture else None)
        if proc.returncode != 0:
            detail = f":\n{proc.stdout}" if capture else ""
            raise LabError(f"kubectl {' '.join(map(str, args))} failed (exit status {proc.returncode}){detail}")
        return proc.stdout

    def apiserver_ready(self):
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=2) as r:
            return r.status == 200

    @staticmethod
    def controller_ready():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{HEALTH_PORT}/readyz", timeout=2) as r:
                return r.status == 200
        except urllib.error.HTTPError:
            return False

    # steps ---------------------------------------------------------------------------------

    def start_apiserver(self):
        step("pki: CA, apiserver and admin certificates, service-account keys (.dev-env/pki)")
        generate_pki(self.pki)

        step(f"etcd on 127.0.0.1:{ETCD_CLIENT_PORT}, kube-apiserver v{self.k8s_version} on {self.server}")
        check_ports_free([(ETCD_CLIENT_PORT, "etcd client"), (ETCD_PEER_PORT, "etcd peer"),
                          (APISERVER_PORT, "kube-apiserver"), (METRICS_PORT, "controller metrics"),
                          (HEALTH_PORT, "controller health probes"), (WEBHOOK_PORT, "controller webhooks")])
        etcd_url = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
        self.procs.start("etcd", [
            self.bin_dir / "etcd",
            "--data-dir", self.state / "etcd",
            "--listen-client-urls", etcd_url,
            "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{ETCD_PEER_PORT}",
            "--initial-cluster", f"default=http://127.0.0.1:{ETCD_PEER_PORT}",
            "--unsafe-no-fsync",
        ])
        p = self.pki
        self.procs.start("kube-apiserver", [
            self.bin_dir / "kube-apiserver",
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={APISERVER_PORT}",
            "--advertise-address=127.0.0.1",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
        ])
        write_kubeconfig(self.kubeconfig, self.server, self.pki)
        started = time.monotonic()
        wait_until("kube-apiserver /readyz", self.apiserver_ready, 90, "kube-apiserver", self.procs)
        if self.procs.pid("etcd") is None:
            raise LabError("etcd exited", log=self.procs.log("etcd"))
        note(f"kube-apiserver ready after {time.monotonic() - started:.1f}s")

    def install_crds(self):
        step(f"CRDs: kubectl apply --server-side -f config/crd/bases/; namespace {NAMESPACE}")
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", REPO / "config" / "crd" / "bases",
                     capture=True)
        self.kubectl("apply", "-f", "-", capture=True, input=f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    pod-security.kubernetes.io/enforce: privileged
    pod-security.kubernetes.io/audit: privileged
    pod-security.kubernetes.io/warn: privileged
""")
        out = self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f",
                           REPO / "config" / "crd" / "bases", capture=True)
        note(f"{len(out.splitlines())} CRDs established")

    def _binary_digest(self):
        return hashlib.sha256(self.controller_bin.read_bytes()).hexdigest()

    def start_controller(self):
        step(f"controller: bin/controller, webhooks on 127.0.0.1:{WEBHOOK_PORT}, "
             f"metrics :{METRICS_PORT}, probes :{HEALTH_PORT}")
        if not self.controller_bin.is_file():
            raise LabError(f"{self.controller_bin} missing (python3 tasks.py build)")
        (self.state / "controller.sha256").write_text(self._binary_digest() + "\n")
        self.procs.start("controller", [
            self.controller_bin,
            "--kubeconfig", self.kubeconfig,
            "--namespace", NAMESPACE,
            "--webhook-host", "127.0.0.1",
            "--webhook-port", WEBHOOK_PORT,
            "--port", METRICS_PORT,
            "--health-probe-port", HEALTH_PORT,
            "--cert-dir", self.state / "webhook-certs",
            "--log-level", "debug",
        ])
        started = time.monotonic()
        wait_until(f"controller http://127.0.0.1:{HEALTH_PORT}/readyz", self.controller_ready, 90,
                   "controller", self.procs)
        note(f"controller ready after {time.monotonic() - started:.1f}s (webhooks registered and serving)")

    def controller_changed(self):
        try:
            recorded = (self.state / "controller.sha256").read_text().strip()
        except OSError:
            return True
        return not self.controller_bin.is_file() or recorded != self._binary_digest()

    def apply_samples(self):
        step("samples: kubectl apply -f configsamples/")
        self.kubectl("apply", "-f", REPO / "configsamples")

    # lifecycle -----------------------------------------------------------------------------

    def fail(self, error, started):
        """Reports a failed step and stops what this run started."""
        print(f"error: {error or type(error).__name__}", file=sys.stderr)
        log = getattr(error, "log", None)
        if log:
            print(f"--- last lines of {log}:", file=sys.stderr)
            print(tail(log).rstrip(), file=sys.stderr)
            print("---", file=sys.stderr)
        if started:
            step("stopping what was started (logs stay in .dev-env/logs)")
            self.procs.stop_all()

    def steps(self):
        """A fresh start, in order. A bigger lab extends the list (and PROCESS_ORDER)."""
        return [self.start_apiserver, self.install_crds, self.start_controller, self.apply_samples]

    def up(self):
        running = self.procs.running()
        if running and set(running) >= set(PROCESS_ORDER) and self._api_ok():
            self._update()
            return
        if self.state.exists():
            if running:
                down = ", ".join(n for n in PROCESS_ORDER if n not in running)
                why = f"{down} not running" if down else "kube-apiserver not ready"
                step(f"dev-env is partly down ({why}): restarting it cleanly")
            self.procs.stop_all()
            shutil.rmtree(self.state)
        self.state.mkdir(parents=True)
        try:
            for start_step in self.steps():
                start_step()
        except (Exception, KeyboardInterrupt) as e:
            self.fail(e, started=True)
            raise LabError("dev-env did not come up") from None
        self.print_info(already_up=False)

    def _api_ok(self):
        try:
            return self.apiserver_ready()
        except Exception:  # noqa: BLE001
            return False

    def _update(self):
        """The lab is up: reapply the CRDs, restart the controller if bin/controller changed,
        reapply the samples."""
        step("dev-env is already up: updating it")
        try:
            self.install_crds()
            if self.controller_changed():
                step("controller: bin/controller changed, restarting it")
                self.procs.stop("controller")
                self.start_controller()
            else:
                note("controller: bin/controller unchanged, left running")
            self.apply_samples()
        except (Exception, KeyboardInterrupt) as e:
            self.fail(e, started=False)
            raise LabError("updating the running dev-env failed; `python3 tasks.py dev-env-cleanup` "
                           "then `python3 tasks.py dev-env` starts afresh") from None
        self.print_info(already_up=True)

    def print_info(self, already_up):
        kubectl = self.kubectl_path
        logs = self.procs.logs
        pids = ", ".join(f"{n} {pid}" for n, pid in self.procs.running().items())
        state = "was already up" if already_up else "is up"
        print(f"""
MagLB dev-env {state}: etcd and kube-apiserver v{self.k8s_version} on {self.server}, the metallb.io CRDs,
the controller (webhooks on 127.0.0.1:{WEBHOOK_PORT}) and configsamples/. Processes: {pids}.

Try:
  export KUBECONFIG={self.kubeconfig}
  alias kubectl={kubectl}
  kubectl get ipaddresspools,bgppeers,bgpadvertisements,l2advertisements,communities,bfdprofiles -n {NAMESPACE}
  kubectl get configurationstates -n {NAMESPACE} -o yaml

  # the API rejects a pool whose shard is not a DNS label:
  kubectl apply -f - <<EOF
  apiVersion: metallb.io/v1beta1
  kind: IPAddressPool
  metadata: {{name: bad-shard, namespace: {NAMESPACE}}}
  spec: {{addresses: [203.0.113.0/28], shard: Not_A_Label}}
  EOF
  # and the webhook one that overlaps the sample pool "default" (192.168.10.0/24):
  kubectl apply -f - <<EOF
  apiVersion: metallb.io/v1beta1
  kind: IPAddressPool
  metadata: {{name: overlapping, namespace: {NAMESPACE}}}
  spec: {{addresses: [192.168.10.128/25]}}
  EOF

  curl -s http://127.0.0.1:{METRICS_PORT}/metrics | grep ^metallb_   # controller metrics
  less {logs}/controller.log   # also etcd.log, kube-apiserver.log

Rebuild and rerun `python3 tasks.py dev-env` to restart the controller with new code;
stop everything with `python3 tasks.py dev-env-cleanup`.

kubectl: {kubectl}
kubeconfig: {self.kubeconfig}""", flush=True)


def cleanup(state=STATE):
    procs = Processes(state)
    names = procs.names()
    if names:
        step(f"dev-env: stopping {', '.join(reversed(names))}")
        procs.stop_all()
    if state.exists():
        step(f"dev-env: removing {state}")
        shutil.rmtree(state)
    else:
        step("dev-env: nothing to clean up")
