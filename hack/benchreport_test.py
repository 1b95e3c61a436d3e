"""The benchmark output parser and the figures drawn from it, on recorded `go test -bench` output
(`python3 -m unittest discover -s hack -p '*_test.py'`, which `tasks.py test` runs)."""

import json
import shlex
import tempfile
import unittest
from pathlib import Path

import benchreport

# Recorded from `go test -run '^$' -bench ProgRun -benchtime 100x -count 2 ./datapath/ebpf/`
# (trimmed), with the table the benchmark prints itself.
PROG_RUN = """goos: linux
goarch: amd64
pkg: github.com/maglb/maglb/datapath/ebpf
cpu: Oxide Virtual Turin-like Processor
BenchmarkProgRun/VIPs=10/pass-2    	     100	        77.00 ns/op
BenchmarkProgRun/VIPs=10/pass-2    	     100	        64.00 ns/op
BenchmarkProgRun/VIPs=10/established-1M-2         	     100	      1173 ns/op	         0 miss%
BenchmarkProgRun/VIPs=10/established-1M-2         	     100	      1967 ns/op	         0 miss%
BenchmarkProgRun/VIPs=100000/established-1M-2     	     100	      4410 ns/op	         0 miss%
BenchmarkProgRun/VIPs=100000/established-1M-2     	     100	      6702 ns/op	         0 miss%
case            VIPs    ns/packet (kernel; min–max of -count runs)  goal      met (median)
pass            10      64–77                                       ≤ 40 ns   MISSED
PASS
ok  	github.com/maglb/maglb/datapath/ebpf	243.118s
"""

# Recorded from `go test -run '^$' -bench . -benchtime 1x ./datapath/maglev/` (trimmed): the
# disruption benchmark names its three keys' runs #01, #02.
MAGLEV = """pkg: github.com/maglb/maglb/datapath/maglev
BenchmarkBuild/N=10-2         	       1	    412365 ns/op	      1021 M	         1.028 max/avg
BenchmarkBuild/N=1306-2       	       1	1108373929 ns/op	    130688 M	         1.049 max/avg
BenchmarkDisruption/N=10↔11-2                  	       1	    225408 ns/op	      2042 M-after	      1021 M-before	         1.038 max/avg	         1.401 moved%
BenchmarkDisruption/N=10↔11#01-2               	       1	    288028 ns/op	      2042 M-after	      1021 M-before	         1.038 max/avg	         1.189 moved%
BenchmarkDisruption/N=10↔11#02-2               	       1	    231360 ns/op	      2042 M-after	      1021 M-before	         1.034 max/avg	         1.346 moved%
"""

# Recorded from `go test -run '^$' -bench LivePacketRate -benchtime 1x ./datapath/ebpf/`, with
# the benchmark's log after its result.
LIVE_PACKET_RATE = """pkg: github.com/maglb/maglb/datapath/ebpf
BenchmarkLivePacketRate/services=10-2         	       1	25100499290 ns/op	         0.1129 dnat-Mpps	         1.164 floor-Mpps	         1.138 generic/dnat	         5.192 native-cost-ratio	         3.691 native/dnat	         0.1285 xdp-generic-Mpps	         0.4168 xdp-native-Mpps
--- BENCH: BenchmarkLivePacketRate/services=10-2
    pps_test.go:240: 10 services: XDP native 0.42 Mpps, generic 0.13, iptables DNAT 0.11: native/DNAT 3.7× (goal ≥ 3×: met)
"""

# Recorded from `go test -run '^$' -bench Announce -benchtime 1x ./speaker/`: with 1x, what the
# benchmark prints comes before go test's line.
ANNOUNCE = """
1000 services: IP written → route at the router: p50 1.08s, p99 2.192s; 104 services announced per second
goos: linux
goarch: amd64
pkg: github.com/maglb/maglb/speaker
cpu: Oxide Virtual Turin-like Processor
BenchmarkAnnounce-2   	       1	65455782278 ns/op	      1080 p50-ms	      2192 p99-ms	       104.0 services/s
PASS
"""

# The same when the round go test reports is not the first: go test prints the name before the
# round runs, so the benchmark's own output comes between the name and the figures.
ANNOUNCE_SPLIT = """pkg: github.com/maglb/maglb/speaker
BenchmarkAnnounce-2   	
1000 services: IP written → route at the router: p50 1.08s, p99 2.192s; 104 services announced per second
       1	65455782278 ns/op	      1080 p50-ms	      2192 p99-ms	       104.0 services/s
PASS
"""


