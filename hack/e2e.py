"""The e2e suites (e2etest/) on the lab: `tasks.py e2etest` runs them once per lab variant and
prints the figures the datapath, BFD and shard specs report; `tasks.py test` runs the smoke specs."""

import json
import os
import shutil
import subprocess
import sys

import lab
from tooling import REPO, step

# Each pass brings the lab up with its options and runs the specs its label filter selects;
# the default lab (ebpf, bgp) runs last, so that it is what stays up. Every pass but layer2,
# upgrade and reflector has two workload clusters behind the LB cluster; upgrade's lab starts with
# upstream MetalLB, which the upgrade spec replaces with MagLB and back; reflector's LB nodes peer
# with two route reflectors, not with the ToR.
DEFAULT_PASS_OPTIONS = {"datapath": "ebpf", "protocol": "bgp", "workload_clusters": 2}
E2E_PASSES = {
    "layer2": ({"datapath": "ebpf", "protocol": "layer2", "workload_clusters": 0}, "layer2 || metrics"),
    "kubeproxy": ({"datapath": "kubeproxy", "protocol": "bgp", "workload_clusters": 2}, "bgp || survival || bfd || metrics || mtu || projection || chaos"),
    "gue": ({"datapath": "ebpf", "protocol": "bgp", "encap": "gue", "workload_clusters": 2}, "mtu || (datapath && smoke)"),
    "upgrade": ({"datapath": "kubeproxy", "protocol": "bgp", "workload_clusters": 0, "metallb": "upstream"}, "upgrade"),
    "reflector": ({"datapath": "ebpf", "protocol": "bgp", "bgp_mode": "reflector", "workload_clusters": 0}, "reflector"),
    "ebpf": (DEFAULT_PASS_OPTIONS, "!layer2 && !upgrade && !reflector && !soak"),
}
# CI's smoke: the specs labelled smoke of these passes, the default lab last.
SMOKE_PASSES = {"reflector": "reflector && smoke", "ebpf": "smoke"}


def run_e2e(bin_dir, k8s_version, passes, focus=None, skip=None, label_filter=None, lb_nodes=3, upstream=None,
            extra_args=(), timeout="30m"):
    """Runs the named passes (keys of E2E_PASSES) and prints the figures the datapath, BFD, shard,
    upgrade, reflector and soak specs reported. A label_filter replaces each pass's own (a dict:
    per pass). upstream returns the labupstream.Upstream a pass starting with upstream MetalLB runs
    (built when first needed). extra_args go to the suite (its own flags, e.g. --soak-duration);
    timeout bounds each pass's run."""
    if os.geteuid() != 0:
        raise lab.LabError("the e2e suites drive the lab's namespaces, routers and BPF programs: run as root")
    reports = lab.STATE.parent / ".e2e-reports"
    shutil.rmtree(reports, ignore_errors=True)
    failed = []
    for name in passes:
        options, filter_ = E2E_PASSES[name] if name in E2E_PASSES else (DEFAULT_PASS_OPTIONS, name)
        if label_filter:
            filter_ = label_filter[name] if isinstance(label_filter, dict) else label_filter
        encap, metallb = options.get("encap", "ipip"), options.get("metallb", "maglb")
        bgp_mode = options.get("bgp_mode", "full-mesh")
        step(f"e2e pass {name}: lab with {metallb}, datapath {options['datapath']} ({encap}), protocol "
             f"{options['protocol']} ({bgp_mode}), {options['workload_clusters']} workload cluster(s); specs {filter_}")
        the_lab = lab.Lab(bin_dir, k8s_version, options["datapath"], options["protocol"], lb_nodes, encap,
                          options["workload_clusters"], metallb, upstream() if metallb == "upstream" else None,
                          bgp_mode=bgp_mode)
        the_lab.up()
        args = ["go", "test", "-tags", "e2e", "-count=1", f"-timeout={timeout}", "-v", "./e2etest/", "-args",
                f"--lab={the_lab.state / 'lab.json'}", f"--report-dir={reports}",
                f"--ginkgo.label-filter={filter_}", "--ginkgo.no-color", f"--ginkgo.timeout={timeout}"]
        if focus:
            args.append(f"--ginkgo.focus={focus}")
        if skip:
            args.append(f"--ginkgo.skip={skip}")
        args += extra_args
        sys.stdout.flush()
        if subprocess.run(args, cwd=REPO).returncode != 0:
            failed.append(name)
    print_figures(reports)
    if failed:
        raise lab.LabError(f"e2e failed in pass(es) {', '.join(failed)}")
    step("e2e passed")


