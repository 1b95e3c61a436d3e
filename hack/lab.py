"""The local development environment (`tasks.py dev-env`): etcd and kube-apiserver on loopback,
the metallb.io CRDs, the controller, and the network lab of hack/labnet.py: a client, a ToR
running FRR, LB nodes each running a speaker, and two backend nodes, every node with
kube-proxy and pods behind it; then a sample configuration and two demo Services; and the
workload clusters of hack/labworkload.py behind the LB cluster.

State lives in <repo>/.dev-env/: pki/, etcd/, logs/<process>.log, pids/<process>.pid (pid and
start time, so a recycled pid is never signalled), kubeconfig, frr/, bpf/ (a bpffs the LB
nodes and backends pin into), etcd-wcK/ and kubeconfig-wcK (workload clusters), lab.json (the
options it was brought up with). Processes run in their own session, so they outlive the task
and a Ctrl-C in the terminal; `dev-env-cleanup` stops them, deletes the namespaces and unmounts
the bpffs.

Run as a script, it starts or stops one node's speaker of a running lab, which is how the e2e
suites take an LB node out of service: `hack/lab.py speaker stop|start lb3`; cuts an LB node's
uplink and restores it, a hard failure: `hack/lab.py uplink down|up lb3`; starts or stops a
workload cluster's kube-apiserver: `hack/lab.py workload-apiserver stop|start wc1`; and kills
(SIGKILL) or restarts a route reflector of --bgp-mode=reflector: `hack/lab.py reflector stop|start refl1`.
"""

import hashlib
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import labchaos
import labnet
import labreflector
import labupstream
import labworkload
from labcluster import (Cluster, LabError, Processes, binary, check_ports_free, generate_pki, port_open, tail,
                        wait_until)
from tooling import REPO, note, step

STATE = REPO / ".dev-env"
NAMESPACE = "metallb-system"

# Loopback ports, all in 2xxxx so they never meet the random ports the tests pick (workload
# cluster wcK's etcd and kube-apiserver: these plus 100·K).
ETCD_CLIENT_PORT = 23790
APISERVER_PORT = 26443
METRICS_PORT = 27472
HEALTH_PORT = 27473
WEBHOOK_PORT = 29443
# The controller's replicas, each with its (metrics, health probe, webhook) ports: the lab runs
# the first; the second joins for the chaos suite's leader fault (hack/labchaos.py).
# What MagLB's manifests grant each component's ServiceAccount (kubectl apply arguments).
CONFIG = REPO / "config"
COMPONENT_RBAC = {
    "controller": ["-f", CONFIG / "rbac" / "service_accounts.yaml", "-f", CONFIG / "rbac" / "controller.yaml"],
    "speaker": ["-f", CONFIG / "rbac" / "service_accounts.yaml", "-f", CONFIG / "rbac" / "speaker.yaml"],
    "reflector": ["-f", CONFIG / "reflector" / "rbac.yaml"],
}
CONTROLLER_REPLICAS = {"controller": (METRICS_PORT, HEALTH_PORT, WEBHOOK_PORT), "controller-2": (27482, 27483, 29444)}

# ---------------------------------------------------------------------------------------------
# The lab


