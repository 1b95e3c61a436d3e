"""The chaos table of `tasks.py e2etest` (`python3 -m unittest discover -s hack -p '*_test.py'`)."""

import unittest

import e2e


def row(fault, **fields):
    r = {"fault": fault, "goal": "0 connections lost", "connections": 200, "connections_lost": 0, "requests": 900,
         "failed_http": 0, "failed_udp": 0, "longest_gap_ms": 250, "state_equal": True, "recovery_ms": -1,
         "verdict": "met"}
    return {**r, **fields}


class ChaosTableTest(unittest.TestCase):
    def test_fault_by_fault_with_notes(self):
        reports = {
            "ebpf": {"connections": 200, "rows": [
                row("kill -9 one speaker"),
                row("the BPF pins of one LB node removed", recovery="pins back", recovery_ms=-1, verdict="MISSED",
                    missed=["pins back: never, want within 10s"]),
            ]},
            "kubeproxy": {"connections": 200, "rows": [
                row("kill -9 one speaker", connections_lost=3, failed_http=2, failed_udp=1, ip_changes=["demo/a"],
                    state_equal=False, verdict="MISSED", missed=["3 of 200 connections lost"]),
                row("the BPF pins of one LB node removed", goal="no pins", verdict="n/a"),
            ]},
        }
        lines = e2e.chaos_table(reports)
        self.assertEqual(lines[0], "| " + " | ".join(e2e.CHAOS_COLUMNS) + " |")
        self.assertEqual(lines[2:6], [
            "| kill -9 one speaker | ebpf | 0 of 200 | 0 of 900 | 0.2 s | no | yes |  | met |",
            "| kill -9 one speaker | kubeproxy | 3 of 200 | 3 of 900 | 0.2 s | yes | no |  | MISSED |",
            "| the BPF pins of one LB node removed | ebpf | 0 of 200 | 0 of 900 | 0.2 s | no | yes | pins back never "
            "| MISSED |",
            "| the BPF pins of one LB node removed | kubeproxy |  |  |  |  |  |  | n/a: no pins |",
        ])
        self.assertEqual(lines[6:], [
            "",
            "kill -9 one speaker (kubeproxy) MISSED: 3 of 200 connections lost",
            "the BPF pins of one LB node removed (ebpf) MISSED: pins back: never, want within 10s",
        ])


if __name__ == "__main__":
    unittest.main()
