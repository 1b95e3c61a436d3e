"""The faults of the chaos suite (e2etest/chaos_test.go) on a running lab, as commands:
`hack/lab.py chaos <operation> [target]`. lab.json names them ("chaos"), so that the suite
runs them as it runs node_down. Each acts on the processes the lab started, by the pid it
recorded, and on the lab's own pins; on nothing else.

  kill-speaker lbN|all            SIGKILL the speaker(s), as a crash: nothing leaves gracefully
  start-speaker lbN|all           start the speaker(s) not running
  kill-controller REPLICA|leader  SIGKILL a controller replica; leader: the one the Lease names
                                  (each replica runs with its name as hostname); prints the one killed
  start-controller REPLICA        start a replica not running and wait until it is ready
  stop-controller REPLICA         stop one (SIGTERM: a leader releases its Lease)
  stop-apiserver                  stop kube-apiserver and etcd (SIGTERM; etcd's data stays)
  start-apiserver                 start them again and wait until the API server is ready
  restart-router tor              stop every FRR daemon of the router and start them again with
                                  the configuration files they ran with
  restart-agent NODE              restart a node's backend agent (SIGTERM, start, /healthz)
  pins lbN                        print the files pinned under lbN's speaker's --datapath-pin-path
  remove-pins lbN                 remove those files, as `rm -r` under a running speaker would
"""

import os
import sys

from labcluster import LabError
from tooling import note

# The controller's Lease (controller/main.go: LeaderElectionID).
LEADER_LEASE = "maglb-controller"

USAGE = __doc__[__doc__.index("  kill-speaker"):]


def description(lab_script, replicas):
    """lab.json's "chaos": the command of each operation (the target appended)."""
    chaos = [*lab_script, "chaos"]
    ops = ("kill-speaker", "start-speaker", "kill-controller", "start-controller", "stop-controller", "stop-apiserver",
           "start-apiserver", "restart-router", "restart-agent", "pins", "remove-pins")
    return {**{op.replace("-", "_"): [*chaos, op] for op in ops}, "controller_replicas": list(replicas)}


def main(argv, lab, described):
    """Runs one operation on lab, the running lab that lab.json (described) describes."""
    if not argv or argv[0] not in OPERATIONS:
        print(f"usage: hack/lab.py chaos OPERATION [TARGET]\n{USAGE}", file=sys.stderr)
        return 2
    operation, targets = OPERATIONS[argv[0]]
    known = targets(lab, described) if targets else []
    if targets and (len(argv) != 2 or argv[1] not in known):
        print(f"hack/lab.py chaos {argv[0]}: want one of {', '.join(known)}", file=sys.stderr)
        return 2
    if not targets and len(argv) != 1:
        print(f"hack/lab.py chaos {argv[0]} takes no target", file=sys.stderr)
        return 2
    try:
        operation(lab, *argv[1:])
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _speakers(lab, target):
    return lab.topology.lbs if target == "all" else [target]


def kill_speaker(lab, target):
    for lb in _speakers(lab, target):
        lab.procs.kill(f"speaker-{lb}")


def start_speaker(lab, target):
    for lb in _speakers(lab, target):
        if lab.procs.pid(f"speaker-{lb}") is None:
            lab.start_speaker(lb)
            note(f"started speaker-{lb} (pid {lab.procs.pid(f'speaker-{lb}')})")


def leader(lab):
    """The replica the controller's Lease names: its holder identity is the replica's pod name."""
    holder = lab.kubectl("get", "lease", "-n", lab.namespace, LEADER_LEASE, "-o", "jsonpath={.spec.holderIdentity}",
                         capture=True).strip()
    if not holder:
        raise LabError(f"Lease {lab.namespace}/{LEADER_LEASE} names no holder")
    return holder


def kill_controller(lab, target):
    replica = leader(lab) if target == "leader" else target
    if lab.procs.pid(replica) is None:
        raise LabError(f"{replica} does not run here")
    lab.procs.kill(replica)
    print(replica, flush=True)


def start_controller(lab, replica):
    if lab.procs.pid(replica) is None:
        lab.start_controller(replica)


def stop_controller(lab, replica):
    lab.procs.stop(replica)


def stop_apiserver(lab):
    lab.procs.stop(lab.cluster.process("kube-apiserver"))
    lab.procs.stop(lab.cluster.process("etcd"))


def start_apiserver(lab):
    if lab.procs.pid(lab.cluster.process("etcd")) is None:
        lab.cluster.launch()
    elif lab.procs.pid(lab.cluster.process("kube-apiserver")) is None:
        lab.cluster.launch_apiserver()
    lab.cluster.wait_ready()


def restart_router(lab, router):
    lab.restart_router(router)


def restart_agent(lab, node):
    lab.procs.stop(f"{node}-agent")
    lab.procs.start(f"{node}-agent", lab.backend_agent_argv(node))
    lab.wait_for_backend_agent(node)


def pin_files(lab, lb):
    """The files pinned under lb's speaker's pin path, relative to it, sorted."""
    root = lab.bpffs / lb
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def pins(lab, lb):
    for path in pin_files(lab, lb):
        print(path, flush=True)


def remove_pins(lab, lb):
    for path in pin_files(lab, lb):
        (lab.bpffs / lb / path).unlink()
        print(path, flush=True)
    note(f"removed the pins under {lab.bpffs / lb}; speaker-{lb} runs on")


def _lb_or_all(lab, _described):
    return [*lab.topology.lbs, "all"]


def _lbs(lab, _described):
    return lab.topology.lbs


def _replicas(_lab, described):
    return described["chaos"]["controller_replicas"]


# operation: (function, the targets it takes; None: no target)
OPERATIONS = {
    "kill-speaker": (kill_speaker, _lb_or_all),
    "start-speaker": (start_speaker, _lb_or_all),
    "kill-controller": (kill_controller, lambda lab, d: [*_replicas(lab, d), "leader"]),
    "start-controller": (start_controller, _replicas),
    "stop-controller": (stop_controller, _replicas),
    "stop-apiserver": (stop_apiserver, None),
    "start-apiserver": (start_apiserver, None),
    "restart-router": (restart_router, lambda lab, d: ["tor"]),
    "restart-agent": (restart_agent, lambda lab, d: lab.topology.rack_nodes),
    "pins": (pins, _lbs),
    "remove-pins": (remove_pins, _lbs),
}