class Lab:
    def __init__(self, bin_dir, k8s_version, datapath="ebpf", protocol="bgp", lb_nodes=3, encap="ipip",
                 workload_clusters=1, metallb="maglb", upstream=None, state=STATE, bgp_mode="full-mesh"):
        if datapath not in ("ebpf", "kubeproxy"):
            raise LabError(f"--datapath {datapath}: want ebpf or kubeproxy")
        if encap not in ("ipip", "gue"):
            raise LabError(f"--encap {encap}: want ipip or gue")
        if protocol not in ("bgp", "layer2"):
            raise LabError(f"--protocol {protocol}: want bgp or layer2")
        if not 1 <= int(lb_nodes) <= MAX_LB_NODES:
            raise LabError(f"--lb-nodes {lb_nodes}: want 1 to {MAX_LB_NODES}")
        if not 0 <= int(workload_clusters) <= labnet.MAX_WORKLOAD_CLUSTERS:
            raise LabError(f"--workload-clusters {workload_clusters}: want 0 to {labnet.MAX_WORKLOAD_CLUSTERS}")
        if bgp_mode not in labnet.BGP_MODES:
            raise LabError(f"--bgp-mode {bgp_mode}: want {' or '.join(labnet.BGP_MODES)}")
        if bgp_mode == "reflector" and (protocol != "bgp" or metallb != "maglb"):
            raise LabError("--bgp-mode reflector runs MagLB's reflectors, over BGP")
        if metallb not in METALLBS:
            raise LabError(f"--metallb {metallb}: want {' or '.join(METALLBS)}")
        if metallb == "upstream":
            # Upstream has no XDP datapath, no projection, and announces over BGP natively.
            wanted = {"datapath": "kubeproxy", "protocol": "bgp", "workload_clusters": 0}
            given = {"datapath": datapath, "protocol": protocol, "workload_clusters": int(workload_clusters)}
            if given != wanted or upstream is None:
                raise LabError(f"--metallb upstream runs with {wanted} and upstream's built binaries, not {given}")
        self.bin_dir = Path(bin_dir)
        self.k8s_version = k8s_version
        self.options = {"datapath": datapath, "protocol": protocol, "lb_nodes": int(lb_nodes), "encap": encap,
                        "workload_clusters": int(workload_clusters), "metallb": metallb, "bgp_mode": bgp_mode}
        self.upstream = upstream
        self.upstream_dir = state / "upstream-chart"
        self.topology = labnet.Topology(int(lb_nodes), int(workload_clusters), bgp_mode)
        self.state = state
        self.namespace = NAMESPACE
        self.procs = Processes(state)
        self.pki = state / "pki"
        self.cluster = Cluster("", bin_dir, self.procs, self.pki, state, ETCD_CLIENT_PORT, APISERVER_PORT,
                               "10.96.0.0/16,fd00:96::/112", NAMESPACE)
        self.kubeconfig = self.cluster.kubeconfig
        self.server = self.cluster.server
        self.frr_dir = router_dir(state) / "frr"
        self.rr_dir = router_dir(state) / "frr-rr"
        self.bpffs = state / "bpf"
        self.workloads = labworkload.WorkloadClusters(self)
        self.reflectors = labreflector.Reflectors(self)

    # kubectl ---------------------------------------------------------------------------------

    @property
    def kubectl_path(self):
        return self.bin_dir / "kubectl"

    def kubectl(self, *args, input=None, capture=False):
        return self.cluster.kubectl(*args, input=input, capture=capture)

    @staticmethod
    def http_ok(url):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except urllib.error.HTTPError:
            return False

    def vtysh(self, *commands, router=None, daemon=None):
        args = ["vtysh", "--vty_socket", router or self.frr_dir, *(["-d", daemon] if daemon else [])]
        for c in commands:
            args += ["-c", c]
        return labnet.sh(*args)

    # steps: the cluster ----------------------------------------------------------------------

    def start_apiserver(self):
        step("pki: CA, apiserver and admin certificates, service-account keys (.dev-env/pki)")
        generate_pki(self.pki)

        step(f"etcd on 127.0.0.1:{ETCD_CLIENT_PORT}, kube-apiserver v{self.k8s_version} on {self.server}")
        check_ports_free(self.cluster.ports + self.workloads.ports
                         + [(METRICS_PORT, "controller metrics"), (HEALTH_PORT, "controller health probes"),
                            (WEBHOOK_PORT, "controller webhooks")]
                         + [(speaker_metrics_port(lb), f"{lb} speaker metrics relay") for lb in self.topology.lbs]
                         + self.reflectors.ports)
        self.cluster.launch()
        self.workloads.launch_control_planes()
        self.cluster.wait_ready()

    # which MetalLB runs: the lab's option, until `hack/lab.py swap` replaces it -----------------

    @property
    def upgrade_lab(self):
        """The lab starts with upstream MetalLB, and swaps it for MagLB and back."""
        return self.options["metallb"] == "upstream"

    def running_metallb(self):
        try:
            return (self.state / "metallb").read_text().strip()
        except OSError:
            return self.options["metallb"]

    def render_upstream_chart(self):
        v = self.upstream.version
        step(f"upstream MetalLB v{v}: helm template of its chart ({labupstream.MODULE}@v{v}/charts/metallb) with "
             f"{labupstream.UPGRADE_VALUES}: its CRDs, its controller's and speaker's arguments and environment "
             f"(.dev-env/{self.upstream_dir.name}/)")
        labupstream.render(self.upstream, NAMESPACE, self.upstream_dir)
        components = labupstream.load_components(self.upstream_dir)
        for name, c in components.items():
            env = ", ".join(e["name"] for e in c["env"]) or "none"
            note(f"{name}: arguments {' '.join(c['args'])}; environment {env}")

    def chart(self, component, fields):
        """(arguments, environment) of component's container in upstream's chart."""
        c = labupstream.load_components(self.upstream_dir)[component]
        return c["args"], labupstream.resolve_env(c["env"], dict(fields, **{"metadata.namespace": NAMESPACE}))

    # steps: the cluster (continued) ------------------------------------------------------------

    def install_crds(self):
        """The CRDs of the MetalLB that runs. The upgrade lab applies them as docs/upgrade.md
        has a user apply manifests, `kubectl apply` (client-side, as upstream's documentation
        installs its own), MagLB's as config/manifests/maglb.yaml has them (config/crd)."""
        if self.running_metallb() == "upstream":
            crds, source = ["-f", self.upstream_dir / "crds.yaml"], \
                f"upstream MetalLB v{self.upstream.version}'s chart (AS numbers int64, as in v0.16)"
        elif self.upgrade_lab:
            crds, source = ["-k", REPO / "config" / "crd"], "config/crd/ (config/manifests/maglb.yaml's CRDs)"
        else:
            crds, source = ["-f", REPO / "config" / "crd" / "bases"], "config/crd/bases/"
        how = [] if self.upgrade_lab else ["--server-side", "--force-conflicts"]
        step(f"CRDs: {' '.join(['kubectl apply', *how])} of {source}; namespace {NAMESPACE}")
        self.kubectl("apply", *how, *crds, capture=True)
        self.kubectl("apply", "-f", "-", capture=True, input=f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    pod-security.kubernetes.io/enforce: privileged
    pod-security.kubernetes.io/audit: privileged
    pod-security.kubernetes.io/warn: privileged
""")
        out = self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all", capture=True)
        note(f"{len(out.splitlines())} CRDs established")

    def component_kubeconfig(self, account):
        """The kubeconfig a component of MagLB runs with: a token of its ServiceAccount, bound to
        exactly what its manifest grants (config/, applied again each time), so that every lab
        run checks the manifests; the administrator's in the upgrade lab, whose RBAC is
        upstream's chart's."""
        if self.upgrade_lab:
            return self.kubeconfig
        return self.cluster.service_account_kubeconfig(NAMESPACE, account, COMPONENT_RBAC[account],
                                                       self.state / f"kubeconfig-{account}")

    def controller_argv(self, replica="controller"):
        """(argv, environment) of the controller that runs now. In the upgrade lab both run with
        the arguments and environment of upstream's chart, and the lab adds after them (so they
        win) what running outside a pod needs: the kubeconfig, the namespace, the lab's ports,
        and where the API server reaches MagLB's webhooks. Upstream's webhooks stay off: its
        controller registers them behind the Service metallb-webhook-service, which the API
        server cannot reach here."""
        metrics, health, webhook = CONTROLLER_REPLICAS[replica]
        outside = ["--kubeconfig", self.component_kubeconfig("controller"), "--namespace", NAMESPACE, "--port", metrics]
        pod = {"metadata.name": replica}
        if self.running_metallb() == "upstream":
            args, env = self.chart("controller", pod)
            return [self.upstream.binary("controller"), *args, *outside, "--webhook-mode=disabled"], env
        # The lab and the e2e suites scrape plain HTTP (MagLB's default is HTTPS with token review).
        outside += ["--webhook-host", "127.0.0.1", "--webhook-port", webhook, "--health-probe-port", health,
                    "--cert-dir", self.state / "webhook-certs", "--metrics-secure=false"]
        if replica != "controller":
            # The first replica keeps the webhooks' certificate and registration, as the one
            # behind the webhook Service would; the others serve with that certificate.
            outside.append("--disable-cert-rotation")
        if self.upgrade_lab:
            args, env = self.chart("controller", pod)
            return [binary("controller"), *args, *outside], env
        return [binary("controller"), *outside, "--log-level", "debug"], {"METALLB_POD_NAME": replica}

    def start_controller(self, replica="controller"):
        """Starts a replica of the controller and waits until it is ready. Its pod name (the
        leader-election identity) is the replica's name."""
        argv, env = self.controller_argv(replica)
        metrics, health, webhook = CONTROLLER_REPLICAS[replica]
        upstream = self.running_metallb() == "upstream"
        if upstream:
            step(f"{replica}: upstream MetalLB v{self.upstream.version}'s, webhooks off, metrics :{metrics}")
            ready = f"http://127.0.0.1:{metrics}/metrics"
        else:
            step(f"{replica}: bin/controller, webhooks on 127.0.0.1:{webhook}, metrics :{metrics}, probes :{health}")
            self._record_binary("controller")
            ready = f"http://127.0.0.1:{health}/readyz"
        note(" ".join(map(str, argv[1:])) + "".join(f" {k}={v}" for k, v in env.items()))
        self.procs.start(replica, argv, env)
        started = time.monotonic()
        wait_until(f"{replica} {ready}", lambda: self.http_ok(ready), 90, replica, self.procs)
        note(f"{replica} ready after {time.monotonic() - started:.1f}s"
             + ("" if upstream else " (webhooks registered and serving)" if replica == "controller"
                else " (webhooks serving, unregistered)"))

    # steps: the network ----------------------------------------------------------------------

    def build_network(self):
        t = self.topology
        step(f"network: namespaces {', '.join(t.all_netns)}; the rack {labnet.RACK_PREFIX}.0/24 on the ToR's br0")
        leftovers = labnet.existing_lab_netns()
        if leftovers:
            note(f"removing namespaces left by an earlier lab: {', '.join(leftovers)}")
            labnet.destroy()
        labnet.build(t)
        self.bpffs.mkdir(parents=True, exist_ok=True)
        if not is_mounted(self.bpffs):
            labnet.sh("mount", "-t", "bpf", "bpf", self.bpffs)
        note(f"bpffs for the datapath pins mounted on {self.bpffs}")

    def router_log(self, directory, daemon, name):
        """The log file of an FRR daemon, in its directory, linked from .dev-env/logs as <name>-frr."""
        path = directory / f"{daemon}.log"
        link = self.procs.log(f"{name}-frr")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(path)
        return path

    def start_router(self):
        via = f" from reflectors {', '.join(self.reflectors.names)} (ADD-PATH)" if self.reflectors.names else ""
        step(f"tor: FRR zebra + bfdd + bgpd in {self.topology.netns('tor')}, AS {labnet.TOR_ASN}, "
             f"ECMP over {len(self.topology.lbs)} LB node(s){via}, BFD profile {labnet.BFD_PROFILE} "
             f"({labnet.BFD_INTERVAL_MS} ms x {labnet.BFD_DETECT_MULTIPLIER})")
        self.start_frr("tor", self.frr_dir, labnet.frr_config(self.topology), labnet.bfdd_config())
        step(f"rr: FRR zebra + bfdd + bgpd (installing nothing) in {self.topology.netns('rr')} on {labnet.RR_ADDR} "
             f"and {labnet.UPSTREAM_SAMPLE_PEER}, AS {labnet.NODE_ASN}: iBGP with the LB nodes once a BGPPeer names it")
        self.start_frr("rr", self.rr_dir, labnet.rr_config(self.topology), "hostname rr\n", "-n")

    def start_frr(self, router, directory, bgpd_config, bfdd_config, *bgpd_options):
        """Starts a router's zebra, bfdd and bgpd in its namespace, each once the one before
        answers: bgpd registers its BFD sessions with bfdd through zebra once, when it starts.
        The tor's daemons are named zebra, bfdd and bgpd; another router's carry its name."""
        directory.mkdir(parents=True, exist_ok=True)
        directory.parent.chmod(0o755)
        (directory / "zebra.conf").write_text(f"hostname {router}\n")
        (directory / "bfdd.conf").write_text(bfdd_config)
        (directory / "bgpd.conf").write_text(bgpd_config)
        labnet.sh("chown", "-R", "frr:frr", directory)
        for daemon, ready in (("zebra", "show interface brief"), ("bfdd", "show bfd peers brief"),
                              ("bgpd", "show bgp summary json")):
            name = router_process(router, daemon)
            # bfdd's control socket defaults to one path for the whole machine.
            own = ["--bfdctl", directory / "bfdd.sock"] if daemon == "bfdd" else []
            own += list(bgpd_options) if daemon == "bgpd" else []
            self.procs.start(name, [
                "ip", "netns", "exec", self.topology.netns(router), f"/usr/lib/frr/{daemon}",
                "-f", directory / f"{daemon}.conf", "-i", directory / f"{daemon}.pid",
                "-z", directory / "zserv.api", "--vty_socket", directory, "-P", "0", *own,
                "--log", f"file:{self.router_log(directory, daemon, name)}",
            ])
            wait_until(f"{router}'s {daemon} answering vtysh", lambda: self.vtysh(ready, router=directory, daemon=daemon),
                       30, name, self.procs)

    def restart_router(self, router):
        """Stops a router's FRR daemons (SIGTERM, bgpd first) and starts them again with the
        configuration files they ran with, as `systemctl restart frr` does."""
        directory, bgpd_options = {"tor": (self.frr_dir, ()), "rr": (self.rr_dir, ("-n",))}[router]
        for daemon in ("bgpd", "bfdd", "zebra"):
            self.procs.stop(router_process(router, daemon))
        self.start_frr(router, directory, (directory / "bgpd.conf").read_text(), (directory / "bfdd.conf").read_text(),
                       *bgpd_options)

    def start_relay(self):
        lbs = self.topology.lbs
        step(f"management relay: the API server on 127.0.0.1:{APISERVER_PORT} inside every node; "
             f"speaker metrics on 127.0.0.1:{speaker_metrics_port(lbs[0])}..")
        self._record_binary("labagent")
        argv = [binary("labagent"), "relay"]
        for node in self.topology.nodes:
            argv += ["--into", f"{self.topology.netns(node)}=127.0.0.1:{APISERVER_PORT},127.0.0.1:{APISERVER_PORT}"]
        argv += self.workloads.relay_args() + self.reflectors.relay_args(APISERVER_PORT)
        for lb in lbs:
            argv += ["--out", f"{self.topology.netns(lb)}=127.0.0.1:{speaker_metrics_port(lb)},127.0.0.1:{SPEAKER_METRICS_PORT}"]
        self.procs.start("relay", argv)
        wait_until("the relay listening", lambda: port_open(speaker_metrics_port(lbs[-1])), 15, "relay", self.procs)

    def register_nodes(self):
        t = self.topology
        step("nodes: " + ", ".join(f"{lb} ({'+'.join(t.shards(lb))})" for lb in t.lbs)
             + f", {', '.join(labnet.BACKENDS + tuple(t.reflectors))} (backends, reflectors); kept Ready with their "
             "rack addresses by `labagent nodes`")
        self.kubectl("apply", "-f", "-", input=labnet.node_manifests(t), capture=True)
        if self.procs.pid("nodes") is None:
            argv = [binary("labagent"), "nodes", "--kubeconfig", self.kubeconfig]
            for node in t.nodes + t.reflectors:
                argv += ["--node", f"{node}={t.address(node)},{t.address6(node)}"]
            self.procs.start("nodes", argv)
        wait_until("every node Ready", lambda: self.kubectl("wait", "--for=condition=Ready", "node", "--all",
                                                          "--timeout=5s", capture=True), 30, "nodes", self.procs)
        self.workloads.register_nodes()

    def backend_agent_argv(self, node):
        """The backend agent of a node, as a user runs it in a workload cluster: the LB nodes'
        addresses (the load balancers' outer sources) as --tunnel-sources. On an LB node the
        speaker's load balancer holds the XDP hook, so the agent decapsulates at TCX."""
        t = self.topology
        sources = ",".join(f"{t.address(lb)}/32,{t.address6(lb)}/128" for lb in t.lbs)
        hook = "tcx" if node in t.lbs else "xdp"
        return ["ip", "netns", "exec", t.netns(node), binary("speaker"), "--role=backend-agent",
                "--backend-interfaces", "eth0", "--xdp-mode", "generic", "--decap-hook", hook,
                "--datapath-pin-path", self.bpffs / f"{node}-agent",
                "--tunnel-sources", sources, "--port", BACKEND_AGENT_METRICS_PORT, "--log-level", "debug"]

    def start_backend_agents(self):
        t = self.topology
        step(f"backend agents: speaker --role=backend-agent on eth0 of {', '.join(t.rack_nodes)}: decapsulation of what "
             "the LB nodes tunnel, nothing from elsewhere (XDP generic; at TCX on the LB nodes, behind their load balancer)")
        self._record_binary("speaker")
        for node in t.rack_nodes:
            self.procs.start(f"{node}-agent", self.backend_agent_argv(node))
        for node in t.rack_nodes:
            self.wait_for_backend_agent(node)

    def wait_for_backend_agent(self, node):
        ns = self.topology.netns(node)
        wait_until(f"{node}'s backend agent serving /healthz",
                   lambda: labnet.sh("ip", "netns", "exec", ns, "curl", "-sSf", "--max-time", "2",
                                     f"http://127.0.0.1:{BACKEND_AGENT_METRICS_PORT}/healthz"), 15,
                   f"{node}-agent", self.procs)

    def start_pods(self):
        t = self.topology
        step(f"pods: {', '.join(t.all_pods)}: HTTP :{labnet.HTTP_PORT} and UDP :{labnet.UDP_PORT} answering "
             "'<pod> on <node> saw <client>'")
        for pod in t.all_pods:
            self.procs.start(pod, [
                binary("labagent"), "pod", "--netns", t.netns(pod), "--name", pod, "--node", t.node_of(pod),
                "--http-port", labnet.HTTP_PORT, "--udp-port", labnet.UDP_PORT,
            ])
        for pod in t.all_pods:
            node_ns, addr = t.netns(t.node_of(pod)), t.pod_address(pod)
            wait_until(f"{pod} answering its node on {addr}:{labnet.HTTP_PORT}",
                       lambda: labnet.sh("ip", "netns", "exec", node_ns, "curl", "-sSf", "--max-time", "2",
                                         f"http://{addr}:{labnet.HTTP_PORT}/"), 15, pod, self.procs)

    def start_kube_proxies(self):
        t = self.topology
        step(f"kube-proxy (iptables) on every node, against its cluster's API server: {', '.join(t.rack_nodes)}")
        for node in t.rack_nodes:
            self.procs.start(f"kube-proxy-{node}", [
                "ip", "netns", "exec", t.netns(node), self.bin_dir / "kube-proxy",
                "--kubeconfig", (self.workloads.cluster_of(node) or self.cluster).kubeconfig, "--hostname-override", node, "--proxy-mode", "iptables",
                "--conntrack-max-per-core", "0", "--healthz-bind-address", "127.0.0.1:10256",
                "--metrics-bind-address", "127.0.0.1:10249", "--v", "2",
            ])

    def speaker_argv(self, lb):
        """(argv, environment) of lb's speaker. In the upgrade lab, upstream's or MagLB's (whichever
        runs now) with the arguments and environment of upstream's chart, the downward API's
        fields filled in as a kubelet would, and the kubeconfig and namespace added."""
        t = self.topology
        netns = ["ip", "netns", "exec", t.netns(lb)]
        if self.upgrade_lab:
            args, env = self.chart("speaker", {"spec.nodeName": lb, "status.hostIP": t.address(lb),
                                               "status.podIP": t.address(lb),
                                               "metadata.name": labupstream.speaker_pod_name(lb)})
            if self.running_metallb() == "upstream":
                return [*netns, self.upstream.binary("speaker"), *args, "--kubeconfig", self.kubeconfig,
                        "--namespace", NAMESPACE], env
            return [*netns, binary("speaker"), *args, "--kubeconfig", self.kubeconfig, "--namespace", NAMESPACE,
                    "--metrics-secure=false"], env
        argv = [*netns, binary("speaker"),
                "--node-name", lb, "--kubeconfig", self.component_kubeconfig("speaker"), "--namespace", NAMESPACE,
                "--port", SPEAKER_METRICS_PORT, "--metrics-secure=false", "--enable-pprof", "--log-level", "debug",
                "--datapath", self.options["datapath"]]
        if self.options["datapath"] == "ebpf":
            # Generic XDP: the ToR's end of each veth runs no XDP program, which native XDP_TX needs.
            argv += ["--xdp-mode", "generic", "--datapath-interface", "eth0", "--datapath-pin-path", self.bpffs / lb,
                     "--datapath-encap", self.options["encap"]]
        return argv, {}

    def start_speaker(self, lb):
        argv, env = self.speaker_argv(lb)
        self.procs.start(f"speaker-{lb}", argv, env)

    def wait_for_speaker(self, lb):
        """Until lb's speaker serves metrics on the node's address (upstream's chart has it
        listen on the host IP alone)."""
        ns, url = self.topology.netns(lb), f"http://{self.topology.address(lb)}:{SPEAKER_METRICS_PORT}/metrics"
        wait_until(f"speaker {lb} serving {url}",
                   lambda: labnet.sh("ip", "netns", "exec", ns, "curl", "-sSf", "--max-time", "2", "-o", "/dev/null",
                                     "-w", "%{http_code}", url), 60, f"speaker-{lb}", self.procs)

    def start_lb_nodes(self):
        dp = self.options["datapath"]
        what = f"XDP Maglev on eth0 (generic), {self.options['encap']} to the backends" if dp == "ebpf" \
            else "kube-proxy (iptables) forwarding"
        which = f"upstream MetalLB v{self.upstream.version}'s" if self.running_metallb() == "upstream" else "MagLB's"
        step(f"LB nodes: {which} speaker on each of {', '.join(self.topology.lbs)}; datapath {dp}: {what}")
        if self.upgrade_lab:
            note(f"Pod objects {', '.join(labupstream.speaker_pod_name(lb) for lb in self.topology.lbs)} "
                 "(upstream's speaker looks itself up by METALLB_POD_NAME)")
            self.kubectl("apply", "-f", "-", capture=True,
                         input="---\n".join(labupstream.speaker_pod_manifest(lb, NAMESPACE) for lb in self.topology.lbs))
        if self.running_metallb() == "maglb":
            self._record_binary("speaker")
        for lb in self.topology.lbs:
            self.start_speaker(lb)
        for lb in self.topology.lbs:
            self.wait_for_speaker(lb)

    def apply_lab_config(self):
        if self.upgrade_lab:
            step(f"configuration: pools {', '.join(labnet.UPGRADE_POOLS)} ({', '.join(labnet.UPGRADE_BGP_POOLS)} over "
                 f"BGP with a community each, one of them by an alias; the rest over layer 2), BGPPeer tor; Services "
                 f"{', '.join('demo/' + s for s in labnet.UPGRADE_SERVICES)} (a requested IP, a shared one)")
            self.kubectl("apply", "-f", "-", input=labnet.upgrade_manifests(NAMESPACE), capture=True)
            return
        pools = labnet.POOLS[self.options["protocol"]]
        described = ", ".join(f"{name} ({' '.join(cidrs)}, shard {name})" for name, cidrs in pools.items())
        refls = self.topology.reflectors
        bgp = (f"BGPPeers {', '.join(r + s for r in refls for s in ('', '-v6'))} (the LB nodes' iBGP with the "
               f"reflectors) and tor, tor6 (the reflectors' with the ToR), BGPAdvertisements demo (host routes to the "
               f"reflectors) and demo-aggregated (/{labnet.AGGREGATION_LENGTH}, /{labnet.AGGREGATION_LENGTH6} to the ToR)"
               if refls else "BGPPeers tor and tor6, BGPAdvertisement demo")
        step(f"configuration: pools {described}, "
             + (bgp if self.options["protocol"] == "bgp" else "L2Advertisement demo")
             + "; Services demo/gold-web and demo/silver-web")
        self.kubectl("apply", "-f", "-", input=labnet.lab_manifests(self.topology, self.options["protocol"], NAMESPACE),
                     capture=True)

    def demo_vips(self):
        out = json.loads(self.kubectl("get", "services", "-n", "demo", "-o", "json", capture=True))
        svcs = sorted(out["items"], key=lambda svc: svc["metadata"]["name"])
        return [vip for svc in svcs for vip in labworkload.ingress_vips(svc, f"demo/{svc['metadata']['name']}")]

    def wait_for_vips(self):
        step("waiting for the demo VIPs to answer a curl from the client namespace")
        want = len(labnet.UPGRADE_SERVICES) if self.upgrade_lab else 2 * len(labnet.SHARDS)
        wait_until("every IP of each demo Service", lambda: len(self.demo_vips()) == want, 60, "controller", self.procs)
        client = self.topology.netns("client")
        for hostport, name in self.demo_vips():
            started = time.monotonic()
            answer = wait_until(f"http://{hostport}/ ({name}) from {client}",
                                lambda: labnet.sh("ip", "netns", "exec", client, "curl", "-gsSf", "--max-time", "2",
                                                  f"http://{hostport}/"),
                                120, f"speaker-{self.topology.lbs[0]}", self.procs, interval=0.5)
            note(f"{name} {hostport} answered after {time.monotonic() - started:.1f}s: {answer.strip()}")

    def write_description(self):
        """lab.json: what the e2e suites need to drive this lab."""
        t = self.topology
        description = {
            "options": self.options,
            "datapath": self.options["datapath"],
            "encap": self.options["encap"],
            "client_mtu": labnet.CLIENT_MTU,
            "protocol": self.options["protocol"],
            "k8s_bin_dir": str(self.bin_dir),
            "k8s_version": self.k8s_version,
            "kubeconfig": str(self.kubeconfig),
            "namespace": NAMESPACE,
            "client_netns": t.netns("client"),
            "client_address": labnet.CLIENT_ADDR,
            "client_address6": labnet.CLIENT_ADDR6,
            "routers": {
                "tor": {"exec": ["vtysh", "--vty_socket", str(self.frr_dir)],
                        "kernel_routes": ["ip", "-n", t.netns("tor"), "-j", "route", "show"], "address": labnet.TOR_RACK_ADDR,
                        "address6": labnet.TOR_RACK_ADDR6, "asn": labnet.TOR_ASN},
                "rr": {"exec": ["vtysh", "--vty_socket", str(self.rr_dir)], "address": labnet.RR_ADDR,
                       "upstream_sample_address": labnet.UPSTREAM_SAMPLE_PEER,
                       "asn": labnet.NODE_ASN},
            },
            "node_asn": labnet.NODE_ASN,
            "lb_nodes": {lb: {"address": t.address(lb), "address6": t.address6(lb), "netns": t.netns(lb), "shards": t.shards(lb),
                              "metrics": f"http://127.0.0.1:{speaker_metrics_port(lb)}/metrics"} for lb in t.lbs},
            "backends": {be: {"address": t.address(be), "address6": t.address6(be), "netns": t.netns(be)}
                         for be in labnet.BACKENDS},
            "pods": {pod: {"node": t.node_of(pod), "address": t.pod_address(pod),
                           "address6": t.pod_address6(pod), "netns": t.netns(pod)} for pod in t.pods},
            "controller_metrics": f"http://127.0.0.1:{METRICS_PORT}/metrics",
            "pools": labnet.UPGRADE_POOLS if self.upgrade_lab else labnet.POOLS[self.options["protocol"]],
            "vip_range": labnet.BGP_VIPS if self.options["protocol"] == "bgp" else labnet.L2_VIPS,
            "vip_range6": "" if self.upgrade_lab else labnet.BGP_VIPS6 if self.options["protocol"] == "bgp" else labnet.L2_VIPS6,
            "http_port": labnet.HTTP_PORT,
            "udp_port": labnet.UDP_PORT,
            "node_down": [*LAB_SCRIPT, "speaker", "stop"],
            "node_up": [*LAB_SCRIPT, "speaker", "start"],
            "node_uplink_down": [*LAB_SCRIPT, "uplink", "down"],
            "node_uplink_up": [*LAB_SCRIPT, "uplink", "up"],
            "chaos": labchaos.description(LAB_SCRIPT, CONTROLLER_REPLICAS),
            "kubeconfig_secret_namespace": NAMESPACE,
            **self.reflectors.description(LAB_SCRIPT),
            "workload_clusters": self.workloads.description(LAB_SCRIPT),
            "metallb": self.options["metallb"],
        }
        if self.upgrade_lab:
            description.update({"upstream_metallb": self.upstream.describe(),
                                "swap_to_maglb": [*LAB_SCRIPT, "swap", "maglb"],
                                "swap_to_upstream": [*LAB_SCRIPT, "swap", "upstream"]})
        (self.state / "lab.json").write_text(json.dumps(description, indent=2) + "\n")

    # binaries ------------------------------------------------------------------------------

    def _record_binary(self, name):
        path = binary(name)
        if not path.is_file():
            raise LabError(f"{path} missing (python3 tasks.py build)")
        (self.state / f"{name}.sha256").write_text(digest(path) + "\n")

    def binary_changed(self, name):
        try:
            recorded = (self.state / f"{name}.sha256").read_text().strip()
        except OSError:
            return True
        return not binary(name).is_file() or recorded != digest(binary(name))

    # lifecycle -----------------------------------------------------------------------------

    def steps(self):
        """A fresh start, in order."""
        render = [self.render_upstream_chart] if self.upgrade_lab else []
        return [*render, self.start_apiserver, self.install_crds, self.start_controller, self.workloads.start_control_planes,
                self.build_network, self.start_router, self.start_relay, self.register_nodes, self.start_backend_agents,
                self.start_pods, self.start_kube_proxies, self.reflectors.start_all, self.start_lb_nodes,
                self.apply_lab_config,
                self.workloads.populate, self.wait_for_vips, self.workloads.wait_for_vips, self.write_description]

    def expected_processes(self):
        t = self.topology
        names = ["etcd", "kube-apiserver", "controller", "relay", "nodes", *t.all_pods]
        names += [router_process(router, daemon) for router in ("tor", "rr") for daemon in ("zebra", "bfdd", "bgpd")]
        names += [f"{node}-agent" for node in t.rack_nodes]
        names += [f"speaker-{lb}" for lb in t.lbs] + self.reflectors.processes
        names += [f"kube-proxy-{node}" for node in t.rack_nodes]
        return names + self.workloads.expected_processes()

    def recorded_options(self):
        try:
            d = json.loads((self.state / "lab.json").read_text())
        except (OSError, ValueError):
            return None
        return d.get("options")

    def up(self):
        if os.geteuid() != 0:
            raise LabError("the lab needs root: it creates network namespaces, runs FRR and attaches BPF programs")
        running = self.procs.running()
        # An upgrade lab left running MagLB (a spec that stopped half-way) starts afresh.
        same = self.recorded_options() == self.options and self.running_metallb() == self.options["metallb"]
        if same and set(running) >= set(self.expected_processes()) and self.cluster.answers():
            self._update()
            return
        if self.state.exists() or labnet.existing_lab_netns():
            if not same and self.recorded_options() is not None:
                step(f"dev-env runs with {self.recorded_options()}, wanted {self.options}: restarting it cleanly")
            elif running:
                down = ", ".join(n for n in self.expected_processes() if n not in running)
                step(f"dev-env is partly down ({down or 'kube-apiserver not ready'} not running): restarting it cleanly")
            cleanup(self.state)
        self.state.mkdir(parents=True)
        started = time.monotonic()
        try:
            for start_step in self.steps():
                start_step()
        except (Exception, KeyboardInterrupt) as e:
            self.fail(e)
            raise LabError("dev-env did not come up") from None
        note(f"lab up in {time.monotonic() - started:.0f}s")
        self.print_info(already_up=False)

    def fail(self, error):
        """Reports a failed step and removes what this run started; the logs are kept."""
        print(f"error: {error or type(error).__name__}", file=sys.stderr)
        log = getattr(error, "log", None)
        if log:
            print(f"--- last lines of {log}:", file=sys.stderr)
            print(tail(log).rstrip(), file=sys.stderr)
            print("---", file=sys.stderr)
        step("removing what was started (logs kept in .dev-env/logs)")
        cleanup(self.state, keep_logs=True)

    def _update(self):
        """The lab is up with the same options: reapply the CRDs and the configuration, and
        restart the processes whose binary changed."""
        step("dev-env is already up: updating it")
        try:
            self.install_crds()
            for name, procs in (("controller", ["controller"]),
                                ("labagent", ["relay", "nodes", *self.workloads.labagent_processes,
                                              *self.topology.all_pods]),
                                ("speaker", [f"speaker-{lb}" for lb in self.topology.lbs]
                                 + [f"{node}-agent" for node in self.topology.rack_nodes]
                                 + self.reflectors.processes)):
                if not self.binary_changed(name):
                    note(f"bin/{name} unchanged: {', '.join(procs)} left running")
                    continue
                step(f"bin/{name} changed: restarting {', '.join(procs)}")
                for p in procs:
                    self.procs.stop(p)
                {"controller": self.start_controller,
                 "labagent": lambda: (self.start_relay(), self.register_nodes(), self.start_pods()),
                 "speaker": self._restart_speakers}[name]()
            self.register_nodes()
            self.apply_lab_config()
            self.workloads.populate()
            self.wait_for_vips()
            self.workloads.wait_for_vips()
            self.write_description()
        except (Exception, KeyboardInterrupt) as e:
            print(f"error: {e or type(e).__name__}", file=sys.stderr)
            raise LabError("updating the running dev-env failed; `python3 tasks.py dev-env-cleanup` "
                           "then `python3 tasks.py dev-env` starts afresh") from None
        self.print_info(already_up=True)

    def _restart_speakers(self):
        self._record_binary("speaker")
        for lb in self.topology.lbs:
            self.procs.stop(f"speaker-{lb}")
            self.start_speaker(lb)
        for node in self.topology.rack_nodes:
            self.procs.stop(f"{node}-agent")
        self.start_backend_agents()
        for name in self.reflectors.processes:
            self.procs.stop(name)
        self.reflectors.start_all()

    # the upgrade ---------------------------------------------------------------------------

    def swap(self, target):
        """Replaces the running MetalLB with target ("maglb" or "upstream") as a user upgrades or
        goes back: the CRDs applied over the old ones (stored objects untouched), the controller
        replaced, then each LB node's speaker in turn, as a DaemonSet's rolling update does, the
        next one once the ToR has the new speaker's session and every route the old one gave it.
        Both run with the arguments and environment of upstream's chart."""
        if not self.upgrade_lab:
            raise LabError("only a lab brought up with --metallb upstream swaps its MetalLB")
        current = self.running_metallb()
        if current == target:
            note(f"{target} runs already")
            return
        started = time.monotonic()
        step(f"swap {current} -> {target}: CRDs, controller, then the speakers of {', '.join(self.topology.lbs)} one "
             "at a time")
        if target == "upstream":
            self.release_maglb_webhooks()
        (self.state / "metallb").write_text(target + "\n")
        self.install_crds()
        self.procs.stop("controller")
        self.start_controller()
        for lb in self.topology.lbs:
            before = self.tor_prefixes(lb) or 0
            self.procs.stop(f"speaker-{lb}")
            stopped = time.monotonic()
            self.start_speaker(lb)
            wait_until(f"the ToR's session with {lb} established, its {before} routes back",
                       lambda: (n := self.tor_prefixes(lb)) is not None and n >= before, 90, f"speaker-{lb}", self.procs, interval=0.1)
            note(f"{lb}: {target}'s speaker gave the ToR its {before} routes again {time.monotonic() - stopped:.1f}s "
                 "after the old one stopped")
        note(f"swapped to {target} in {time.monotonic() - started:.1f}s")

    def release_maglb_webhooks(self):
        """Undoes what MagLB's controller pointed at this host (it runs outside the cluster):
        deletes its validating webhook configuration, and points the BGPPeer CRD's conversion
        webhook at the Service metallb-webhook-service again, as MagLB leaves both in a
        cluster, where upstream's manifests then take them over. Here upstream's controller
        serves no webhooks, and MagLB's registration would refuse every change."""
        step("MagLB's webhooks, registered at this host: ValidatingWebhookConfiguration metallb-webhook-configuration "
             "deleted, the BGPPeer CRD's conversion webhook on the Service metallb-webhook-service again")
        self.kubectl("delete", "validatingwebhookconfiguration", "metallb-webhook-configuration", "--ignore-not-found",
                     capture=True)
        service = {"namespace": NAMESPACE, "name": "metallb-webhook-service", "path": "/convert"}
        self.kubectl("patch", "crd", "bgppeers.metallb.io", "--type=merge", "-p", json.dumps(
            {"spec": {"conversion": {"webhook": {"clientConfig": {"url": None, "caBundle": None, "service": service}}}}}),
            capture=True)

    def tor_prefixes(self, lb):
        """How many IPv4 routes the ToR has from lb; None while their session is not established."""
        summary = json.loads(self.vtysh("show bgp ipv4 unicast summary json"))
        peer = summary.get("peers", {}).get(self.topology.address(lb), {})
        return peer.get("pfxRcd") if peer.get("state") == "Established" else None

    def print_info(self, already_up):
        t = self.topology
        client = t.netns("client")
        vips = self.demo_vips()
        pids = ", ".join(f"{n} {pid}" for n, pid in self.procs.running().items())
        state = "was already up" if already_up else "is up"
        first_vip = vips[0][0].rsplit(":", 1)[0] if vips else "VIP"
        v6 = [hp.rsplit(":", 1)[0] for hp, _ in vips if hp.startswith("[")]
        v6_hint = (f"\n  ip netns exec {client} curl -gs http://{v6[0]}/          # the same over IPv6 (the VIP's "
                   f"second family)") if v6 else ""
        router_cmd = f"vtysh --vty_socket {self.frr_dir}"
        reflector_hints = "".join(f"\n{line}" for line in self.reflectors.info(router_cmd))
        wcs = self.workloads.clusters
        workloads = "".join(f"\nWorkload cluster {wc}: kube-apiserver on {c.server}, nodes "
                            f"{', '.join(t.workload_nodes(wc))} (backend agent, kube-proxy) on the same rack, "
                            f"Service {labworkload.DEMO_NAMESPACE}/{labworkload.DEMO_SERVICE}." for wc, c in wcs.items())
        workload_hints = "".join(f"\n{line}" for line in self.workloads.info())
        metrics = "\n".join(f"  curl -s http://127.0.0.1:{speaker_metrics_port(lb)}/metrics | grep -E '^(metallb|maglb)_'"
                            f"   # speaker {lb}" for lb in t.lbs)
        running = self.running_metallb()
        controller = f"upstream MetalLB v{self.upstream.version}'s controller and speakers" if running == "upstream" \
            else f"the controller (webhooks on 127.0.0.1:{WEBHOOK_PORT})"
        if self.upgrade_lab:
            other = "upstream" if running == "maglb" else "maglb"
            metrics += (f"\n  /usr/bin/python3 hack/lab.py swap {other}   # {other}'s CRDs over these, its controller, "
                        f"then its speakers one node at a time (upstream's chart's arguments for both)")
        print(f"""
MagLB dev-env {state}: kube-apiserver v{self.k8s_version} on {self.server}, {controller}, and the lab network: {client} -> {t.netns('tor')} (FRR) -> {', '.join(t.reflectors) + ' (route reflectors) -> ' if t.reflectors else ''}{', '.join(t.lbs)}
(speakers, datapath {self.options['datapath']}, {self.options['protocol']}) -> {', '.join(labnet.BACKENDS)} (backends,
kube-proxy) -> pods {', '.join(t.pods)}.{workloads}
Processes: {pids}.

Try:
  ip netns exec {client} curl -s http://{first_vip}/          # a pod answers: "<pod> on <node> saw {labnet.CLIENT_ADDR}:<port>"
  for i in $(seq 8); do ip netns exec {client} curl -s http://{first_vip}/; done   # flows spread over the pods
  # gold-web has externalTrafficPolicy Local: its pods see the client's address; silver-web has
  # Cluster: the backend node's kube-proxy masquerades it, and its pods see the node's address.
  echo hi | ip netns exec {client} nc -u -w1 {first_vip} {labnet.UDP_PORT}     # UDP echo{v6_hint}
  {router_cmd} -c 'show bgp summary' -c 'show bgp ipv4 unicast' -c 'show bgp ipv6 unicast'
  {router_cmd} -c 'show bfd peers brief'   # the ToR's BFD session with each LB node (reflector), both families
  vtysh --vty_socket {self.rr_dir} -c 'show bgp summary'   # rr: iBGP, once a BGPPeer names {labnet.RR_ADDR} or {labnet.UPSTREAM_SAMPLE_PEER}
  ip netns exec {t.netns('tor')} ip route; ip -n {t.netns('tor')} -6 route   # the VIPs and their next hops (ECMP){reflector_hints}

  export KUBECONFIG={self.kubeconfig}
  alias kubectl={self.kubectl_path}
  kubectl get svc -A; kubectl get ipaddresspools,bgppeers,bgpadvertisements,l2advertisements -n {NAMESPACE}
  kubectl get servicebgpstatus,servicel2status,configurationstates -n {NAMESPACE}

  curl -s http://127.0.0.1:{METRICS_PORT}/metrics | grep ^metallb_   # controller
{metrics}
  /usr/bin/python3 hack/lab.py speaker stop lb1   # take lb1 out (and `start` to bring it back)
  less .dev-env/logs/speaker-lb1.log   # every process logs under .dev-env/logs{workload_hints}

Rerun `python3 tasks.py dev-env` to pick up rebuilt binaries; `python3 tasks.py e2etest` runs the suites here;
stop everything with `python3 tasks.py dev-env-cleanup`.

kubeconfig: {self.kubeconfig}
client-netns: {client}""", flush=True)
        for wc, c in wcs.items():
            print(f"workload-kubeconfig: {wc} {c.kubeconfig}", flush=True)
        for hostport, name in vips + self.workloads.vips():
            print(f"vip: {hostport} {name}", flush=True)


