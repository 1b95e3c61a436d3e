"""The chaos operations on a stand-in lab (`python3 -m unittest discover -s hack -p '*_test.py'`):
which processes each acts on, and the pins it lists and removes."""

import contextlib
import io
import tempfile
import unittest
from pathlib import Path
from types import SimpleNamespace

import labchaos

DESCRIBED = {"chaos": labchaos.description(["lab.py"], ["controller", "controller-2"])}


class Procs:
    """Records what the operations do to the lab's processes."""

    def __init__(self, running):
        self.running, self.done = set(running), []

    def pid(self, name):
        return 1 if name in self.running else None

    def kill(self, name):
        self.done.append(("kill", name))
        self.running.discard(name)

    def stop(self, name):
        self.done.append(("stop", name))
        self.running.discard(name)


def stand_in(running=(), holder="", bpffs=Path("/nonexistent")):
    lab = SimpleNamespace(topology=SimpleNamespace(lbs=["lb1", "lb2"], rack_nodes=["lb1", "lb2", "be1"]),
                          procs=Procs(running), namespace="metallb-system", bpffs=bpffs)
    lab.kubectl = lambda *args, capture=False: holder
    lab.start_speaker = lambda lb: lab.procs.done.append(("start", f"speaker-{lb}"))
    return lab


def run(lab, *argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = labchaos.main(list(argv), lab, DESCRIBED)
    return code, out.getvalue(), err.getvalue()


class LabChaosTest(unittest.TestCase):
    def test_description_names_every_operation(self):
        chaos = DESCRIBED["chaos"]
        for op in labchaos.OPERATIONS:
            self.assertEqual(chaos[op.replace("-", "_")], ["lab.py", "chaos", op])
        self.assertEqual(chaos["controller_replicas"], ["controller", "controller-2"])

    def test_refuses_what_the_lab_does_not_have(self):
        lab = stand_in(running=["speaker-lb1"])
        for argv in (["reboot"], ["kill-speaker"], ["kill-speaker", "lb9"], ["kill-controller", "controller-3"],
                     ["stop-apiserver", "now"], ["restart-agent", "be9"]):
            code, _, err = run(lab, *argv)
            self.assertEqual(code, 2, argv)
            self.assertTrue(err, argv)
        self.assertEqual(lab.procs.done, [])

    def test_kills_every_speaker_and_starts_those_not_running(self):
        lab = stand_in(running=["speaker-lb1", "speaker-lb2"])
        self.assertEqual(run(lab, "kill-speaker", "all")[0], 0)
        lab.procs.running.add("speaker-lb2")
        self.assertEqual(run(lab, "start-speaker", "all")[0], 0)
        self.assertEqual(lab.procs.done, [("kill", "speaker-lb1"), ("kill", "speaker-lb2"), ("start", "speaker-lb1")])

    def test_kills_the_replica_the_lease_names(self):
        lab = stand_in(running=["controller", "controller-2"], holder="controller-2\n")
        code, out, _ = run(lab, "kill-controller", "leader")
        self.assertEqual((code, out), (0, "controller-2\n"))
        self.assertEqual(lab.procs.done, [("kill", "controller-2")])

    def test_a_lease_without_holder_kills_nothing(self):
        lab = stand_in(running=["controller"])
        code, _, err = run(lab, "kill-controller", "leader")
        self.assertEqual(code, 1)
        self.assertIn("no holder", err)
        self.assertEqual(lab.procs.done, [])

    def test_lists_and_removes_the_pins_of_one_node(self):
        with tempfile.TemporaryDirectory() as d:
            bpffs = Path(d)
            for path in ("lb1/maps/vips", "lb1/maps/rings", "lb1/link", "lb2/link"):
                (bpffs / path).parent.mkdir(parents=True, exist_ok=True)
                (bpffs / path).write_text("")
            lab = stand_in(bpffs=bpffs)
            self.assertEqual(run(lab, "pins", "lb1")[:2], (0, "link\nmaps/rings\nmaps/vips\n"))
            self.assertEqual(run(lab, "remove-pins", "lb1")[:2], (0, "link\nmaps/rings\nmaps/vips\n"))
            self.assertEqual(run(lab, "pins", "lb1")[1], "")
            self.assertEqual(run(lab, "pins", "lb2")[1], "link\n")


if __name__ == "__main__":
    unittest.main()
