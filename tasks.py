#!/usr/bin/env python3
"""MagLB developer tasks: `python3 tasks.py --list` (or `inv --list`).

Runs with whichever python3 starts it: without the invoke package it re-executes itself under
/usr/bin/python3, installing Debian's python3-invoke first when needed.
"""

import os
import re
import subprocess
import sys

SYSTEM_PYTHON = "/usr/bin/python3"


def _bootstrap():
    """Makes `import invoke` work, re-executing under the system python3 if needed."""
    try:
        import invoke  # noqa: F401
        os.environ.pop("MAGLB_TASKS_REEXEC", None)  # children may start tasks.py afresh
        return
    except ImportError:
        pass

    def system_has_invoke():
        return subprocess.run([SYSTEM_PYTHON, "-c", "import invoke"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0

    if os.environ.get("MAGLB_TASKS_REEXEC") == "1" or not os.path.exists(SYSTEM_PYTHON):
        sys.exit(f"tasks.py: the python package invoke is missing for {sys.executable}; "
                 "install Debian's python3-invoke and run `/usr/bin/python3 tasks.py`")
    if not system_has_invoke():
        print("==> installing python3-invoke with apt-get (tasks.py runs on invoke)", file=sys.stderr, flush=True)
        sudo = [] if os.geteuid() == 0 else ["sudo", "-E"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = [*sudo, "apt-get", "install", "-y", "python3-invoke"]
        if subprocess.run(install, env=env, stdout=sys.stderr).returncode != 0:
            subprocess.run([*sudo, "apt-get", "update"], env=env, stdout=sys.stderr, check=False)
            if subprocess.run(install, env=env, stdout=sys.stderr).returncode != 0:
                sys.exit("tasks.py: `apt-get install -y python3-invoke` failed")
        if not system_has_invoke():
            sys.exit(f"tasks.py: {SYSTEM_PYTHON} still cannot import invoke after installing python3-invoke")
    os.environ["MAGLB_TASKS_REEXEC"] = "1"
    os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, os.path.abspath(__file__), *sys.argv[1:]])


if __name__ == "__main__":
    _bootstrap()

from pathlib import Path  # noqa: E402

from invoke import Collection, Exit, Program, task  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "hack"))

import benchreport  # noqa: E402
import e2e  # noqa: E402
import lab  # noqa: E402
import labupstream  # noqa: E402
import tooling  # noqa: E402
from tooling import Generator, TaskError  # noqa: E402

# apt packages the tasks and the tests need (`deps` installs the missing ones).
APT_PACKAGES = [
    "openssl",
    "curl",
    "ca-certificates",
    "python3-invoke",
    # eBPF programs (bpf2go) and the datapath tests
    "clang-14",
    "llvm-14",
    "libbpf-dev",
    "gcc-multilib",
    "iproute2",
    "ethtool",
    "iptables",
    # BGP tests against a real router
    "frr",
    "procps",
    # the lab's client (UDP to the VIPs) and kube-proxy's conntrack cleanup
    "netcat-openbsd",
    "conntrack",
    # the plots of `bench --report`
    "python3-matplotlib",
]

# Version of kube-apiserver, kube-controller-manager, kubectl, kube-proxy (and the etcd it pins) that `k8s-bins` builds.
K8S_VERSION = "1.37.2"

# Upstream MetalLB's controller, built for the differential test and the benchmarks.
UPSTREAM_METALLB_VERSION = "0.15.2"
# The helm binary the chart tests render charts/maglb with.
HELM_VERSION = "3.22.0"

