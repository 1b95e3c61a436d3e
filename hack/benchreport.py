"""`tasks.py bench --report`: the benchmarks' output turned into docs/performance.md, with PNG
plots in docs/img/, and docs/comparison.md (hack/benchreport-comparison.md filled with the
figures).

Each benchmark run is kept in docs/bench-runs/ (its command, output, start time, load average
and the machine), committed with the report as the output its figures come from, so that
`--only` reruns a subset and the report still has the others; a run without `--only` starts
afresh. The connection-survival figures come from the reports
`tasks.py e2etest` leaves in .e2e-reports/; the report never carries a figure it did not read
from one of these.
"""

import hashlib
import json
import os
import platform
import re
import shlex
import statistics
import string
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
RUNS = DOCS / "bench-runs"
E2E_REPORTS = REPO / ".e2e-reports"
COMPARISON_TEMPLATE = Path(__file__).resolve().parent / "benchreport-comparison.md"
E2E_COMMAND = "python3 tasks.py e2etest"

# ---------------------------------------------------------------------------------------------
# Parsing go test -bench output

# A result line: the name (GOMAXPROCS suffix apart), then iterations and value-unit pairs. go
# test prints the name before the last round runs, so what the benchmark prints itself comes
# between the name and the figures, which then start a line of their own.
NAME = re.compile(r"^Benchmark(\S+?)(?:-\d+)?(?:\s+(.*))?$")
FIGURES = re.compile(r"^\s*\d+((?:\s+[-+0-9.eE]+\s+\S+)+)\s*$")


@dataclass
class Result:
    package: str
    name: str  # without "Benchmark" and the GOMAXPROCS suffix: "ProgRun/VIPs=10/pass"
    metrics: dict = field(default_factory=dict)  # unit → value


def parse(text):
    """The results in go test -bench output, in order (one per -count run)."""
    results, package, pending = [], "", None
    for line in text.splitlines():
        if line.startswith("pkg: "):
            package = line[len("pkg: "):].strip()
            continue
        name = NAME.match(line)
        if name:
            # Sub-benchmarks of the same name are numbered #01, #02...: they are measured alike.
            pending, line = re.sub(r"#\d+$", "", name.group(1)), name.group(2) or ""
        figures = FIGURES.match(line)
        if pending and figures:
            fields = figures.group(1).split()
            metrics = {fields[i + 1]: float(fields[i]) for i in range(0, len(fields), 2)}
            results.append(Result(package, pending, metrics))
            pending = None
    return results


def values(results, name, unit):
    """Every run's value of unit for the benchmark called name."""
    return [r.metrics[unit] for r in results if r.name == name and unit in r.metrics]


def span(vals, fmt="{:,.0f}", unit=""):
    """min–max of vals (or the one value) with unit; "–" when there is none."""
    if not vals:
        return "–"
    low, high = fmt.format(min(vals)), fmt.format(max(vals))
    text = low if low == high else f"{low}–{high}"
    return f"{text} {unit}".rstrip()


def median(vals):
    return statistics.median(vals) if vals else None


def verdict(met):
    return "met" if met else "**missed**"


def goal_verdict(vals, met):
    """met (a predicate on the median) as a verdict; "–" without figures."""
    if not vals:
        return "–"
    return verdict(met(median(vals)))


# ---------------------------------------------------------------------------------------------
# Recording runs


def machine():
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release()}


def run_key(argv):
    return hashlib.sha256(shlex.join(argv).encode()).hexdigest()[:12]


