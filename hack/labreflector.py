"""The lab's route reflectors (`tasks.py dev-env --bgp-mode=reflector`): refl1 and refl2, two
namespaces on the rack (hack/labnet.py) each running `speaker --role=reflector`, as the
Deployment of config/reflector/ runs on two nodes labelled maglb.io/reflector. The LB nodes
peer with both over iBGP, the reflectors with the ToR, to which they announce each shard's
aggregate with one path per LB node serving it (labnet.reflector_manifests is the
configuration, in upstream's kinds).

They run, log and are stopped like the speakers (processes reflector-reflN); the relay takes
the API server into their namespaces and their metrics out to 127.0.0.1:27520+N.
`hack/lab.py reflector stop reflN` kills one (SIGKILL: a crash, nothing leaves gracefully),
`start` brings it back.
"""

import labnet
from labcluster import binary, wait_until
from tooling import step

METRICS_PORT = 7477  # the reflector's default (--port), inside its namespace


def metrics_port(refl):
    """The host port the relay exposes reflN's metrics on."""
    return 27520 + int(refl[4:])


def process(refl):
    return f"reflector-{refl}"


class Reflectors:
    """The reflectors of a Lab (none in full-mesh mode)."""

    def __init__(self, lab):
        self.lab = lab
        self.names = lab.topology.reflectors

    @property
    def processes(self):
        return [process(refl) for refl in self.names]

    @property
    def ports(self):
        return [(metrics_port(refl), f"{refl} reflector metrics relay") for refl in self.names]

    def relay_args(self, apiserver_port):
        """The relay's arguments: the API server into each reflector's namespace, its metrics out."""
        t, args = self.lab.topology, []
        for refl in self.names:
            args += ["--into", f"{t.netns(refl)}=127.0.0.1:{apiserver_port},127.0.0.1:{apiserver_port}",
                     "--out", f"{t.netns(refl)}=127.0.0.1:{metrics_port(refl)},127.0.0.1:{METRICS_PORT}"]
        return args

    def argv(self, refl):
        return ["ip", "netns", "exec", self.lab.topology.netns(refl), binary("speaker"), "--role=reflector",
                "--node-name", refl, "--kubeconfig", self.lab.component_kubeconfig("reflector"), "--namespace", self.lab.namespace,
                "--port", METRICS_PORT, "--metrics-secure=false", "--log-level", "debug"]

    def start(self, refl):
        self.lab.procs.start(process(refl), self.argv(refl))
        url = f"http://127.0.0.1:{metrics_port(refl)}/metrics"
        wait_until(f"reflector {refl} serving {url}", lambda: self.lab.http_ok(url), 60, process(refl), self.lab.procs)

    def start_all(self):
        if not self.names:
            return
        t = self.lab.topology
        step(f"route reflectors: speaker --role=reflector in {', '.join(t.netns(r) for r in self.names)} "
             f"({', '.join(t.address(r) for r in self.names)}): iBGP with the LB nodes, eBGP with the ToR")
        for refl in self.names:
            self.start(refl)

    def kill(self, refl):
        """SIGKILL, as a crash: no NOTIFICATION to the ToR or the LB nodes."""
        self.lab.procs.kill(process(refl))

    def description(self, lab_script):
        """lab.json's fields of the reflectors."""
        t = self.lab.topology
        return {
            "bgp_mode": t.bgp_mode,
            "reflectors": {refl: {"address": t.address(refl), "address6": t.address6(refl), "netns": t.netns(refl),
                                  "metrics": f"http://127.0.0.1:{metrics_port(refl)}/metrics"} for refl in self.names},
            "reflector_stop": [*lab_script, "reflector", "stop"],
            "reflector_start": [*lab_script, "reflector", "start"],
        }

    def info(self, router_cmd):
        """The dev-env's "Try:" lines about the reflectors."""
        if not self.names:
            return []
        first = self.names[0]
        return [
            f"  {router_cmd} -c 'show bgp ipv4 unicast json' | python3 -m json.tool   # the aggregates: a path per "
            f"reflector and LB node, nexthops = the node",
            f"  {router_cmd} -c 'show bgp ipv4 unicast {labnet.POOLS['bgp']['gold'][0]}'   # gold's aggregate, "
            "ADD-PATH from both reflectors",
            f"  curl -s http://127.0.0.1:{metrics_port(first)}/metrics | grep ^maglb_reflector   # reflector {first}",
            f"  /usr/bin/python3 hack/lab.py reflector stop {first}   # kill -9 {first} (and `start` to bring it back)",
        ]