# `bench` runs these in order (they print their own tables).
BENCHMARKS = [
    ("Maglev tables: build time per table size, imbalance, entries moved by one backend more or less (within a size and across steps)",
     ["go", "test", "-run", "^$", "-bench", ".", "./datapath/maglev/"]),
    ("XDP load balancer under BPF_PROG_RUN, kernel ns per packet: pass, new flow, established over 1M flows,"
     " at 10 / 1k / 100k VIPs with traffic over all of them, against the goals (3 runs)",
     ["go", "test", "-run", "^$", "-bench", "ProgRun", "-count", "3", "./datapath/ebpf/"]),
    ("connection table on two CPUs at once: shared vs per-CPU LRU, kernel ns per packet (3 runs)",
     ["go", "test", "-run", "^$", "-bench", "ConnectionTableContention", "-benchtime", "1x", "-count", "3", "./datapath/ebpf/"]),
    ("datapath maps: Sync time and memory for 10,000 VIPs x 10 backends",
     ["go", "test", "-run", "^$", "-bench", "Sync|MapMemory", "-benchtime", "1x", "./datapath/ebpf/"]),
    ("live packets per second through one LB namespace: XDP native and generic vs iptables DNAT, 10, 100, 1k and 10k services (3 runs)",
     ["go", "test", "-run", "^$", "-bench", "LivePacketRate", "-benchtime", "1x", "-count", "3", "./datapath/ebpf/"]),
    ("speaker: IP written to route at FRR, p50/p99 over 1,000 services, and services announced per second",
     ["go", "test", "-run", "^$", "-bench", "Announce", "-benchtime", "1x", "-timeout", "20m", "./speaker/"]),
    ("speaker: 500 of 1,000 Services deleted at once, API server to route withdrawn at FRR, MagLB vs upstream v0.15.2's speaker",
     ["go", "test", "-run", "^$", "-bench", "Withdraw", "-benchtime", "1x", "-timeout", "20m", "./speaker/"]),
    ("allocator: allocations per second, 10,000 services over a /16",
     ["go", "test", "-run", "^$", "-bench", "Allocate10kServicesSlash16", "./internal/allocator/"]),
    ("end to end: 5,000 LoadBalancer Services until every one has an IP, upstream MetalLB vs MagLB",
     ["go", "test", "-run", "^$", "-bench", "EndToEnd", "-benchtime", "1x", "-timeout", "30m", "./controller/"]),
    ("projection: 1,000 LoadBalancer Services created at once in a workload cluster, create to VIP in its status:"
     " p50/p99 and Services/s against the goal of 200/s (two API servers, allocation and projection in process)",
     ["go", "test", "-run", "^$", "-bench", "Projection1000Services", "-benchtime", "1x", "-timeout", "20m", "./controller/"]),
    ("projection: a workload endpoint's readiness flipped 50 times → the workload node's weight in an LB node's BPF ring"
     " (controller binary, speaker with the ebpf datapath): p50/p99 against the goal p99 < 2 s",
     ["go", "test", "-run", "^$", "-bench", "ProjectionEndpointToDatapath", "-benchtime", "1x", "-timeout", "10m", "./speaker/"]),
    ("ToR scale: LB nodes as speaker processes in shards with VIPs (by default 50, 4 and 10,000; MAGLB_SCALE_NODES,"
     " MAGLB_SCALE_SHARDS and MAGLB_SCALE_SERVICES set others), full mesh vs two route reflectors: the ToR's"
     " sessions, paths, FIB routes, FRR memory, convergence and an LB node's death, against the goals",
     ["go", "test", "-run", "^$", "-bench", "ToRScale", "-benchtime", "1x", "-timeout", "150m", "./speaker/"]),
]

# `fuzz` runs these go test -fuzz targets (package, function) in order; CI runs each for
# CI_FUZZ_TIME after the tests. That is a count of executions, not a duration: Go 1.26's fuzz
# coordinator can fail a target at its own -fuzztime deadline ("context deadline exceeded",
# no failing input; Go issue 75804, fixed in 1.27), and a loaded CI machine makes that likely.
FUZZ_TARGETS = [
    ("./datapath/ebpf/", "FuzzBalance"),
    ("./internal/config/", "FuzzFor"),
    ("./internal/allocator/", "FuzzAllocatorEvents"),
]
CI_FUZZ_TIME = "20000x"