def start_record(title, argv):
    """A run's record before it starts: command, machine, date, load average."""
    return {"title": title, "command": list(argv), "machine": machine(),
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def save_runs(records, fresh, directory=RUNS):
    """Keeps the records; fresh forgets every earlier one first. A failed run does not replace
    a recorded run of the same command that succeeded: the figures stay those of a whole run
    (the failure is reported, not recorded)."""
    directory.mkdir(parents=True, exist_ok=True)
    if fresh:
        for old in directory.glob("*.json"):
            old.unlink()
    for r in records:
        path = directory / f"{run_key(r['command'])}.json"
        if r["returncode"] != 0 and path.exists() and json.loads(path.read_text()).get("returncode") == 0:
            continue
        path.write_text(json.dumps(r, indent=1))


def load_runs(directory=RUNS):
    """Recorded runs by their command line."""
    runs = {}
    for path in sorted(directory.glob("*.json")):
        r = json.loads(path.read_text())
        runs[shlex.join(r["command"])] = r
    return runs


def load_e2e_reports(directory=E2E_REPORTS):
    """The e2e figures by report name (survival-ebpf, bfd-kubeproxy, ...), each with the date
    its file was written."""
    reports = {}
    for path in sorted(directory.glob("*.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        r["written"] = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        reports[path.stem] = r
    return reports


# ---------------------------------------------------------------------------------------------
# Figures


class Figures:
    """The parsed runs of every benchmark in the list, found by package and -bench pattern."""

    def __init__(self, benchmarks, runs):
        self.benchmarks = benchmarks
        self.runs = runs

    def run(self, package, pattern):
        """The record, with its parsed results, of the benchmark command for package whose -bench
        pattern is pattern; one marked missing when the list has it but no run was recorded."""
        for _, argv in self.benchmarks:
            if package in argv and argv[argv.index("-bench") + 1] == pattern:
                record = self.runs.get(shlex.join(argv))
                if record is None:
                    return {"command": argv, "missing": True, "results": []}
                return dict(record, results=parse(record["output"]))
        raise KeyError(f"no benchmark of {package} with -bench {pattern} in the list")


def measured(record):
    """How a figure was measured: command, machine, date and load average of its run."""
    cmd = shlex.join(record["command"])
    if record.get("missing"):
        return f"Not measured in this run: `{cmd}` did not run (`python3 tasks.py bench --report`)."
    m = record["machine"]
    load = " / ".join(f"{x:.2f}" for x in record["load_average"])
    text = (f"Measured with `{cmd}` on {m['cpus']} CPUs ({m['cpu_model']}), kernel {m['kernel']}, "
            f"load average {load} (1/5/15 min) at its start, {record['started']}.")
    if record["returncode"] != 0:
        text += f" **The run failed (exit status {record['returncode']})**; figures it printed before failing are shown."
    elif not record["results"]:
        text += (" **It printed no figures**: its benchmarks skipped (what they need was unavailable; "
                 "`go test -v` says what).")
    return text


def printed(record, pattern, default):
    """The number the benchmark printed where pattern's group is, as a count; default when it
    printed none (it did not run)."""
    m = re.search(pattern, record.get("output", ""))
    return fmt_count(int(m.group(1))) if m else default


def fmt_count(n):
    return f"{n:,.0f}"


class Plotter:
    """PNG plots into a directory, matplotlib without a display; the names written so far are
    kept so stale images can be removed."""

    def __init__(self, directory):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        self.plt = plt
        self.directory = directory
        self.written = []
        directory.mkdir(parents=True, exist_ok=True)

    def figure(self, title, xlabel, ylabel):
        fig, ax = self.plt.subplots(figsize=(7, 4), dpi=100)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        return fig, ax

    def save(self, fig, name):
        fig.tight_layout()
        # No timestamps in the file, so an unchanged figure is an unchanged file.
        fig.savefig(self.directory / name, metadata={"Software": None})
        self.plt.close(fig)
        self.written.append(name)
        return f"img/{name}"

    def bars(self, name, title, ylabel, groups, series, goals=None, log=False):
        """Grouped bars: series is [(label, [values per group, each a list of runs])]; the bar
        is the median, the whisker min–max; goals (one per group, or None) are dashed lines."""
        fig, ax = self.figure(title, "", ylabel)
        width = 0.8 / max(len(series), 1)
        for i, (label, per_group) in enumerate(series):
            xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
            meds = [median(v) or 0 for v in per_group]
            lows = [m - min(v) if v else 0 for m, v in zip(meds, per_group)]
            highs = [max(v) - m if v else 0 for m, v in zip(meds, per_group)]
            ax.bar(xs, meds, width, label=label, yerr=[lows, highs], capsize=3)
        ax.set_xticks(range(len(groups)), groups, fontsize=9)
        for g, goal in enumerate(goals or []):
            if goal is not None:
                ax.hlines(goal, g - 0.45, g + 0.45, colors="black", linestyles="--", linewidth=1,
                          label="goal" if g == next(i for i, x in enumerate(goals) if x is not None) else None)
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
        return self.save(fig, name)

    def lines(self, name, title, xlabel, ylabel, xs, series, logx=True, logy=False):
        """Lines of medians with min–max error bars: series is [(label, [runs per x])]."""
        fig, ax = self.figure(title, xlabel, ylabel)
        for label, per_x in series:
            points = [(x, v) for x, v in zip(xs, per_x) if v]
            if not points:
                continue
            px = [x for x, _ in points]
            meds = [median(v) for _, v in points]
            err = [[m - min(v) for m, (_, v) in zip(meds, points)], [max(v) - m for m, (_, v) in zip(meds, points)]]
            ax.errorbar(px, meds, yerr=err, marker="o", capsize=3, label=label)
        if logx:
            ax.set_xscale("log")
        ax.set_xticks(xs, [fmt_count(x) for x in xs], fontsize=8)
        ax.minorticks_off()
        if logy:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        return self.save(fig, name)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def image(path, alt):
    return f"![{alt}]({path})"


# Each section returns (markdown, {comparison placeholder: text}, [goal lines]).


def packet_rate(fig, plot):
    rec = fig.run("./datapath/ebpf/", "LivePacketRate")
    res = rec["results"]
    counts = sorted({int(r.name.split("=")[1]) for r in res if r.name.startswith("LivePacketRate/services=")})
    kinds = [("XDP native", "xdp-native-Mpps"), ("XDP generic", "xdp-generic-Mpps"), ("iptables DNAT", "dnat-Mpps")]
    per = {unit: [values(res, f"LivePacketRate/services={n}", unit) for n in counts] for _, unit in kinds}
    goals = {10: 3, 10000: 10}
    rows, goal_lines = [], []
    for i, n in enumerate(counts):
        ratio = values(res, f"LivePacketRate/services={n}", "native/dnat")
        goal = "–"
        if n in goals:
            outcome = goal_verdict(ratio, lambda m, g=goals[n]: m >= g)
            goal = f"≥ {goals[n]}×: {outcome}"
            goal_lines.append(f"XDP native ≥ {goals[n]}× iptables DNAT at {fmt_count(n)} services: "
                              f"{span(ratio, '{:.1f}', '×')} — {outcome}")
        rows.append([fmt_count(n)] + [span(per[u][i], "{:.2f}", "Mpps") for _, u in kinds]
                    + [span(ratio, "{:.1f}", "×"), goal])
    md = ["## Packets per second against the number of services", "",
          measured(rec), "UDP, 64 flows, from an XDP generator through one load-balancer namespace on veth to an XDP "
          "sink; the measured service is the last of N. Generator, LB and sink share the CPUs, so every rate includes "
          "the generator's cost; medians, whiskers min–max of the runs.", ""]
    if counts:
        md += [image(plot.lines("packet-rate.png", "Packets/s through one LB namespace (veth, UDP, 64 flows)",
                                "services", "Mpps", counts, [(k, per[u]) for k, u in kinds]), "packets per second"), ""]
        md.append(table(["services", "XDP native", "XDP generic", "iptables DNAT", "native / DNAT", "goal"], rows))
    big = counts[-1] if counts else None
    fill = {"pps": ("packets/s: not measured in this run" if big is None else
                    f"{span(per['xdp-native-Mpps'][-1], '{:.2f}', 'Mpps')} XDP native, "
                    f"{span(per['xdp-generic-Mpps'][-1], '{:.2f}', 'Mpps')} generic, against "
                    f"{span(per['dnat-Mpps'][-1], '{:.2f}', 'Mpps')} for iptables DNAT, at {fmt_count(big)} services "
                    f"on one veth namespace ([plot](performance.md#packets-per-second-against-the-number-of-services))")}
    return "\n".join(md), fill, goal_lines


def prog_run(fig, plot):
    rec = fig.run("./datapath/ebpf/", "ProgRun")
    res = rec["results"]
    vips = sorted({int(r.name.split("/")[1].split("=")[1]) for r in res if r.name.count("/") == 2})
    cases = [("pass", "pass (no VIP)", 40), ("new-flow", "new flow (table full)", 300),
             ("established-1M", "established, 1M flows", 150), ("harness", "harness alone", None)]
    per = {c: [values(res, f"ProgRun/VIPs={v}/{c}", "ns/op") for v in vips] for c, _, _ in cases}
    rows, goal_lines = [], []
    for case, label, goal in cases:
        verdicts = "–"
        if goal is not None:
            verdicts = ", ".join(f"{goal_verdict(v, lambda m: m <= goal)} at {fmt_count(n)}" for n, v in zip(vips, per[case]) if v)
            for n, v in zip(vips, per[case]):
                if v:
                    goal_lines.append(f"PROG_RUN {label} ≤ {goal} ns at {fmt_count(n)} VIPs: {span(v, unit='ns')} — "
                                      f"{goal_verdict(v, lambda m: m <= goal)}")
        rows.append([label] + [span(v, unit="ns") for v in per[case]]
                    + [f"≤ {goal} ns: {verdicts}" if goal else "–"])
    flat = []
    for case, label, _ in cases[1:3]:
        low, high = per[case][0] if vips else [], per[case][-1] if vips else []
        if low and len(low) == len(high):
            ratios = [h / lo for h, lo in zip(high, low)]
            outcome = goal_verdict(ratios, lambda m: m <= 1.2)
            flat.append(f"{label}: {fmt_count(vips[-1])} VIPs / {fmt_count(vips[0])} VIPs = {span(ratios, '{:.2f}', '×')} "
                        f"(goal ≤ 1.2×: {outcome})")
            goal_lines.append(f"PROG_RUN {label} flat from {fmt_count(vips[0])} to {fmt_count(vips[-1])} VIPs (≤ 1.2×): "
                              f"{span(ratios, '{:.2f}', '×')} — {outcome}")
    md = ["## XDP program under BPF_PROG_RUN, ns per packet", "",
          measured(rec), "BPF_PROG_RUN with repeat on a thread pinned to CPU 0, the kernel's own duration per run; "
          "flows from a per-CPU counter spread over every VIP (two backends each); the harness row (counter and "
          "rewrite) is included in new flow and established.", ""]
    if vips:
        md += [image(plot.bars("prog-run.png", "XDP balancer under BPF_PROG_RUN (kernel ns per packet)", "ns per packet",
                               [label for _, label, _ in cases],
                               [(f"{fmt_count(n)} VIPs", [per[c][i] for c, _, _ in cases]) for i, n in enumerate(vips)],
                               goals=[goal for _, _, goal in cases], log=True), "PROG_RUN ns per case"), "",
               table(["case"] + [f"{fmt_count(n)} VIPs" for n in vips] + ["goal (median)"], rows), ""]
        md += [f"- {line}" for line in flat]
    fill = {"prog_run": "BPF_PROG_RUN: not measured in this run" if not vips else
            (f"{span(per['pass'][-1], unit='ns')} for a packet to no VIP, {span(per['established-1M'][-1], unit='ns')} "
             f"established and {span(per['new-flow'][-1], unit='ns')} new flow at {fmt_count(vips[-1])} VIPs under "
             f"BPF_PROG_RUN ([figure](performance.md#xdp-program-under-bpf_prog_run-ns-per-packet))")}
    return "\n".join(md), fill, goal_lines


def maglev(fig, plot):
    rec = fig.run("./datapath/maglev/", ".")
    res = rec["results"]
    builds = [r for r in res if r.name.startswith("Build/N=")]
    ns = sorted({int(r.name.split("=")[1]) for r in builds})
    sizes = [values(res, f"Build/N={n}", "M")[0] for n in ns]
    times = [[v / 1e6 for v in values(res, f"Build/N={n}", "ns/op")] for n in ns]
    imbalance = [values(res, f"Build/N={n}", "max/avg") for n in ns]
    pairs = [r.name.removeprefix("Disruption/") for r in res if r.name.startswith("Disruption/")]
    moved = {p: values(res, f"Disruption/{p}", "moved%") for p in dict.fromkeys(pairs)}
    all_moved = [v for vs in moved.values() for v in vs]
    all_imbalance = [v for vs in imbalance for v in vs] + [v for p in moved for v in values(res, f"Disruption/{p}", "max/avg")]
    goal_lines = []
    if all_moved:
        goal_lines.append(f"Maglev: ≤ 2% of the survivors' entries moved by one backend more or less: worst "
                          f"{max(all_moved):.1f}% — {verdict(max(all_moved) <= 2)}")
    if all_imbalance:
        goal_lines.append(f"Maglev: busiest backend ≤ 1.05 of the average: worst {max(all_imbalance):.3f} — "
                          f"{verdict(max(all_imbalance) <= 1.05)}")
    md = ["## Maglev table build time against table size", "", measured(rec),
          "One table build per size Sync uses, with the most backends that size takes (100 entries per backend); "
          "each size derived from the half-size one.", ""]
    if ns:
        md += [image(plot.lines("maglev-build.png", "Maglev table build time", "table size M (entries)", "ms per build",
                                sizes, [("build", times)], logx=True, logy=True), "Maglev build time"), "",
               table(["backends N", "table size M", "build", "busiest / average (goal ≤ 1.05)"],
                     [[fmt_count(n), fmt_count(m), span(t, "{:,.2f}", "ms"), span(i, "{:.3f}")]
                      for n, m, t, i in zip(ns, sizes, times, imbalance)]), ""]
    if moved:
        md += ["Entries of the surviving backends that move to another survivor when one backend is added or removed "
               "(min–max over the first, middle and last key; goal ≤ 2%):", "",
               table(["N ↔ N+1", "table sizes", "moved", "goal"],
                     [[p, f"{fmt_count(values(res, f'Disruption/{p}', 'M-before')[0])} → "
                          f"{fmt_count(values(res, f'Disruption/{p}', 'M-after')[0])}",
                       span(v, "{:.1f}", "%"), goal_verdict(v, lambda m: m <= 2)] for p, v in moved.items()])]
    fill = {"maglev": "Maglev build: not measured in this run" if not ns else
            (f"a table of {fmt_count(sizes[-1])} entries ({fmt_count(ns[-1])} backends) built in "
             f"{span(times[-1], '{:.1f}', 'ms')}; one backend more or less moves at most "
             f"{max(all_moved):.1f}% of the others' entries" if all_moved else
             f"a table of {fmt_count(sizes[-1])} entries built in {span(times[-1], '{:.1f}', 'ms')}")
            + " ([figure](performance.md#maglev-table-build-time-against-table-size))"}
    return "\n".join(md), fill, goal_lines


def control_plane(fig, plot):
    e2e = fig.run("./controller/", "EndToEnd")
    proj = fig.run("./controller/", "Projection1000Services")
    alloc = fig.run("./internal/allocator/", "Allocate10kServicesSlash16")
    impls = [("upstream", "upstream MetalLB v0.15.2"), ("maglb", "MagLB")]
    rate = {k: values(e2e["results"], f"EndToEnd5000Services/{k}", "services/s") for k, _ in impls}
    n = printed(e2e, r"end to end, (\d+) pre-created", "5,000")
    md = ["## Control plane: Services per second", "", measured(e2e),
          f"Each controller on a fresh API server (same kube-apiserver and etcd build) holding {n} pre-created "
          "LoadBalancer Services and one /16 pool; from starting the controller until every Service has an IP.", ""]
    fill = {}
    if any(rate.values()):
        md += [image(plot.bars("control-plane.png", f"{n} LoadBalancer Services until each has an IP", "Services/s",
                               [label for _, label in impls], [("Services/s", [rate[k] for k, _ in impls])]),
                     "control plane Services/s"), ""]
        md.append(table(["controller", "Services/s", "first IP", "API writes per Service", "controller CPU"],
                        [[label, span(rate[k], "{:,.1f}"),
                          span(values(e2e["results"], f"EndToEnd5000Services/{k}", "s-to-first-IP"), "{:.2f}", "s"),
                          span(values(e2e["results"], f"EndToEnd5000Services/{k}", "writes/service"), "{:.2f}"),
                          span(values(e2e["results"], f"EndToEnd5000Services/{k}", "controller-CPU-s"), "{:.1f}", "s")]
                         for k, label in impls]))
    for k, label in impls:
        fill[f"rate_{k}"] = (f"{span(rate[k], '{:,.1f}')} Services/s to allocate {n} pre-created Services "
                             f"([figure](performance.md#control-plane-services-per-second))"
                             if rate[k] else "allocation: not measured in this run")
    pres = proj["results"]
    created = printed(proj, r"projection, (\d+) LoadBalancer", "1,000")
    prate = values(pres, "Projection1000Services", "services/s")
    p99 = values(pres, "Projection1000Services", "p99-ms")
    goal_lines = []
    md += ["", "### Projection from a workload cluster", "", measured(proj),
           "Two API servers (LB and workload cluster), MagLB's controller in process; "
           f"{created} LoadBalancer Services "
           "created at once in the workload cluster, each from its create request to its VIP in the workload "
           "Service's status.", ""]
    if prate:
        outcome = goal_verdict(prate, lambda m: m >= 200)
        goal_lines.append(f"Projection ≥ 200 Services/s: {span(prate, '{:.1f}')} — {outcome}")
        md.append(table(["p50", "p99", "Services/s (goal ≥ 200)"],
                        [[span([v / 1000 for v in values(pres, 'Projection1000Services', 'p50-ms')], '{:.1f}', 's'),
                          span([v / 1000 for v in p99], "{:.1f}", "s"), f"{span(prate, '{:.1f}')}: {outcome}"]]))
    fill["projection"] = (f"{span(prate, '{:.1f}')} workload Services/s projected, VIP written back "
                          f"(p99 {span([v / 1000 for v in p99], '{:.1f}', 's')}; "
                          f"[figure](performance.md#projection-from-a-workload-cluster))" if prate
                          else "projection: not measured in this run")
    allocs = values(alloc["results"], "Allocate10kServicesSlash16", "allocs/s")
    md += ["", "### Allocator alone", "", measured(alloc), "",
           f"10,000 Services over a /16, pure allocation (no API server): {span(allocs, '{:,.0f}', 'allocations/s')}."]
    return "\n".join(md), fill, goal_lines


ANNOUNCED = r"(\d+) services: IP written"
DELETED, DELETED_OF = r"(\d+) of \d+ Services deleted", r"\d+ of (\d+) Services deleted"


def route_at_tor(fig, plot):
    ann = fig.run("./speaker/", "Announce")
    wd = fig.run("./speaker/", "Withdraw")
    a = {q: values(ann["results"], "Announce", f"{q}-ms") for q in ("p50", "p99")}
    arate = values(ann["results"], "Announce", "services/s")
    wnames = [r.name.removeprefix("Withdraw/") for r in wd["results"] if r.name.startswith("Withdraw/")]
    w = {n: {q: values(wd["results"], f"Withdraw/{n}", f"{q}-ms") for q in ("p50", "max")} for n in dict.fromkeys(wnames)}
    md = ["## Time to route at the ToR", "", measured(ann),
          f"One LB node's speaker peering with FRR; {printed(ann, ANNOUNCED, '1,000')} "
          "Services get their IP at once (written as the controller "
          "does); per Service, from its IP written to its route in FRR's BGP table.", ""]
    if a["p50"]:
        md += [table(["", "p50", "p99", "Services announced per second"],
                     [["announce, MagLB", span(a["p50"], unit="ms"), span(a["p99"], unit="ms"), span(arate, "{:,.0f}")]]),
               ""]
    md += ["### Withdrawal, MagLB against upstream's speaker", "", measured(wd),
           f"{printed(wd, DELETED, '500')} of {printed(wd, DELETED_OF, '1,000')} announced Services deleted at once; "
           "from the API server having the deletion to the route "
           "withdrawn at FRR.", ""]
    if w:
        md += [table(["speaker", "p50", "max"], [[n, span(v["p50"], unit="ms"), span(v["max"], unit="ms")]
                                                for n, v in w.items()]), ""]
    groups = (["announce (MagLB)"] if a["p50"] else []) + [f"withdraw ({n})" for n in w]
    if groups:
        series = [("p50", ([a["p50"]] if a["p50"] else []) + [w[n]["p50"] for n in w]),
                  ("p99 (announce) / max (withdraw)", ([a["p99"]] if a["p50"] else []) + [w[n]["max"] for n in w])]
        md.append(image(plot.bars("route-at-tor.png", "API server to route at the ToR (FRR)", "ms", groups, series),
                        "time to route at the ToR"))
    fill = {"announce": (f"route at the ToR {span(a['p50'], unit='ms')} p50, {span(a['p99'], unit='ms')} p99 after "
                         f"the IP is written, {span(arate, '{:,.0f}')} Services announced per second "
                         f"([figure](performance.md#time-to-route-at-the-tor))") if a["p50"] else "route at the ToR: not measured in this run"}
    return "\n".join(md), fill, []


TOR_SCALE = r"ToR scale: (\d+) LB nodes in (\d+) shards, (\d+) VIPs"
SCALE_MODES = [("full-mesh", "full mesh"), ("reflector", "2 reflectors")]
SCALE_ROWS = [("ToR BGP sessions", "tor-sessions", "{:,.0f}", ""), ("ToR BGP paths (RIB)", "tor-paths", "{:,.0f}", ""),
              ("ToR distinct paths (prefix, next hop)", "tor-distinct-paths", "{:,.0f}", ""),
              ("ToR FIB routes (BGP)", "fib-routes", "{:,.0f}", ""), ("ToR kernel next hops", "kernel-nexthops", "{:,.0f}", ""),
              ("ToR memory: bgpd heap", "bgpd-KiB", "{:,.0f}", "KiB"), ("ToR memory: zebra heap", "zebra-KiB", "{:,.0f}", "KiB"),
              ("last IP written → ToR has everything", "converge-s", "{:.1f}", "s"),
              ("LB node's uplink down → its paths gone (RIB)", "node-gone-rib-ms", "{:,.0f}", "ms"),
              ("LB node's uplink down → its next hop gone (kernel)", "node-death-ms", "{:,.0f}", "ms")]


def tor_scale(fig, plot):
    rec = fig.run("./speaker/", "ToRScale")
    res = rec["results"]
    size = re.search(TOR_SCALE, rec.get("output", ""))
    nodes, shards, vips = (int(x) for x in size.groups()) if size else (50, 4, 10000)
    md = ["## ToR scale: full mesh against route reflectors", "", measured(rec),
          f"{nodes} LB nodes (speaker processes in their own namespaces, no datapath) in {shards} shards, {vips:,} "
          "IPv4 VIPs, each in its shard's pool, and an FRR ToR; first every "
          "node peers with the ToR (full mesh), then the same nodes peer with two `speaker --role=reflector` "
          "processes, which peer with the ToR and announce each shard's prefix with one path per node (ADD-PATH). "
          "Every session runs BFD (300 ms × 3), the nodes' with the reflectors too.", ""]
    figs = {mode: {unit: values(res, f"ToRScale/{mode}", unit) for _, unit, _, _ in SCALE_ROWS} for mode, _ in SCALE_MODES}
    goal_lines = []
    if not any(figs[mode]["tor-paths"] for mode, _ in SCALE_MODES):
        return "\n".join(md), {"tor_scale": "not measured in this run (`python3 tasks.py bench --only ToRScale`)"}, goal_lines
    md.append(table([""] + [label for _, label in SCALE_MODES],
                    [[label] + [span(figs[mode][unit], fmt, u) for mode, _ in SCALE_MODES] for label, unit, fmt, u in SCALE_ROWS]))
    refl, mesh = figs["reflector"], figs["full-mesh"]
    per_shard = -(-nodes // shards)
    most = shards * per_shard  # one family
    if refl["tor-distinct-paths"]:
        goal_lines.append(f"Reflectors: ToR paths ≤ shards × families × nodes per shard ({shards} × 1 × {per_shard} = {most}): "
                          f"{span(refl['tor-distinct-paths'])} — {goal_verdict(refl['tor-distinct-paths'], lambda m: m <= most)}")
    if refl["tor-paths"] and mesh["tor-paths"]:
        factor = [median(mesh["tor-paths"]) / max(v, 1) for v in refl["tor-paths"]]
        goal_lines.append(f"Reflectors: ≥ 100× fewer ToR paths than full mesh: {span(factor, '{:,.0f}', '×')} — "
                          f"{goal_verdict(factor, lambda m: m >= 100)}")
    for mode, label in SCALE_MODES:
        death = figs[mode]["node-death-ms"]
        if death:
            goal_lines.append(f"{label}: an LB node's death out of the ToR's kernel ≤ 1 s: {span(death, unit='ms')} — "
                              f"{goal_verdict(death, lambda m: m <= 1000)}")
    fill = {"tor_scale": f"at {nodes} LB nodes in {shards} shards and {vips:,} VIPs, the ToR holds "
                         f"{span(refl['tor-paths'], '{:,.0f}')} paths from {span(refl['tor-sessions'], '{:,.0f}')} sessions "
                         f"instead of {span(mesh['tor-paths'], '{:,.0f}')} from {span(mesh['tor-sessions'], '{:,.0f}')}, "
                         f"and drops a dead LB node from its kernel in {span(refl['node-death-ms'], unit='ms')} "
                         "([table](performance.md#tor-scale-full-mesh-against-route-reflectors))"}
    return "\n".join(md), fill, goal_lines


FAULTS = [("survival", "one LB node leaves ECMP (graceful)"), ("bfd", "one LB node's uplink goes down (hard, BFD)")]


def survival(reports, plot):
    md = ["## Connection survival by fault", ""]
    found = {(f, dp): reports.get(f"{f}-{dp}") for f, _ in FAULTS for dp in ("ebpf", "kubeproxy")}
    if not any(found.values()):
        md.append(f"Not measured in this run: run `{E2E_COMMAND}` (the lab's `survival` and `bfd` specs), then "
                  "`python3 tasks.py bench --report`.")
        absent = f"connections surviving a fault not measured in this run (`{E2E_COMMAND}`)"
        return "\n".join(md), {"survival": absent, "survival_kubeproxy": absent}, \
            [f"hard failure: ≥ 99% of the connections survive with ebpf, the ToR's route loses the node in under 1 s: "
             f"not measured in this run (`{E2E_COMMAND}`)"]
    dates = sorted({r["written"] for r in found.values() if r})
    md += [f"Measured with `{E2E_COMMAND}` on the lab (three LB nodes behind an FRR ToR with ECMP), reports written "
           f"{', '.join(dates)}; machine: {machine()['cpus']} CPUs, kernel {machine()['kernel']}. 200 long-lived TCP "
           "connections through one VIP, then the fault; a connection survives when it still answers afterwards.", ""]
    groups = [label for _, label in FAULTS]
    # A datapath no report measured has no bars (not bars at zero); the table says so.
    series = [(dp, [[found[(f, dp)]["percent"]] if found[(f, dp)] else [] for f, _ in FAULTS]) for dp in ("ebpf", "kubeproxy")
              if any(found[(f, dp)] for f, _ in FAULTS)]
    md += [image(plot.bars("survival.png", "Long-lived TCP connections surviving a fault", "% of 200 surviving",
                           groups, series), "connection survival"), ""]
    rows, goal_lines = [], []
    for f, label in FAULTS:
        for dp in ("ebpf", "kubeproxy"):
            r = found[(f, dp)]
            if not r:
                rows.append([label, dp, "not measured in this run", "–"])
                continue
            gone = f"{r['next_hop_gone_ms']} ms" if "next_hop_gone_ms" in r else "–"
            rows.append([label, dp, f"{r['survived']} of {r['established']} ({r['percent']:.1f}%)", gone])
            if "next_hop_gone_ms" in r:
                goal_lines.append(f"hard failure, {dp}: the ToR's route loses the node in under 1 s: "
                                  f"{r['next_hop_gone_ms']} ms — {verdict(r['next_hop_gone_ms'] < 1000)}")
            if f == "bfd" and dp == "ebpf":
                goal_lines.append(f"hard failure, ebpf: ≥ 99% of the connections survive: {r['percent']:.1f}% — "
                                  f"{verdict(r['percent'] >= 99)}")
    md.append(table(["fault", "datapath", "connections surviving", "ToR next hop gone after"], rows))

    def say(dp):
        parts = [f"{found[(f, dp)]['percent']:.1f}% when {label}" for f, label in FAULTS if found[(f, dp)]]
        return (("long-lived connections surviving: " + ", ".join(parts)
                 + " ([figure](performance.md#connection-survival-by-fault))") if parts
                else f"connections surviving a fault not measured in this run (`{E2E_COMMAND}`)")
    return "\n".join(md), {"survival": say("ebpf"), "survival_kubeproxy": say("kubeproxy")}, goal_lines


def datapath_maps(fig, plot):
    con = fig.run("./datapath/ebpf/", "ConnectionTableContention")
    mem = fig.run("./datapath/ebpf/", "Sync|MapMemory")
    cres = con["results"]
    rows = []
    for variant in ("shared", "per-CPU"):
        for case in ("new-flow", "established-256Ki"):
            alone = values(cres, "ConnectionTableContention", f"{variant}-{case}-alone-ns")
            both = values(cres, "ConnectionTableContention", f"{variant}-{case}-both-ns")
            if alone:
                rows.append([variant, case, span(alone, unit="ns"), span(both, unit="ns")])
    md = ["## Connection table on two CPUs", "", measured(con), ""]
    if rows:
        md.append(table(["LRU", "case", "CPU 0 alone", "CPUs 0 and 1 at once (mean)"], rows))
    mres = mem["results"]
    total = values(mres, "MapMemory", "total-MiB")
    without = values(mres, "MapMemory", "without-flows-MiB")
    unchanged = [v / 1e6 for v in values(mres, "Sync/unchanged", "ns/op")]
    changed = [v / 1e6 for v in values(mres, "Sync/all-changed", "ns/op")]
    md += ["", "## Datapath maps: Sync and memory for 10,000 VIPs × 10 backends", "", measured(mem), "",
           table(["Sync, nothing changed", "Sync, every backend set changed", "map memory", "without the connection table"],
                 [[span(unchanged, "{:.1f}", "ms"), span(changed, "{:,.0f}", "ms"), span(total, "{:.1f}", "MiB"),
                   span(without, "{:.1f}", "MiB")]])]
    fill = {"maps": (f"{span(total, '{:.0f}', 'MiB')} of BPF maps for 10,000 VIPs × 10 backends "
                     f"({span(without, '{:.0f}', 'MiB')} without the connection table), a full resync in "
                     f"{span(changed, '{:,.0f}', 'ms')} ([figure](performance.md#datapath-maps-sync-and-memory-for-10000-vips--10-backends))")
            if total else "map memory: not measured in this run"}
    return "\n".join(md), fill, []


def endpoint_to_datapath(fig, plot):
    rec = fig.run("./speaker/", "ProjectionEndpointToDatapath")
    p99 = values(rec["results"], "ProjectionEndpointToDatapath", "p99-ms")
    p50 = values(rec["results"], "ProjectionEndpointToDatapath", "p50-ms")
    md = ["## Workload endpoint to an LB node's BPF ring", "", measured(rec),
          "A workload endpoint made not ready, then ready, 50 times; from the workload API request until an LB "
          "node's pinned Maglev ring carries the workload node's new weight.", ""]
    goal_lines = []
    if p99:
        outcome = goal_verdict(p99, lambda m: m < 2000)
        md.append(f"p50 {span(p50, unit='ms')}, p99 {span(p99, unit='ms')} (goal p99 < 2 s: {outcome}).")
        goal_lines.append(f"Workload endpoint to BPF ring, p99 < 2 s: {span(p99, unit='ms')} — {outcome}")
    fill = {"endpoint": f"a workload endpoint's readiness reaches the LB node's ring in {span(p99, unit='ms')} p99 "
                        "([figure](performance.md#workload-endpoint-to-an-lb-nodes-bpf-ring))" if p99
            else "workload endpoint to BPF ring: not measured in this run"}
    return "\n".join(md), fill, goal_lines


SECTIONS = [packet_rate, prog_run, maglev, control_plane, route_at_tor, tor_scale, datapath_maps, endpoint_to_datapath]


def span_dates(runs):
    dates = sorted(r["started"] for r in runs.values())
    return "–" if not dates else dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"


def write_report(benchmarks, runs, e2e_reports, docs=DOCS):
    """Writes docs/performance.md, its plots in docs/img/ and docs/comparison.md from the
    recorded runs (by command line) and the e2e reports; returns the paths written."""
    fig = Figures(benchmarks, runs)
    plot = Plotter(docs / "img")
    parts, fill, goals = [], {}, []
    for section in SECTIONS:
        md, f, g = section(fig, plot)
        parts.append(md)
        fill.update(f)
        goals += g
    md, f, g = survival(e2e_reports, plot)
    parts.insert(5, md)
    fill.update(f)
    goals += g
    m = machine()
    header = ["# MagLB performance", "",
              "Written by `python3 tasks.py bench --report` (the benchmarks of `BENCHMARKS` in `tasks.py`, in the order "
              "listed; `--only` reruns some, and each figure gives its own run's date) and the connection-survival "
              "reports of `python3 tasks.py e2etest`. "
              "Do not edit: rerun the report. What each benchmark printed is in [bench-runs/](bench-runs/).", "",
              f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), kernel {m['kernel']}; every figure names its command, "
              "and the date and load average at the start of its run. The machine may be shared: a load average "
              "above 0 at a run's start means other work ran beside it. See also [the comparison](comparison.md).", "",
              f"Load average (1 min) at the starts of these runs: {span([r['load_average'][0] for r in runs.values()], '{:.1f}')}; "
              f"runs started {span_dates(runs)}.", "",
              "## Goals", ""] + [f"- {line}" for line in goals] + [""]
    perf = docs / "performance.md"
    perf.write_text("\n".join(header) + "\n" + "\n\n".join(parts) + "\n")
    for stale in (docs / "img").glob("*.png"):
        if stale.name not in plot.written:
            stale.unlink()
    comparison = docs / "comparison.md"
    comparison.write_text(string.Template(COMPARISON_TEMPLATE.read_text()).substitute(fill))
    return [perf, comparison] + [docs / "img" / name for name in plot.written]