MAX_LB_NODES = 8
# What a lab starts with: MagLB, or upstream MetalLB's release (the upgrade lab).
METALLBS = ("maglb", "upstream")
LAB_SCRIPT = [sys.executable, str(Path(__file__).resolve())]
SPEAKER_METRICS_PORT = 7472
BACKEND_AGENT_METRICS_PORT = 7476  # inside each node's namespace


def speaker_metrics_port(lb):
    """The host port the relay exposes lbN's speaker metrics on."""
    return 27500 + int(lb[2:])


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_mounted(path):
    resolved = str(Path(path).resolve())
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == resolved for line in f)


def router_process(router, daemon):
    """The process name of a router's FRR daemon: the tor's are plain, others carry the router."""
    return daemon if router == "tor" else f"{daemon}-{router}"


def router_dir(state):
    """Where the lab's FRR instances keep their configuration, sockets, pid and log files: FRR
    drops root for the frr user, which must reach them, and a checkout may sit below a directory
    only root enters (a clone in mktemp's 0700 directory). So they are in /run, under a hash of
    the state directory."""
    return Path("/run/maglb-lab") / hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:12]


def cleanup(state=STATE, keep_logs=False):
    """Stops every process of the lab, deletes its namespaces, unmounts its bpffs (dropping
    what is pinned there) and removes the state directory (but its logs, with keep_logs)."""
    procs = Processes(state)
    names = procs.names()
    if names:
        step(f"dev-env: stopping {', '.join(reversed(names))}")
        procs.stop_all()
    gone = labnet.destroy()
    if gone:
        step(f"dev-env: deleted namespaces {', '.join(gone)}")
    shutil.rmtree(router_dir(state), ignore_errors=True)
    bpffs = state / "bpf"
    if bpffs.exists() and is_mounted(bpffs):
        labnet.sh("umount", bpffs)
        step(f"dev-env: unmounted {bpffs}")
    if not state.exists():
        if not (names or gone):
            step("dev-env: nothing to clean up")
        return
    if keep_logs:
        for entry in state.iterdir():
            if entry.name != "logs":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return
    step(f"dev-env: removing {state}")
    shutil.rmtree(state)