# `generate` runs these in order; CI fails when they change anything committed.
GENERATORS = [
    Generator("deepcopy for upstream/ (controller-gen object)", [
        "go", "tool", "controller-gen", "object:headerFile=hack/boilerplate.go.txt", "paths=./upstream/...", "paths=./api/...",
    ]),
    Generator("CRDs of upstream MetalLB's kinds (controller-gen crd)", [
        "go", "tool", "controller-gen", "crd:crdVersions=v1", "paths=go.universe.tf/metallb/api/...",
        "output:crd:artifacts:config=config/crd/bases",
    ]),
    Generator("CRDs of MagLB's kinds, IPAddressPool with spec.shard (controller-gen crd)", [
        "go", "tool", "controller-gen", "crd:crdVersions=v1", "paths=./upstream/api/...",
        "output:crd:artifacts:config=config/crd/bases",
    ]),
    Generator("CRDs of maglb.io, WorkloadCluster (controller-gen crd)", [
        "go", "tool", "controller-gen", "crd:crdVersions=v1", "paths=./api/...",
        "output:crd:artifacts:config=config/crd/bases",
    ]),
    Generator("eBPF programs and their Go bindings (bpf2go, clang-14)", [
        "go", "generate", "./bpf/",
    ]),
    Generator("all-in-one manifest config/manifests/maglb.yaml (kubectl kustomize config/default)",
              tooling.render_manifest),
    Generator("the Helm chart's CRDs and RBAC rules, charts/maglb (kubectl kustomize config/crd, config/rbac, config/backend-agent, config/reflector, config/workload-cluster)",
              tooling.render_chart_files),
]


def _tool(fn):
    """Turns TaskError into a clean non-zero exit."""
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TaskError as e:
            raise Exit(f"error: {e}", code=1) from None
    return wrapper


@_tool
def _deps():
    tooling.ensure_packages(APT_PACKAGES)


@_tool
def _k8s_bins(force=False):
    return tooling.ensure_k8s_bins(K8S_VERSION, force=force)


@_tool
def _generate(check=False, bin_dir=None):
    bin_dir = bin_dir or tooling.ensure_k8s_bins(K8S_VERSION)
    if check:
        tooling.generate_and_check(GENERATORS, bin_dir)
    else:
        tooling.generate(GENERATORS, bin_dir)


@_tool
def _build():
    return tooling.build()


@_tool
def _upstream():
    """Upstream MetalLB's release the upgrade lab runs: its binaries and the helm that renders its
    chart, each built once when missing."""
    controller = tooling.ensure_upstream_metallb(UPSTREAM_METALLB_VERSION)
    return labupstream.Upstream(UPSTREAM_METALLB_VERSION, controller.parent, tooling.ensure_helm(HELM_VERSION))


@_tool
def _test_env():
    """Builds (or finds cached) what the tests run and returns the environment naming it."""
    return {
        "KUBEBUILDER_ASSETS": str(tooling.ensure_k8s_bins(K8S_VERSION)),
        "MAGLB_UPSTREAM_METALLB": str(tooling.ensure_upstream_metallb(UPSTREAM_METALLB_VERSION)),
        "MAGLB_HELM": str(tooling.ensure_helm(HELM_VERSION)),
    }


@task
def deps(c):
    """Install the apt packages the tasks and tests need (only the missing ones)."""
    _deps()


@task(help={"force": "rebuild even when the cached binaries report the wanted version"})
def k8s_bins(c, force=False):
    """Build kube-apiserver, kube-controller-manager, kubectl, kube-proxy, etcd, etcdctl (cached); prints their directory last."""
    bin_dir = _k8s_bins(force)
    print(bin_dir, flush=True)


@task
def generate(c):
    """Regenerate deepcopy code, CRDs (config/crd/bases) and config/manifests/maglb.yaml."""
    _generate()


@task
def build(c):
    """Build bin/controller, bin/speaker and bin/labagent."""
    _build()