# Recorded from `MAGLB_SCALE_NODES=4 MAGLB_SCALE_SHARDS=2 MAGLB_SCALE_SERVICES=100 go test -run '^$' -bench ToRScale
# -benchtime 1x ./speaker/` (trimmed): both modes, then the table the benchmark prints itself.
TOR_SCALE = """pkg: github.com/maglb/maglb/speaker
BenchmarkToRScale/full-mesh-2         	       1	81679774893 ns/op	      9636 bgpd-KiB	         0.5570 converge-s	       100.0 fib-routes	       200.0 kernel-nexthops	      1178 node-death-ms	      1139 node-gone-rib-ms	       200.0 tor-distinct-paths	       200.0 tor-paths	         4.000 tor-sessions	      9040 zebra-KiB
2 reflectors: 4 speakers starting
BenchmarkToRScale/reflector-2         	       1	33710817344 ns/op	     11264 bgpd-KiB	         0.8214 converge-s	         2.000 fib-routes	         4.000 kernel-nexthops	      1066 node-death-ms	      1008 node-gone-rib-ms	         4.000 tor-distinct-paths	         8.000 tor-paths	         2.000 tor-sessions	      9408 zebra-KiB

ToR scale: 4 LB nodes in 2 shards, 100 VIPs (IPv4); BFD 300 ms x 3 on every session; load average 30.30 / 61.66 / 69.77 before, 16.11 / 44.54 / 62.31 after (1/5/15 min)
PASS
"""


ANNOUNCED = benchreport.Result("github.com/maglb/maglb/speaker", "Announce",
                               {"ns/op": 65455782278.0, "p50-ms": 1080.0, "p99-ms": 2192.0, "services/s": 104.0})


class ParseTest(unittest.TestCase):
    def test_results(self):
        cases = [
            ("one metric, GOMAXPROCS suffix dropped", PROG_RUN, 0,
             benchreport.Result("github.com/maglb/maglb/datapath/ebpf", "ProgRun/VIPs=10/pass", {"ns/op": 77.0})),
            ("a name ending in digits after a dash keeps them", PROG_RUN, 2,
             benchreport.Result("github.com/maglb/maglb/datapath/ebpf", "ProgRun/VIPs=10/established-1M",
                                {"ns/op": 1173.0, "miss%": 0.0})),
            ("custom metrics", MAGLEV, 1,
             benchreport.Result("github.com/maglb/maglb/datapath/maglev", "Build/N=1306",
                                {"ns/op": 1108373929.0, "M": 130688.0, "max/avg": 1.049})),
            ("numbered sub-benchmark joins its name", MAGLEV, 3,
             benchreport.Result("github.com/maglb/maglb/datapath/maglev", "Disruption/N=10↔11",
                                {"ns/op": 288028.0, "M-after": 2042.0, "M-before": 1021.0, "max/avg": 1.038,
                                 "moved%": 1.189})),
            ("the benchmark's own output first", ANNOUNCE, 0, ANNOUNCED),
            ("the benchmark's own output between name and figures", ANNOUNCE_SPLIT, 0, ANNOUNCED),
        ]
        for title, text, index, want in cases:
            with self.subTest(title):
                self.assertEqual(benchreport.parse(text)[index], want)

    def test_counts(self):
        cases = [("ProgRun, tables and logs ignored", PROG_RUN, 6), ("Maglev", MAGLEV, 5),
                 ("LivePacketRate, its log ignored", LIVE_PACKET_RATE, 1), ("Announce", ANNOUNCE, 1), ("Announce, split", ANNOUNCE_SPLIT, 1),
                 ("nothing", "FAIL\n", 0)]
        for title, text, want in cases:
            with self.subTest(title):
                self.assertEqual(len(benchreport.parse(text)), want)

    def test_values(self):
        results = benchreport.parse(PROG_RUN + MAGLEV)
        cases = [
            ("every -count run", "ProgRun/VIPs=10/pass", "ns/op", [77.0, 64.0]),
            ("numbered runs together", "Disruption/N=10↔11", "moved%", [1.401, 1.189, 1.346]),
            ("unit absent", "ProgRun/VIPs=10/pass", "miss%", []),
            ("name absent", "ProgRun/VIPs=7/pass", "ns/op", []),
        ]
        for title, name, unit, want in cases:
            with self.subTest(title):
                self.assertEqual(benchreport.values(results, name, unit), want)


class NoPlots:
    """Stands in for the Plotter: the sections' text without matplotlib."""

    def lines(self, name, *args, **kwargs):
        return f"img/{name}"

    bars = lines


def figures(**outputs):
    """Figures over recorded runs, output by -bench pattern."""
    benchmarks = [("", ["go", "test", "-bench", pattern, pkg]) for pattern, pkg in
                  [("LivePacketRate", "./datapath/ebpf/"), ("ProgRun", "./datapath/ebpf/"), ("ToRScale", "./speaker/")]]
    runs = {}
    for _, argv in benchmarks:
        if argv[3] in outputs:
            runs[shlex.join(argv)] = {"command": argv, "output": outputs[argv[3]], "returncode": 0,
                                                  "machine": {"cpus": 2, "cpu_model": "", "kernel": "6.18"},
                                                  "started": "2026-12-02 03:28 UTC", "load_average": [0.5, 0.4, 0.3]}
    return benchreport.Figures(benchmarks, runs)