def run_smoke(bin_dir, k8s_version):
    """The e2e specs labelled smoke (BGP, curl through the ebpf datapath, DSR, consistency,
    connection survival) on the default lab, after those of the reflector lab (SMOKE_PASSES). A
    lab this brought up is removed afterwards; one that was up stays up (with the default options)."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true" or os.environ.get("MAGLB_REQUIRE_PRIVILEGED") == "1":
            raise lab.LabError("the e2e smoke specs need root, and CI=true or MAGLB_REQUIRE_PRIVILEGED=1 requires them")
        step("e2e smoke: skipped (needs root)")
        return
    was_up = lab.Processes(lab.STATE).running() != {}
    step("e2e smoke: the specs labelled smoke on the labs " + ", ".join(SMOKE_PASSES))
    try:
        run_e2e(bin_dir, k8s_version, list(SMOKE_PASSES), label_filter=SMOKE_PASSES)
    finally:
        if not was_up:
            lab.cleanup()


def print_figures(reports):
    def load(name):
        try:
            return json.loads((reports / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None

    survival = {dp: load(f"survival-{dp}") for dp in ("ebpf", "kubeproxy")}
    if any(survival.values()):
        step("connection survival: 200 long-lived TCP connections, one of the LB nodes leaves ECMP")
        print(f"    {'datapath':<10} {'survived':>9} {'of':>4} {'percent':>8}  node out", flush=True)
        for dp, r in survival.items():
            if r:
                print(f"    {dp:<10} {r['survived']:>9} {r['established']:>4} {r['percent']:>7.1f}%  {r['lb_node_taken_out']}",
                      flush=True)
    hard = {dp: load(f"bfd-{dp}") for dp in ("ebpf", "kubeproxy")}
    if any(hard.values()):
        profile = next(r["bfd"] for r in hard.values() if r)
        step(f"hard failure: one LB node's uplink down (BFD {profile}), 200 long-lived TCP connections")
        print(f"    {'datapath':<10} {'survived':>9} {'of':>4} {'percent':>8}  {'ToR next hop gone':>17}  node out",
              flush=True)
        for dp, r in hard.items():
            if r:
                print(f"    {dp:<10} {r['survived']:>9} {r['established']:>4} {r['percent']:>7.1f}%  "
                      f"{r['next_hop_gone_ms']:>14} ms  {r['lb_node_taken_out']}", flush=True)
    upgrade = load("upgrade-kubeproxy")
    if upgrade:
        step(f"in-place upgrade: upstream MetalLB v{upgrade['upstream_version']} -> MagLB and back, speakers one node "
             f"at a time, 200 long-lived TCP connections through {upgrade['vip']}")
        print(f"    {'direction':<18} {'VIP without route':>17} {'node path gone':>14} {'survived':>9} {'of':>4} "
              f"{'swap':>7}", flush=True)
        for direction, key in (("MetalLB -> MagLB", "to_maglb"), ("MagLB -> MetalLB", "to_metallb")):
            if (r := upgrade.get(key)) is None:
                print(f"    {direction:<18} (did not complete)", flush=True)
                continue
            print(f"    {direction:<18} {r['vip_without_route_ms']:>14} ms {r['node_path_missing_ms']:>11} ms "
                  f"{r['survived']:>9} {r['established']:>4} {r['swap_ms'] / 1000:>6.1f}s", flush=True)
    soak = load("soak-ebpf")
    if soak:
        step(f"churn soak: {soak['services']} Services kept, {soak['rounds']} rounds of {soak['batch']} moved to other pods and "
             f"{soak['batch']} replaced in {soak['churn_seconds'] / 60:.1f} min ({soak['created']} created in all); requests through "
             f"the untouched demo VIPs: {soak['requests']}, failed {soak['failed_requests']}")
        print(f"    {'RSS (MiB)':<18} {'warm':>6} {'end':>6}  over time (every 15 s; every 5 s in the two minutes "
              "whose medians are warm and end)", flush=True)
        for m in soak["memory"]:
            over_time = " ".join(str(s["bytes"] >> 20) for s in m["samples"])
            print(f"    {m['component']:<18} {m['warm_bytes'] >> 20:>6} {m['end_bytes'] >> 20:>6}  {over_time}", flush=True)
    chaos = {dp: r for dp in ("ebpf", "kubeproxy") if (r := load(f"chaos-{dp}"))}
    if chaos:
        connections = next(iter(chaos.values()))["connections"]
        step(f"chaos: one fault at a time under {connections} long-lived TCP connections and new HTTP requests "
             "and UDP echoes through every demo VIP")
        for line in chaos_table(chaos):
            print(f"    {line}", flush=True)
    shards = load("shards-ebpf")
    if shards:
        step(f"shard isolation: shard {shards['measured_shard']}'s HTTP requests/s while shard "
             f"{shards['flooded_shard']}'s VIP is flooded")
        print(f"    baseline {shards['baseline_requests_per_second']:.0f}/s; flood of "
              f"{shards['flood_packets_per_second']:.0f} packets/s at {shards['flooded_shard']}: "
              f"{shards['during_flood_requests_per_second']:.0f}/s ({shards['held_percent']:.0f}% of baseline); "
              f"control flood of {shards['control_flood_packets_per_second']:.0f} packets/s dropped at the ToR: "
              f"{shards['during_control_flood_requests_per_second']:.0f}/s "
              f"(under the shard flood: {shards['held_of_control_percent']:.0f}% of that)", flush=True)
    reflector = load("reflector-ebpf")
    if reflector:
        step(f"route reflectors: {reflector['reflector_killed']} killed (SIGKILL) under 200 long-lived TCP connections "
             f"through {reflector['vip']} (ebpf datapath)")
        print(f"    survived {reflector['survived']} of {reflector['established']} ({reflector['percent']:.1f}%); the ToR "
              f"held the other reflector's paths alone {reflector['paths_gone_ms']} ms after the kill command returned "
              f"(it took {reflector['stop_command_ms']} ms), both reflectors' "
              f"again {reflector['paths_back_ms']} ms after the restart", flush=True)


CHAOS_COLUMNS = ("fault", "datapath", "connections lost", "failed requests", "longest gap", "IPs changed",
                 "state equal after", "recovery", "goal")


def chaos_table(reports):
    """The chaos reports (datapath -> chaos-<datapath>.json) as a Markdown table, fault by
    fault, then a note for each row that missed a goal or says more."""
    faults = list(dict.fromkeys(row["fault"] for r in reports.values() for row in r["rows"]))
    lines = ["| " + " | ".join(CHAOS_COLUMNS) + " |", "|" + "---|" * len(CHAOS_COLUMNS)]
    notes = []
    for fault in faults:
        for dp, r in reports.items():
            row = next((row for row in r["rows"] if row["fault"] == fault), None)
            if row is None:
                continue
            if row["verdict"] == "n/a":
                cells = [fault, dp, "", "", "", "", "", "", f"n/a: {row['goal']}"]
            else:
                failed = row["failed_http"] + row["failed_udp"]
                recovery = f"{row['recovery']} {_seconds(row['recovery_ms'])}" if row.get("recovery") else ""
                cells = [fault, dp, f"{row['connections_lost']} of {row['connections']}",
                         f"{failed} of {row['requests']}", _seconds(row["longest_gap_ms"]),
                         "yes" if row.get("ip_changes") else "no", "yes" if row["state_equal"] else "no",
                         recovery, row["verdict"]]
            lines.append("| " + " | ".join(cells) + " |")
            for missed in row.get("missed") or []:
                notes.append(f"{fault} ({dp}) MISSED: {missed}")
            for note_ in row.get("notes") or []:
                notes.append(f"{fault} ({dp}): {note_}")
    return lines + ([""] + notes if notes else [])


def _seconds(ms):
    return "never" if ms < 0 else f"{ms / 1000:.1f} s"