@task(help={
    "run": "only tests matching this regular expression (go test -run)",
    "pkg": "package pattern(s), space-separated (default ./...)",
    "verbose": "go test -v",
    "smoke": "after the Go tests, run the e2e smoke specs (BGP + ebpf datapath through the lab, in full mesh and with route reflectors); on by default, off with --no-smoke or --run",
})
def test(c, run=None, pkg="./...", verbose=False, smoke=True):
    """Run go vet, every test against a real kube-apiserver, the Python tests of hack/, then the e2e smoke specs on the lab
    (CI=true: also check generated code, and fuzz each target for 20,000 executions after the tests)."""
    _deps()
    env = _test_env()
    if os.environ.get("CI") == "true":
        _generate(check=True, bin_dir=Path(env["KUBEBUILDER_ASSETS"]))
        # CI proves each component's RBAC is what it uses: every verb one at a time removed.
        env["MAGLB_RBAC_TABLE"] = "1"
    _tool(tooling.go_test)(pkg.split(), env, run_regex=run, verbose=verbose)
    if not run:
        _tool(tooling.python_tests)()
    if os.environ.get("CI") == "true" and not run:
        _tool(tooling.fuzz)(FUZZ_TARGETS, CI_FUZZ_TIME, env, packages=pkg.split())
    if smoke and not run:
        _build()
        _tool(e2e.run_smoke)(Path(env["KUBEBUILDER_ASSETS"]), K8S_VERSION)


@task(help={
    "duration": "how long each target runs (go test -fuzztime: 60s, 5m, or 10000x executions)",
    "target": "only the targets whose function name matches this regular expression",
})
def fuzz(c, duration="60s", target=None):
    """Run each fuzz target (XDP program, configuration, allocator) for a set time, one after the other."""
    _deps()
    _tool(tooling.fuzz)(FUZZ_TARGETS, duration, {}, name_regex=target)


@task(help={
    "report": "write docs/performance.md (plots in docs/img/) and docs/comparison.md from the runs",
    "only": "only the benchmarks whose title or command matches this regular expression; with --report, "
            "the others' figures come from their last recorded runs",
    "recorded": "run nothing: write the report from the runs recorded in docs/bench-runs/ (after a change to "
                "the report's text or its template)",
})
def bench(c, report=False, only=None, recorded=False):
    """Run the benchmarks and print their tables (allocator, end to end against upstream, ...)."""
    _deps()
    records = []
    if not recorded:
        # A benchmark that cannot run fails rather than skips: a skip would leave a figure out unnoticed.
        env = dict(_test_env(), MAGLB_REQUIRE_PRIVILEGED="1")
        records = _tool(tooling.bench)(BENCHMARKS, env, only, benchreport.start_record)
    if report and not recorded:
        benchreport.save_runs(records, fresh=only is None)
    if report or recorded:
        for path in benchreport.write_report(BENCHMARKS, benchreport.load_runs(), benchreport.load_e2e_reports()):
            tooling.step(f"bench report: wrote {path.relative_to(tooling.REPO)}")
    _tool(tooling.bench_failures)(records)


LAB_HELP = {
    "datapath": "ebpf (XDP Maglev, direct server return; the default) or kubeproxy (kube-proxy iptables, upstream's path)",
    "protocol": "bgp (the default: the ToR learns the VIPs over BGP, ECMP) or layer2 (ARP)",
    "lb_nodes": "how many LB nodes (default 3)",
    "encap": "ipip (the default) or gue: how the ebpf datapath reaches the backends",
    "workload_clusters": "how many workload clusters behind the LB cluster (default 1, 0 for none): each its own "
                         "API server and kube-controller-manager, two nodes on the rack (backend agent, kube-proxy), "
                         "the Service demo/echo, and a WorkloadCluster in the LB cluster",
    "metallb": f"maglb (the default) or upstream: start with upstream MetalLB v{UPSTREAM_METALLB_VERSION}'s own "
               "controller and speakers, CRDs, and the arguments of its Helm chart (native BGP, no memberlist), "
               "datapath kubeproxy, no workload clusters, a configuration upstream's native mode accepts; "
               "`hack/lab.py swap maglb|upstream` then replaces one with the other as an upgrade does",
    "bgp_mode": "full-mesh (the default: every LB node peers with the ToR) or reflector: the LB nodes peer with two "
                "route reflectors (speaker --role=reflector in maglb-refl1, maglb-refl2), which announce each shard's "
                "aggregate to the ToR with one path per LB node (ADD-PATH, ECMP)",
}


