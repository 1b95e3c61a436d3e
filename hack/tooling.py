"""What the tasks in tasks.py do: apt packages, the Kubernetes binaries, code generation, build
and tests. Everything here raises TaskError with a message meant for the user; tasks.py turns it
into a non-zero exit.

Progress lines (`==> ...`) and the output of long-running tools go to stderr; results a caller
may want to capture (the k8s binaries directory, the dev-env kubeconfig) go to stdout.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The binaries `hack/build-k8s-bins.sh` builds; the tests use kube-apiserver, etcd and kubectl
# (KUBEBUILDER_ASSETS), the lab also kube-proxy.
K8S_BINARIES = ["kube-apiserver", "kube-controller-manager", "kubectl", "kube-proxy", "etcd", "etcdctl"]


class TaskError(Exception):
    """A failure to report to the user, without a traceback."""


def step(message):
    print(f"==> {message}", file=sys.stderr, flush=True)


def note(message):
    print(f"    {message}", file=sys.stderr, flush=True)


def run(argv, *, env=None, cwd=REPO, stdout=None, capture=False, check=True, input=None):
    """Runs argv (output streamed unless capture) and returns the CompletedProcess.

    env adds to the current environment. With capture, stdout is returned as text and stderr
    still streams. stdout=sys.stderr sends a tool's output to our stderr.
    """
    argv = [str(a) for a in argv]
    full_env = dict(os.environ, **(env or {}))
    if capture:
        stdout = subprocess.PIPE
    elif stdout is not None and hasattr(stdout, "flush"):
        stdout.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        proc = subprocess.run(argv, cwd=cwd, env=full_env, stdout=stdout, text=True, input=input)
    except FileNotFoundError:
        raise TaskError(f"{argv[0]}: command not found") from None
    if check and proc.returncode != 0:
        raise TaskError(f"`{shlex.join(argv)}` failed (exit status {proc.returncode})")
    return proc


# ---------------------------------------------------------------------------------------------
# apt packages


def _apt_prefix():
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        return ["sudo", "-E"]
    raise TaskError("installing apt packages needs root (or sudo)")


def missing_packages(packages):
    """The packages of the list that dpkg does not report as installed."""
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    installed = set()
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1] == "installed":
            installed.add(fields[0])
    return [p for p in packages if p not in installed]


def apt_install(packages):
    """Installs packages with apt-get, refreshing the package lists when the first try fails."""
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = [*_apt_prefix(), "apt-get", "install", "-y", *packages]
    if run(install, env=env, stdout=sys.stderr, check=False).returncode == 0:
        return
    note("apt-get install failed; refreshing the package lists and retrying")
    run([*_apt_prefix(), "apt-get", "update"], env=env, stdout=sys.stderr)
    run(install, env=env, stdout=sys.stderr)


def ensure_packages(packages):
    missing = missing_packages(packages)
    if not missing:
        step(f"apt packages: all {len(packages)} installed")
        return
    step(f"apt packages: installing {' '.join(missing)}")
    apt_install(missing)
    still = missing_packages(missing)
    if still:
        raise TaskError(f"apt packages still missing after apt-get install: {' '.join(still)}")


# ---------------------------------------------------------------------------------------------
# Kubernetes binaries


def cache_dir():
    """The per-user cache, as Go's os.UserCacheDir sees it (the test harness looks there too)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "maglb"


def k8s_bin_dir(version):
    return cache_dir() / f"k8s-bins-v{version}" / "bin"


