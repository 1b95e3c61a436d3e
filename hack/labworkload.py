"""The lab's workload clusters (`tasks.py dev-env --workload-clusters N`): clusters behind the LB
cluster, whose LoadBalancer Services the LB cluster's controller projects, allocates VIPs for and
writes the VIPs back to.

Each workload cluster wcK has its own etcd and kube-apiserver on loopback (the LB cluster's ports
plus 100·K, the lab's CA and certificates), a kube-controller-manager running only the
EndpointSlice, garbage-collector and namespace controllers, and two nodes on the rack
(maglb-wcK-n1, -n2, hack/labnet.py) with three pod slots each. The nodes run what a workload
cluster of MagLB's runs: the backend agent and kube-proxy (against their own API server through
the lab's relay). Node objects are kept Ready by `labagent nodes`, and `labagent kubelet` runs the
Pods bound to the nodes in the slots of their names, so that the real EndpointSlice controller
makes the EndpointSlices.

In each: namespace demo with Pods for slots pod1 and pod2 of every node (app=echo) and the
LoadBalancer Service demo/echo (HTTP 80, UDP 5000, externalTrafficPolicy Local, PreferDualStack).
In the LB cluster: the kubeconfig Secret wcK-kubeconfig and the WorkloadCluster wcK.
"""

import json
import time

import labnet
from labcluster import Cluster, LabError, binary, wait_until
from tooling import REPO, note, step

PORT_STRIDE = 100
DEMO_NAMESPACE = "demo"
DEMO_SERVICE = "echo"
DEMO_SLOTS = ("pod1", "pod2")
KUBECONFIG_KEY = "kubeconfig"
CONTROLLERS = "endpointslice,garbagecollector,namespace"
# What a workload cluster grants projection: a ServiceAccount with least privilege.
PROJECTION_RBAC = REPO / "config" / "workload-cluster"
PROJECTION_ACCOUNT = "maglb-projection"  # its name and namespace


def service_cidrs(wc):
    """wcK's Service ranges, beside the LB cluster's 10.96.0.0/16: 10.(96+K).0.0/16 and fd00:(96+K)::/112."""
    k = int(wc[2:])
    return f"10.{96 + k}.0.0/16,fd00:{96 + k}::/112"


def kubeconfig_secret(wc):
    return f"{wc}-kubeconfig"


def node_manifests(wc):
    docs = [f"""apiVersion: v1
kind: Node
metadata:
  name: {node}
  labels:
    kubernetes.io/hostname: {node}
    maglb.io/lab-role: workload""" for node in labnet.Topology.workload_nodes(wc)]
    return "\n---\n".join(docs) + "\n"


def demo_manifests(wc):
    """Namespace demo, a Pod for slots pod1 and pod2 of each node, and the Service demo/echo."""
    docs = [f"""apiVersion: v1
kind: Namespace
metadata:
  name: {DEMO_NAMESPACE}"""]
    for node in labnet.Topology.workload_nodes(wc):
        for slot in DEMO_SLOTS:
            docs.append(f"""apiVersion: v1
kind: Pod
metadata:
  name: {node}-{slot}
  namespace: {DEMO_NAMESPACE}
  labels:
    app: echo
spec:
  nodeName: {node}
  containers:
  - name: echo
    image: lab/echo
    ports:
    - {{name: http, containerPort: {labnet.HTTP_PORT}, protocol: TCP}}
    - {{name: udp, containerPort: {labnet.UDP_PORT}, protocol: UDP}}""")
    docs.append(f"""apiVersion: v1
kind: Service
metadata:
  name: {DEMO_SERVICE}
  namespace: {DEMO_NAMESPACE}
spec:
  type: LoadBalancer
  selector:
    app: echo
  externalTrafficPolicy: Local
  ipFamilyPolicy: PreferDualStack
  ipFamilies: [IPv4, IPv6]
  ports:
  - {{name: http, port: {labnet.HTTP_PORT}, targetPort: http, protocol: TCP}}
  - {{name: udp, port: {labnet.UDP_PORT}, targetPort: udp, protocol: UDP}}""")
    return "\n---\n".join(docs) + "\n"