def running_lab():
    """(lab.json, Lab) of the running dev-env; (None, None), said, when none runs."""
    try:
        d = json.loads((STATE / "lab.json").read_text())
    except OSError:
        print("no running dev-env (.dev-env/lab.json missing)", file=sys.stderr)
        return None, None
    return d, Lab(d["k8s_bin_dir"], d["k8s_version"], **d["options"],
                  upstream=labupstream.Upstream.from_description(d.get("upstream_metallb")))


def main(argv):
    """hack/lab.py speaker stop|start lbN: stops (SIGTERM, as a kubelet would) or restarts the
    speaker of one LB node of the running lab; hack/lab.py uplink down|up lbN takes the node's
    uplink down (a hard failure: nothing leaves gracefully) or brings it back; hack/lab.py
    workload-apiserver stop|start wcK does the same with a workload cluster's kube-apiserver
    (its etcd and data stay); hack/lab.py reflector stop|start reflN kills a route reflector
    (SIGKILL, a crash) or restarts it; hack/lab.py swap maglb|upstream replaces the MetalLB of a lab
    brought up with --metallb upstream (Lab.swap); hack/lab.py chaos ... inflicts the faults of
    the chaos suite (hack/labchaos.py)."""
    commands = {"speaker": ("lb_nodes", ("stop", "start")), "uplink": ("lb_nodes", ("down", "up")),
                "workload-apiserver": ("workload_clusters", ("stop", "start")),
                "reflector": ("reflectors", ("stop", "start"))}
    if argv[:1] == ["chaos"]:
        described, lab = running_lab()
        return labchaos.main(argv[1:], lab, described) if lab else 1
    swap = len(argv) == 2 and argv[0] == "swap" and argv[1] in METALLBS
    if not swap and (len(argv) != 3 or argv[0] not in commands or argv[1] not in commands[argv[0]][1]):
        print("usage: hack/lab.py speaker stop|start lbN\n       hack/lab.py uplink down|up lbN\n"
              "       hack/lab.py workload-apiserver stop|start wcK\n"
              "       hack/lab.py reflector stop|start reflN   (stop: kill -9)\n       hack/lab.py swap maglb|upstream\n"
              "       hack/lab.py chaos ...   (hack/labchaos.py)",
              file=sys.stderr)
        return 2
    d, lab = running_lab()
    if lab is None:
        return 1
    if swap:
        try:
            lab.swap(argv[1])
        except LabError as e:
            print(f"error: {e}", file=sys.stderr)
            if e.log:
                print(f"--- last lines of {e.log}:\n{tail(e.log).rstrip()}", file=sys.stderr)
            return 1
        return 0
    command, action, target = argv
    kind = commands[command][0]
    known = d.get(kind) or {}
    if target not in known:
        print(f"{target} is not one of the lab's {kind.replace('_', ' ')} {sorted(known)}", file=sys.stderr)
        return 2
    if command == "uplink":
        (labnet.uplink_down if action == "down" else labnet.uplink_up)(lab.topology, target)
        return 0
    if command == "reflector":
        if action == "stop":
            lab.reflectors.kill(target)
        elif lab.procs.pid(labreflector.process(target)) is None:
            lab.reflectors.start(target)
        return 0
    if command == "workload-apiserver":
        cluster = lab.workloads.clusters[target]
        name, start = cluster.process("kube-apiserver"), cluster.start_apiserver
    else:
        name, start = f"speaker-{target}", lambda: lab.start_speaker(target)
    if action == "stop":
        lab.procs.stop(name)
    elif lab.procs.pid(name) is None:
        start()
        note(f"started {name} (pid {lab.procs.pid(name)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