def _k8s_bins_problem(bin_dir, version):
    """Why the binaries in bin_dir are not usable as version, or None when they are."""
    for name in K8S_BINARIES:
        path = bin_dir / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{name} is missing"
    try:
        out = subprocess.run([str(bin_dir / "kube-apiserver"), "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"kube-apiserver --version failed: {e}"
    if out != f"Kubernetes v{version}":
        return f"kube-apiserver reports {out!r}"
    return None


@contextlib.contextmanager
def _file_lock(path, waiting_message):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            step(waiting_message)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_k8s_bins(version, force=False):
    """Returns the directory holding the binaries of version, building them when needed."""
    bin_dir = k8s_bin_dir(version)
    _ensure_built(f"k8s binaries v{version}", bin_dir, lambda: _k8s_bins_problem(bin_dir, version),
                  "build-k8s-bins.sh", {"K8S_VERSION": version}, "~10 minutes", force)
    return bin_dir


def upstream_metallb_controller(version):
    return cache_dir() / f"upstream-metallb-v{version}" / "bin" / "metallb-controller"


def ensure_upstream_metallb(version, force=False):
    """Returns the path of upstream MetalLB's controller of version, with its speaker beside it
    as metallb-speaker (for the differential test and the benchmarks), building both from the
    Go module proxy when needed."""
    binary = upstream_metallb_controller(version)
    binaries = [binary, binary.with_name("metallb-speaker")]

    def problem():
        missing = [b.name for b in binaries if not (b.is_file() and os.access(b, os.X_OK))]
        return f"{', '.join(missing)} not built yet" if missing else None

    _ensure_built(f"upstream MetalLB controller and speaker v{version}", binary.parent, problem,
                  "build-upstream-metallb.sh", {"METALLB_VERSION": version}, "~4 minutes", force)
    return binary


def helm_binary(version):
    return cache_dir() / f"helm-v{version}" / "bin" / "helm"


def ensure_helm(version, force=False):
    """Returns the path of helm version, built from the Go module proxy when needed."""
    binary = helm_binary(version)

    def problem():
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            return "not built yet"
        out = subprocess.run([str(binary), "version", "--short"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True).stdout.strip()
        return None if out.startswith(f"v{version}") else f"helm reports {out!r}"

    _ensure_built(f"helm v{version}", binary.parent, problem, "build-helm.sh", {"HELM_VERSION": version},
                  "~5 minutes", force)
    return binary


def _ensure_built(what, bin_dir, problem_fn, script, env, cold_time, force):
    """Runs hack/<script> into bin_dir unless problem_fn finds nothing wrong with what is there.
    A lock keeps two runs from building into the same directory."""
    problem = "rebuild requested" if force else problem_fn()
    if problem is None:
        step(f"{what}: cached in {bin_dir}")
        return
    with _file_lock(bin_dir.parent / ".lock", f"{what}: waiting for another build into {bin_dir}"):
        if not force:
            problem = problem_fn()
            if problem is None:
                step(f"{what}: built by the other run, in {bin_dir}")
                return
        step(f"{what}: building into {bin_dir} ({problem}; a cold build takes {cold_time} on 2 cores)")
        run(["bash", REPO / "hack" / script], stdout=sys.stderr,
            env=dict(env, OUT=str(bin_dir), WORK=str(bin_dir.parent / "build")))
        problem = problem_fn()
        if problem:
            raise TaskError(f"{what} in {bin_dir} unusable after the build: {problem}")


# ---------------------------------------------------------------------------------------------
# Code generation


class Generator:
    """One generation step: a command run at the repository root, or a Python callable
    taking the k8s binaries directory."""

    def __init__(self, title, command):
        self.title = title
        self.command = command

    def __call__(self, bin_dir):
        step(f"generate: {self.title}")
        if callable(self.command):
            self.command(bin_dir)
        else:
            run(self.command)


def render_manifest(bin_dir, overlays=("config/default",), output="config/manifests/maglb.yaml", transform=None):
    """Renders kustomize overlays with the built kubectl into one committed manifest, through
    transform (text to text) when given."""
    docs = [run([bin_dir / "kubectl", "kustomize", REPO / overlay], capture=True).stdout for overlay in overlays]
    text = "---\n".join(docs)
    out = REPO / output
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Generated from {', '.join(overlays)} by `python3 tasks.py generate`. Do not edit.\n"
    out.write_text(header + (transform(text) if transform else text))


def render_chart_files(bin_dir):
    """The Helm chart's copies of what config/ defines once: the CRDs, as a template (the BGPPeer
    conversion webhook is in the release's namespace), the RBAC rules (those of the controller
    and speaker, and the backend agent's and the reflector's beside their workloads), which the
    chart's templates/rbac.yaml reads, and what a workload cluster grants projection, which
    templates/projection-access.yaml reads."""
    render_manifest(bin_dir, ["config/crd"], "charts/maglb/charts/crds/templates/crds.yaml",
                    transform=lambda text: text.replace("namespace: metallb-system", "namespace: {{ .Release.Namespace }}"))
    render_manifest(bin_dir, ["config/rbac", "config/backend-agent", "config/reflector"], "charts/maglb/files/rbac.yaml")
    render_manifest(bin_dir, ["config/workload-cluster"], "charts/maglb/files/workload-cluster.yaml")


def generate(generators, bin_dir):
    for g in generators:
        g(bin_dir)


def _dirty_files():
    """Every changed or untracked file, with a hash of its content, as git status sees them."""
    proc = run(["git", "status", "--porcelain", "--untracked-files=all", "-z"], capture=True)
    entries = proc.stdout.split("\0")
    files = {}
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if not entry:
            continue
        status, path = entry[:2], entry[3:]
        if status[0] in "RC":  # a rename is followed by its source path
            i += 1
        p = REPO / path
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "absent"
        files[path] = (status, digest)
    return files


def generate_and_check(generators, bin_dir):
    """Runs the generators and fails if they changed anything: the committed generated code
    must be what the generators produce from the committed sources."""
    before = _dirty_files()
    generate(generators, bin_dir)
    after = _dirty_files()
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    if changed:
        subprocess.run(["git", "--no-pager", "diff", "--stat", "--", *changed], cwd=REPO)
        raise TaskError(
            "generated code is out of date: `python3 tasks.py generate` changed\n  "
            + "\n  ".join(changed)
            + "\nreview and commit these changes"
        )
    step("generate: generated code is up to date")


# ---------------------------------------------------------------------------------------------
# Build and tests

BUILD_PACKAGES = ["./controller", "./speaker", "./e2etest/labagent"]


def build():
    step(f"build: {' '.join(BUILD_PACKAGES)} into bin/")
    missing = [p for p in BUILD_PACKAGES if not (REPO / p).is_dir()]
    if missing:
        raise TaskError(f"nothing to build at {' '.join(missing)}")
    (REPO / "bin").mkdir(exist_ok=True)
    run(["go", "build", "-o", str(REPO / "bin") + "/", *BUILD_PACKAGES], env={"CGO_ENABLED": "0"})
    return REPO / "bin"


def go_test(packages, env, run_regex=None, verbose=False):
    """Runs go vet and go test; env tells the tests where the binaries they run are.

    go test runs with -json, so that the end of the output can say how many tests passed and
    name every one that skipped or failed: the proof that the privileged and API-server tests
    ran rather than skipped."""
    step(f"go vet {' '.join(packages)} (and the e2e suites, build tag e2e)")
    run(["go", "vet", *packages])
    run(["go", "vet", "-tags", "e2e", "./e2etest/"])
    args = ["go", "test", "-count=1", "-json"]
    if run_regex:
        args += ["-run", run_regex]
    args += packages
    passed = {k: os.environ[k] for k in ("CI", "MAGLB_REQUIRE_PRIVILEGED") if k in os.environ}
    step(f"{shlex.join(args)} ("
         + " ".join(f"{k}={v}" for k, v in {**env, **passed}.items()) + ")")
    sys.stdout.flush()
    proc = subprocess.Popen(args, cwd=REPO, env=dict(os.environ, **env), stdout=subprocess.PIPE, text=True)
    results = {"pass": [], "skip": [], "fail": []}
    held = {}  # a test's output, shown only if it fails (as go test does without -v)
    for line in proc.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            sys.stdout.write(line)
            continue
        action, test = event.get("Action"), event.get("Test")
        key = (event.get("Package"), test)
        if action == "output":
            if verbose or test is None:
                sys.stdout.write(event["Output"])
            else:
                held.setdefault(key, []).append(event["Output"])
        elif action in results and test:
            output = held.pop(key, [])
            if action == "fail" and not verbose:
                sys.stdout.write("".join(output))
            results[action].append(f"{event['Package'].removeprefix('github.com/maglb/maglb/')}.{test}")
    proc.wait()
    step(f"tests: {len(results['pass'])} passed, {len(results['skip'])} skipped, {len(results['fail'])} failed")
    for kind in ("skip", "fail"):
        for name in results[kind]:
            note(f"{kind}: {name}")
    if proc.returncode != 0:
        raise TaskError(f"tests failed (go test exit status {proc.returncode})")
    step("tests passed")


def python_tests():
    """The unit tests of the scripts in hack/ (hack/*_test.py)."""
    step("python tests: hack/*_test.py (unittest)")
    run([sys.executable, "-m", "unittest", "discover", "-s", REPO / "hack", "-p", "*_test.py"])


def bench(benchmarks, env, only, start_record):
    """Runs each benchmark command (argv lists) in turn, or those whose title or command
    matches the regular expression only, streaming what they print, and returns what
    start_record(title, argv) made of each, with the output and exit status added. Every
    benchmark runs even when one fails; bench_failures says which did."""
    records = []
    for title, argv in benchmarks:
        if only and not (re.search(only, title) or re.search(only, shlex.join(argv))):
            continue
        step(f"bench: {title}")
        record = start_record(title, argv)
        sys.stdout.flush()
        proc = subprocess.Popen(argv, cwd=REPO, env=dict(os.environ, **env), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        output = []
        for line in proc.stdout:
            sys.stdout.write(line)
            output.append(line)
        record.update(output="".join(output), returncode=proc.wait())
        records.append(record)
    if not records:
        raise TaskError(f"no benchmark matches {only!r}")
    return records


def bench_failures(records):
    """Fails when a benchmark run failed."""
    failed = [f"`{shlex.join(r['command'])}` (exit status {r['returncode']})" for r in records if r["returncode"] != 0]
    if failed:
        raise TaskError("benchmarks failed:\n  " + "\n  ".join(failed))


# ---------------------------------------------------------------------------------------------
# Fuzzing


def _selects(patterns, package):
    """Whether go package patterns (./x/, ./x/...) name package (./x/)."""
    package = package.rstrip("/")
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if pattern == package or (pattern.endswith("/...") and (package + "/").startswith(pattern[:-3])):
            return True
    return False


def fuzz(targets, duration, env, name_regex=None, packages=("./...",)):
    """Runs each fuzz target (package, function) of packages whose name matches name_regex
    for duration (a go test -fuzztime), one after the other, streaming go test's progress.

    A failing input is written by go test under <package>/testdata/fuzz/<function>/: once
    the bug is fixed it stays there, a seed that every `go test` of the package replays."""
    selected = [(pkg, fn) for pkg, fn in targets
                if _selects(packages, pkg) and (not name_regex or re.search(name_regex, fn))]
    if not selected and name_regex:
        raise TaskError(f"no fuzz target matches {name_regex!r}; the targets: "
                        + ", ".join(fn for _, fn in targets))
    if not selected:
        step(f"fuzz: no target in {' '.join(packages)}")
        return
    failed = []
    for i, (pkg, fn) in enumerate(selected, 1):
        step(f"fuzz {i}/{len(selected)}: {fn} in {pkg} for {duration}")
        corpus = Path(pkg) / "testdata" / "fuzz" / fn
        before = _files(corpus)
        argv = ["go", "test", "-run", "^$", "-fuzz", f"^{fn}$", "-fuzztime", duration, pkg]
        if run(argv, env=env, check=False).returncode != 0:
            found = sorted(_files(corpus) - before)
            if found:
                note(f"{fn} failed: the input that fails it is {', '.join(str(corpus / f) for f in found)} (commit it with the fix)")
            else:
                note(f"{fn} failed without writing a failing input (a build error, or Go's fuzz coordinator"
                     " failing at its own -fuzztime deadline: run it for a count of executions, --duration 20000x)")
            failed.append(fn)
    if failed:
        raise TaskError(f"fuzz targets failed: {', '.join(failed)}")
    step(f"fuzz: {', '.join(fn for _, fn in selected)} ran {duration} each without a failure")


def _files(folder):
    """The names of the files in folder; none when it does not exist."""
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()