class SectionTest(unittest.TestCase):
    def test_goal_lines(self):
        cases = [
            ("packet rate against its goal", benchreport.packet_rate, {"LivePacketRate": LIVE_PACKET_RATE},
             ["XDP native ≥ 3× iptables DNAT at 10 services: 3.7 × — met"]),
            ("PROG_RUN at the VIP counts it ran", benchreport.prog_run, {"ProgRun": PROG_RUN},
             ["PROG_RUN pass (no VIP) ≤ 40 ns at 10 VIPs: 64–77 ns — **missed**",
              "PROG_RUN established, 1M flows ≤ 150 ns at 10 VIPs: 1,173–1,967 ns — **missed**",
              "PROG_RUN established, 1M flows ≤ 150 ns at 100,000 VIPs: 4,410–6,702 ns — **missed**",
              "PROG_RUN established, 1M flows flat from 10 to 100,000 VIPs (≤ 1.2×): 3.41–3.76 × — **missed**"]),
            ("ToR scale: the reflectors' paths against the shards' nodes and the full mesh, node death in both modes",
             benchreport.tor_scale, {"ToRScale": TOR_SCALE},
             ["Reflectors: ToR paths ≤ shards × families × nodes per shard (2 × 1 × 2 = 4): 4 — met",
              "Reflectors: ≥ 100× fewer ToR paths than full mesh: 25 × — **missed**",
              "full mesh: an LB node's death out of the ToR's kernel ≤ 1 s: 1,178 ms — **missed**",
              "2 reflectors: an LB node's death out of the ToR's kernel ≤ 1 s: 1,066 ms — **missed**"]),
            ("not run: no goal line, the text says so", benchreport.packet_rate, {}, []),
            ("ToR scale not run", benchreport.tor_scale, {}, []),
        ]
        for title, section, outputs, want in cases:
            with self.subTest(title):
                md, _, goals = section(figures(**outputs), NoPlots())
                self.assertEqual(goals, want)
                self.assertEqual("Not measured in this run" in md, not outputs)


    def test_tor_scale_comparison(self):
        _, fill, _ = benchreport.tor_scale(figures(ToRScale=TOR_SCALE), NoPlots())
        self.assertEqual(fill["tor_scale"], "at 4 LB nodes in 2 shards and 100 VIPs, the ToR holds 8 paths from 2 sessions "
                                            "instead of 200 from 4, and drops a dead LB node from its kernel in 1,066 ms "
                                            "([table](performance.md#tor-scale-full-mesh-against-route-reflectors))")
        _, fill, _ = benchreport.tor_scale(figures(), NoPlots())
        self.assertIn("not measured", fill["tor_scale"])


class FormatTest(unittest.TestCase):
    def test_span(self):
        cases = [
            ("range", [64.0, 77.0], "{:,.0f}", "ns", "64–77 ns"),
            ("equal once rounded", [1.401, 1.4], "{:.1f}", "%", "1.4 %"),
            ("thousands", [1173.0, 11967.0], "{:,.0f}", "", "1,173–11,967"),
            ("none", [], "{:.1f}", "ms", "–"),
        ]
        for title, vals, fmt, unit, want in cases:
            with self.subTest(title):
                self.assertEqual(benchreport.span(vals, fmt, unit), want)

    def test_goal_verdict(self):
        cases = [
            ("median meets", [3.7, 2.9, 3.1], lambda m: m >= 3, "met"),
            ("median misses though one run meets", [3.7, 2.9, 2.8], lambda m: m >= 3, "**missed**"),
            ("no figures", [], lambda m: True, "–"),
        ]
        for title, vals, met, want in cases:
            with self.subTest(title):
                self.assertEqual(benchreport.goal_verdict(vals, met), want)





class SaveRunsTest(unittest.TestCase):
    def test_failed_run_keeps_the_successful_one(self):
        with tempfile.TemporaryDirectory() as d:
            runs = Path(d)
            good = {"command": ["go", "test", "-bench", "X"], "returncode": 0, "output": "good"}
            benchreport.save_runs([good], fresh=False, directory=runs)
            failed = dict(good, returncode=1, output="failed")
            benchreport.save_runs([failed], fresh=False, directory=runs)
            (path,) = runs.glob("*.json")
            self.assertEqual(json.loads(path.read_text())["output"], "good")
            # A failed run is recorded where nothing succeeded, and a new success replaces it.
            other = {"command": ["go", "test", "-bench", "Y"], "returncode": 1, "output": "failed"}
            benchreport.save_runs([other], fresh=False, directory=runs)
            self.assertEqual(len(list(runs.glob("*.json"))), 2)
            benchreport.save_runs([dict(other, returncode=0, output="good")], fresh=False, directory=runs)
            outputs = sorted(json.loads(p.read_text())["output"] for p in runs.glob("*.json"))
            self.assertEqual(outputs, ["good", "good"])



if __name__ == "__main__":
    unittest.main()