def workload_cluster_manifest(wc):
    return f"""apiVersion: maglb.io/v1alpha1
kind: WorkloadCluster
metadata:
  name: {wc}
spec:
  kubeconfigSecret:
    name: {kubeconfig_secret(wc)}
    key: {KUBECONFIG_KEY}
"""


def ready_endpoints(slices):
    """The ready endpoint addresses of an EndpointSlice list, per address type."""
    ready = {}
    for s in slices["items"]:
        for e in s.get("endpoints") or []:
            if e.get("conditions", {}).get("ready"):
                ready.setdefault(s["addressType"], set()).update(e["addresses"])
    return ready


def ingress_vips(service, name):
    """(host:port, name) of each ingress IP in a Service's status, IPv4 first."""
    vips = []
    for ingress in service.get("status", {}).get("loadBalancer", {}).get("ingress") or []:
        host = f"[{ingress['ip']}]" if ":" in ingress["ip"] else ingress["ip"]
        vips.append((f"{host}:{labnet.HTTP_PORT}", name))
    return sorted(vips, key=lambda v: v[0].startswith("["))


class WorkloadClusters:
    """The workload clusters of a lab (hack/lab.py's Lab): their control planes, nodes, Pods and
    registration with the LB cluster."""

    def __init__(self, lab):
        self.lab = lab
        self.topology = lab.topology
        base = lab.cluster
        self.clusters = {
            wc: Cluster(wc, lab.bin_dir, lab.procs, lab.pki, lab.state,
                        base.etcd_port + PORT_STRIDE * k, base.apiserver_port + PORT_STRIDE * k, service_cidrs(wc),
                        "default")
            for k, wc in enumerate(self.topology.wcs, start=1)}

    def cluster_of(self, node):
        """The workload cluster a node or pod slot belongs to, or None for the LB cluster's."""
        return next((c for wc, c in self.clusters.items() if node.startswith(f"{wc}-")), None)

    @property
    def ports(self):
        return [p for c in self.clusters.values() for p in c.ports]

    def expected_processes(self):
        roles = ("etcd", "kube-apiserver", "kube-controller-manager", "nodes", "kubelet")
        return [c.process(role) for c in self.clusters.values() for role in roles]

    @property
    def labagent_processes(self):
        return [c.process(role) for c in self.clusters.values() for role in ("nodes", "kubelet")]

    # steps --------------------------------------------------------------------------------

    def launch_control_planes(self):
        """Starts each cluster's etcd and kube-apiserver; start_control_planes() waits for them."""
        for wc, c in self.clusters.items():
            step(f"workload cluster {wc}: etcd on 127.0.0.1:{c.etcd_port}, kube-apiserver on {c.server} "
                 f"(Services {c.service_cidrs})")
            c.launch()

    def start_control_planes(self):
        for wc, c in self.clusters.items():
            step(f"workload cluster {wc}: kube-apiserver ready, kube-controller-manager ({CONTROLLERS})")
            c.wait_ready()
            c.procs.start(c.process("kube-controller-manager"), [
                c.bin_dir / "kube-controller-manager",
                "--kubeconfig", c.kubeconfig,
                f"--controllers={CONTROLLERS}",
                "--leader-elect=false",
                "--secure-port=0",
                "--v=2",
            ])

    def relay_args(self):
        """The relay's --into arguments: each workload node reaches its cluster's API server on
        127.0.0.1 inside its namespace, on the same port as on the host."""
        args = []
        for wc, c in self.clusters.items():
            for node in self.topology.workload_nodes(wc):
                args += ["--into", f"{self.topology.netns(node)}=127.0.0.1:{c.apiserver_port},127.0.0.1:{c.apiserver_port}"]
        return args

    def register_nodes(self):
        t = self.topology
        for wc, c in self.clusters.items():
            nodes = t.workload_nodes(wc)
            step(f"workload cluster {wc}: nodes {', '.join(nodes)} kept Ready by `labagent nodes`; their Pods run in "
                 f"the pod slots by `labagent kubelet`")
            c.kubectl("apply", "-f", "-", input=node_manifests(wc), capture=True)
            node_flags = [arg for node in nodes for arg in ("--node", f"{node}={t.address(node)},{t.address6(node)}")]
            if c.procs.pid(c.process("nodes")) is None:
                c.procs.start(c.process("nodes"), [binary("labagent"), "nodes", "--kubeconfig",
                                                          c.kubeconfig, *node_flags])
            if c.procs.pid(c.process("kubelet")) is None:
                slots = [arg for node in nodes for pod in t.pods_of(node)
                         for arg in ("--slot", f"{pod}={node},{t.pod_address(pod)},{t.pod_address6(pod)}")]
                c.procs.start(c.process("kubelet"), [binary("labagent"), "kubelet", "--kubeconfig",
                                                            c.kubeconfig, *node_flags, *slots])
            wait_until(f"{wc}'s nodes Ready", lambda: c.kubectl("wait", "--for=condition=Ready", "node", "--all",
                                                                "--timeout=5s", capture=True),
                       30, c.process("nodes"), c.procs)

    def populate(self):
        """The demo Pods and Service in each workload cluster, and its registration in the LB
        cluster; waits for the EndpointSlice controller to list the demo Pods."""
        ns = self.lab.namespace
        for wc, c in self.clusters.items():
            step(f"workload cluster {wc}: Service {DEMO_NAMESPACE}/{DEMO_SERVICE} (ETP Local, PreferDualStack) and its "
                 f"Pods in slots {', '.join(DEMO_SLOTS)} of each node; in the LB cluster Secret {ns}/{kubeconfig_secret(wc)} "
                 f"and WorkloadCluster {wc}")
            c.kubectl("apply", "-f", "-", input=demo_manifests(wc), capture=True)
            secret = self.lab.kubectl("create", "secret", "generic", kubeconfig_secret(wc), "-n", ns,
                                      f"--from-file={KUBECONFIG_KEY}={self.projection_kubeconfig(c)}", "--dry-run=client",
                                      "-o", "yaml", capture=True)
            self.lab.kubectl("apply", "-f", "-", input=secret, capture=True)
            self.lab.kubectl("apply", "-f", "-", input=workload_cluster_manifest(wc), capture=True)
        for wc, c in self.clusters.items():
            want = len(self.topology.workload_nodes(wc)) * len(DEMO_SLOTS)

            def listed(c=c, want=want):
                slices = json.loads(c.kubectl("get", "endpointslices", "-n", DEMO_NAMESPACE, "-l",
                                              f"kubernetes.io/service-name={DEMO_SERVICE}", "-o", "json", capture=True))
                ready = ready_endpoints(slices)
                return all(len(ready.get(f, ())) == want for f in ("IPv4", "IPv6")) and ready
            started = time.monotonic()
            ready = wait_until(f"{wc}'s EndpointSlices of {DEMO_NAMESPACE}/{DEMO_SERVICE} listing its {want} Pods",
                               listed, 60, c.process("kube-controller-manager"), c.procs)
            note(f"{wc}: kube-controller-manager listed {', '.join(sorted(ready['IPv4']))} (and IPv6) after "
                 f"{time.monotonic() - started:.1f}s")

    def projection_kubeconfig(self, c):
        """The kubeconfig the LB cluster's controller gets: the ServiceAccount of
        config/workload-cluster/ (applied here) with a token, so that projection runs with the
        rights a user grants it; the admin's while that directory does not exist."""
        if not (PROJECTION_RBAC / "kustomization.yaml").is_file():
            note(f"{PROJECTION_RBAC.relative_to(REPO)}/ missing: {c.name}'s Secret holds the admin's kubeconfig")
            return c.kubeconfig
        return c.service_account_kubeconfig(PROJECTION_ACCOUNT, PROJECTION_ACCOUNT, ["-k", PROJECTION_RBAC],
                                            c.kubeconfig.with_name(f"{c.kubeconfig.name}-projection"))

    def projecting(self):
        """Whether a projection controller runs: some WorkloadCluster has status conditions."""
        wcs = json.loads(self.lab.kubectl("get", "workloadclusters", "-o", "json", capture=True))
        return any(w.get("status", {}).get("conditions") for w in wcs["items"])

    def vips(self):
        """(host:port, wcK/demo/echo) of every workload demo Service's VIPs."""
        vips = []
        for wc, c in self.clusters.items():
            try:
                svc = json.loads(c.kubectl("get", "service", "-n", DEMO_NAMESPACE, DEMO_SERVICE, "-o", "json", capture=True))
            except LabError:
                continue
            vips += ingress_vips(svc, f"{wc}/{DEMO_NAMESPACE}/{DEMO_SERVICE}")
        return vips

    def wait_for_vips(self):
        if not self.clusters:
            return
        if not self.projecting():
            note("the WorkloadClusters have no status: no projection controller runs, so the workload Services "
                 "get no VIP (no vip: lines for them)")
            return
        step("waiting for the workload demo Services' VIPs (written back by the projection)")
        want = 2 * len(self.clusters)
        try:
            wait_until("a VIP of each family in every workload demo Service's status", lambda: len(self.vips()) == want,
                       60, "controller", self.lab.procs, interval=1)
        except LabError as e:
            note(f"{e}; see `kubectl get workloadclusters` and .dev-env/logs/controller.log")
            return
        client = self.topology.netns("client")
        for hostport, name in self.vips():
            try:
                answer = labnet.sh("ip", "netns", "exec", client, "curl", "-gsSf", "--max-time", "2", f"http://{hostport}/")
                note(f"{name} {hostport} answered: {answer.strip()}")
            except labnet.NetError as e:
                note(f"{name} {hostport} does not answer (yet): {e}")

    # what the e2e suites and the user see ---------------------------------------------------

    def description(self, lab_script):
        t = self.topology
        return {wc: {
            "kubeconfig": str(c.kubeconfig),
            "server": c.server,
            "service_cidrs": c.service_cidrs.split(","),
            "nodes": {node: {"address": t.address(node), "address6": t.address6(node), "netns": t.netns(node)}
                      for node in t.workload_nodes(wc)},
            "pod_slots": {pod: {"node": t.node_of(pod), "address": t.pod_address(pod), "address6": t.pod_address6(pod),
                                "netns": t.netns(pod)}
                          for node in t.workload_nodes(wc) for pod in t.pods_of(node)},
            "kubeconfig_secret": kubeconfig_secret(wc),
            "apiserver_stop": [*lab_script, "workload-apiserver", "stop", wc],
            "apiserver_start": [*lab_script, "workload-apiserver", "start", wc],
        } for wc, c in self.clusters.items()}

    def info(self):
        """Lines for the lab's "Try:" section."""
        lines = []
        for wc, c in self.clusters.items():
            node = self.topology.workload_nodes(wc)[0]
            lines += [f"  kubectl --kubeconfig {c.kubeconfig} get svc,endpointslices,pods -n {DEMO_NAMESPACE} -o wide"
                      f"   # workload cluster {wc}",
                      f"  ip netns exec {self.topology.netns(node)} curl -s http://{self.topology.pod_address(node + '-pod1')}/"
                      f"   # {node}-pod1 from its node"]
        if lines:
            lines.append("  kubectl get workloadclusters -o wide; kubectl get svc -A -l maglb.io/workload-cluster")
        return lines