@task(help=LAB_HELP)
def dev_env(c, datapath=None, protocol="bgp", lb_nodes=3, encap="ipip", workload_clusters=None, metallb="maglb",
            bgp_mode="full-mesh"):
    """Bring up the lab: API server, controller, a ToR (FRR), LB nodes, backends, two demo Services, workload clusters."""
    _deps()
    bin_dir = _k8s_bins()
    _build()
    upstream = _upstream() if metallb == "upstream" else None
    # With upstream MetalLB the lab's defaults are the only options it runs with.
    datapath = datapath or ("kubeproxy" if upstream else "ebpf")
    workload_clusters = (0 if upstream else 1) if workload_clusters is None else workload_clusters
    _tool(lambda: lab.Lab(bin_dir, K8S_VERSION, datapath, protocol, lb_nodes, encap, workload_clusters, metallb,
                          upstream, bgp_mode=bgp_mode).up())()


@task(help={
    "focus": "only the specs matching this regular expression (ginkgo --focus)",
    "skip": "not the specs matching this regular expression (ginkgo --skip)",
    "label_filter": "a Ginkgo label filter replacing each pass's own, e.g. 'datapath && !survival'",
    "passes": "comma-separated passes, in order (default layer2,kubeproxy,gue,upgrade,reflector,ebpf; ebpf, the default lab, "
              "stays up)",
})
def e2etest(c, focus=None, skip=None, label_filter=None, passes="layer2,kubeproxy,gue,upgrade,reflector,ebpf"):
    """Run the e2e suites (e2etest/, Ginkgo) on the lab, once per lab variant; print the figures."""
    _deps()
    bin_dir = _k8s_bins()
    _build()
    _tool(e2e.run_e2e)(bin_dir, K8S_VERSION, [p.strip() for p in passes.split(",") if p.strip()], focus, skip, label_filter,
                       upstream=_upstream)


@task(help={
    "duration": "how long the Services are churned after they are created (Go duration, at least 10m for the figures)",
    "services": "how many Services the soak keeps",
    "batch": "how many Services get other endpoints, and how many are replaced, in each round",
    "delete_all": "end by deleting every soak Service and checking the maps hold what they held before (on by default; "
                  "--no-delete-all leaves them to dev-env-cleanup: the API server deletes a few a second)",
})
def soak(c, duration="10m", services=10000, batch=500, delete_all=True):
    """Churn soak on the default lab: SERVICES LoadBalancer Services created, their endpoints moved
    and Services replaced, BATCH of each per round, for DURATION while requests run through the demo
    VIPs; then checks IPs, programmed maps, leaks (all deleted: maps as before), failed requests
    and memory (RSS over time), and prints the figures."""
    _deps()
    bin_dir = _k8s_bins()
    _build()
    _tool(e2e.run_e2e)(bin_dir, K8S_VERSION, ["ebpf"], label_filter="soak",
                       extra_args=[f"--soak-duration={duration}", f"--soak-services={services}", f"--soak-batch={batch}",
                                   f"--soak-delete-all={'true' if delete_all else 'false'}"],
                       # Kubernetes allocates ClusterIPs one at a time: at a few per second on a
                       # loaded machine, creating (and deleting) the Services takes longer than the churn.
                       timeout=f"{_minutes(duration) + 30 + int(services) // 100}m")


def _minutes(duration):
    """Whole minutes of a Go duration such as 10m, 90s or 1h (rounded up)."""
    seconds = 0
    for number, unit in re.findall(r"(\d+)([hms])", duration):
        seconds += int(number) * {"h": 3600, "m": 60, "s": 1}[unit]
    if not seconds or re.sub(r"\d+[hms]", "", duration):
        raise Exit(f"error: --duration {duration!r} is not a duration such as 10m, 90s or 1h30m", code=2)
    return -(-seconds // 60)


@task
def dev_env_cleanup(c):
    """Stop the lab's processes (by their pid files), delete its namespaces and bpffs, remove .dev-env/."""
    _tool(lab.cleanup)()


def _version():
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=os.path.dirname(os.path.abspath(__file__)),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    try:
        Program(namespace=Collection.from_module(sys.modules[__name__]), version=_version(), name="MagLB tasks",
                binary="python3 tasks.py").run()
    except BrokenPipeError:  # output piped into head and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
