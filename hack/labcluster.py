"""The lab's Kubernetes pieces, shared by the LB cluster (hack/lab.py) and the workload clusters
(hack/labworkload.py): the process manager, the PKI and kubeconfig writer, and a cluster's etcd
and kube-apiserver on loopback with kubectl against them."""

import base64
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tooling import REPO, TaskError, note

PROCESS_ORDER = ["etcd", "kube-apiserver", "kube-controller-manager", "controller", "zebra", "bgpd", "relay", "nodes",
                 "kubelet", "be", "wc", "kube-proxy", "speaker"]
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

    def __init__(self, state):
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

        def rank(name):
            return next((i for i, prefix in enumerate(PROCESS_ORDER) if name.startswith(prefix)), len(PROCESS_ORDER))
        return sorted(found, key=lambda n: (rank(n), n))

    def running(self):
        return {n: pid for n in self.names() if (pid := self.pid(n)) is not None}

    def stop(self, name):
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; only the pid recorded for name."""
        pid = self.pid(name)
        if pid is not None:
            note(f"stopping {name} (pid {pid})")
            self._signal(pid, signal.SIGTERM)
            if not self._gone(pid):
                note(f"{name} (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT:.0f}s: SIGKILL")
                self._kill(name, pid)
        self._pidfile(name).unlink(missing_ok=True)

    def kill(self, name):
        """SIGKILL, as a crash or the OOM killer ends a process: none of its shutdown runs;
        only the pid recorded for name."""
        pid = self.pid(name)
        if pid is not None:
            note(f"killing {name} (pid {pid}): SIGKILL")
            self._kill(name, pid)
        self._pidfile(name).unlink(missing_ok=True)

    def _kill(self, name, pid):
        self._signal(pid, signal.SIGKILL)
        if not self._gone(pid):
            raise TaskError(f"{name} (pid {pid}) survived SIGKILL")

    def _gone(self, pid):
        """Waits up to STOP_TIMEOUT for pid to exit; whether it did."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._alive(pid)

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
    """Polls check() until it returns something true, and returns that; fails early when the
    process proc_name exits."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
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


# How long the tokens of the lab's ServiceAccount kubeconfigs last.
TOKEN_DURATION = "8760h"


def write_kubeconfig(path, server, pki, namespace, token=None):
    """A kubeconfig for server: the admin's client certificate, or a bearer token."""
    def b64(name):
        return base64.b64encode((pki / name).read_bytes()).decode()

    user = f"token: {token}" if token else \
        f"client-certificate-data: {b64('admin.crt')}\n    client-key-data: {b64('admin.key')}"
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
    {user}
contexts:
- name: maglb-dev-env
  context:
    cluster: maglb-dev-env
    user: admin
    namespace: {namespace}
current-context: maglb-dev-env
""")
    path.chmod(0o600)



# ---------------------------------------------------------------------------------------------
# A cluster's control plane


def binary(name):
    """One of MagLB's built binaries (tasks.py build)."""
    return REPO / "bin" / name


def port_open(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Cluster:
    """etcd and kube-apiserver on loopback: the LB cluster (name "": processes etcd and
    kube-apiserver, state/etcd, state/kubeconfig) or a workload cluster (name wcK: etcd-wcK,
    kube-apiserver-wcK, state/etcd-wcK, state/kubeconfig-wcK). Every cluster trusts the lab's one CA and serves with its
    certificate (valid for 127.0.0.1), so one admin certificate reaches them all."""

    def __init__(self, name, bin_dir, procs, pki, state, etcd_port, apiserver_port, service_cidrs, namespace):
        self.name = name
        self.bin_dir = Path(bin_dir)
        self.procs = procs
        self.pki = pki
        self.state = state
        self.etcd_port = etcd_port
        self.apiserver_port = apiserver_port
        self.service_cidrs = service_cidrs
        self.server = f"https://127.0.0.1:{apiserver_port}"
        self.kubeconfig = state / (f"kubeconfig-{name}" if name else "kubeconfig")
        self.namespace = namespace

    def process(self, role):
        return f"{role}-{self.name}" if self.name else role

    @property
    def ports(self):
        what = f"{self.name} " if self.name else ""
        return [(self.etcd_port, f"{what}etcd client"), (self.etcd_port + 10, f"{what}etcd peer"),
                (self.apiserver_port, f"{what}kube-apiserver")]

    def launch(self):
        """Starts etcd and kube-apiserver and writes the kubeconfig; wait_ready() waits for them."""
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{self.etcd_port + 10}"
        self.procs.start(self.process("etcd"), [
            self.bin_dir / "etcd",
            "--data-dir", self.state / self.process("etcd"),
            "--listen-client-urls", etcd_url,
            "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"default={peer_url}",
            "--unsafe-no-fsync",
        ])
        write_kubeconfig(self.kubeconfig, self.server, self.pki, self.namespace)
        self.launch_apiserver()

    def wait_ready(self):
        started = time.monotonic()
        wait_until(f"{self.process('kube-apiserver')} /readyz", self.ready, 90, self.process("kube-apiserver"),
                   self.procs)
        if self.procs.pid(self.process("etcd")) is None:
            raise LabError(f"{self.process('etcd')} exited", log=self.procs.log(self.process("etcd")))
        note(f"{self.process('kube-apiserver')} ready after {time.monotonic() - started:.1f}s")

    def start_apiserver(self):
        """Starts kube-apiserver alone (its etcd runs) and waits for /readyz."""
        self.launch_apiserver()
        self.wait_ready()

    def launch_apiserver(self):
        p = self.pki
        self.procs.start(self.process("kube-apiserver"), [
            self.bin_dir / "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            "--advertise-address=127.0.0.1",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--service-cluster-ip-range={self.service_cidrs}",
            "--endpoint-reconciler-type=none",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
        ])

    def stop_apiserver(self):
        self.procs.stop(self.process("kube-apiserver"))

    def ready(self):
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=2) as r:
            return r.status == 200

    def answers(self):
        try:
            return self.ready()
        except Exception:  # noqa: BLE001
            return False

    def service_account_kubeconfig(self, namespace, account, manifests, path):
        """Writes to path a kubeconfig with a token (a year long) of ServiceAccount
        namespace/account, once manifests (kubectl apply arguments: its RBAC) are applied, and
        returns path: what runs with it has exactly the rights the manifests grant."""
        self.kubectl("apply", *manifests, capture=True)
        token = self.kubectl("create", "token", account, "-n", namespace, f"--duration={TOKEN_DURATION}",
                             capture=True).strip()
        write_kubeconfig(path, self.server, self.pki, namespace, token=token)
        return path

    def kubectl(self, *args, input=None, capture=False):
        proc = subprocess.run([str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *map(str, args)],
                              cwd=REPO, input=input, text=True,
                              stdout=subprocess.PIPE if capture else sys.stderr, stderr=subprocess.STDOUT if capture else None)
        if proc.returncode != 0:
            detail = f":\n{proc.stdout}" if capture else ""
            raise LabError(f"kubectl {' '.join(map(str, args))} failed (exit status {proc.returncode}){detail}")
        return proc.stdout
