"""The dev-env's network: namespaces on one machine, wired like a small rack.

    client (10.10.0.2) --- tor (FRR: bgpd + zebra + bfdd, ECMP) --- br0 172.31.0.0/24
                                                              |- rr        .2    (FRR bgpd + bfdd, iBGP;
                                                              |                   also 172.30.0.3)
                                                              |- refl1, refl2 .3, .4 (--bgp-mode=reflector:
                                                              |                   speaker --role=reflector)
                                                              |- lb1..lbN  .11.. (speakers, datapath, kube-proxy)
                                                              |- be1, be2  .21.. (backend agent, kube-proxy)
                                                              |    '- pods 10.244.<host>.<n> (echo servers)
                                                              '- wcK-n1, wcK-n2 .(20+10K+n) (workload cluster
                                                                   wcK's nodes: backend agent, kube-proxy)
                                                                   '- pod slots wcK-nJ-pod1..3

The ToR routes between the client's link and the rack's bridge. With BGP the LB nodes
announce the VIPs (pools in 198.51.100.0/24) to the ToR, which spreads flows over them by
L4 hash, and runs BFD with them (a node that stops answering leaves ECMP within a second,
not a hold time); rr is a second router, in the nodes' own AS and installing nothing, for what only
iBGP carries (local preference) and for peer and node selectors. rr also answers at 172.30.0.3,
the router upstream MetalLB's configuration samples peer with (iBGP, AS 64512), which the LB nodes
reach on the rack's link, so that those samples work unchanged; with layer2 the VIPs are on the rack subnet (172.31.0.192/26) and the elected LB node
answers ARP for them.

With --bgp-mode=reflector the LB nodes peer over iBGP with two route reflectors (refl1, refl2,
`speaker --role=reflector`, hack/labreflector.py) instead of the ToR, and only the reflectors peer
with the ToR, announcing each shard's aggregate with one path per LB node serving it (ADD-PATH,
next hop = the node); the ToR installs them as ECMP routes. Backends hold both VIP ranges on lo (so a VIP any Service gets is
local to them, the DSR arrangement) without answering ARP for them, and send answers
straight back to the client via the ToR.

Nodes look like a real cluster's: each runs kube-proxy (iptables), which takes VIP:port to
the Service's pods, and pods are namespaces behind their node, wired as many CNIs do (a /32
per pod, routed by the node over the pod's veth; the pod's gateway is a link-local address the
node answers by proxy ARP). The ToR routes each node's pod prefix to the node.

Every link is dual-stack: IPv6 addresses carry the IPv4 host numbers (fd00:31::11 for lb1),
and so are the pools and demo Services (layer 2 answers NDP for the IPv6 VIPs, on the rack's
prefix).

Workload clusters (hack/labworkload.py) put their nodes on the same rack: to the LB nodes they are
backends like be1 and be2, with pod slots behind them that their cluster's Pods are bound to.

Everything is created in namespaces named maglb-<role>; nothing is configured in the host's
own network namespace. Pure helpers here (names, addresses, configuration text) do no I/O;
build() and destroy() run `ip`.
"""

import re
import subprocess
from dataclasses import dataclass

NETNS_PREFIX = "maglb-"
LAB_NETNS = re.compile(r"^maglb-(client|tor|rr|refl\d+|lb\d+|be\d+|wc\d+-n\d+)(-pod\d+)?$")
WORKLOAD_NODE = re.compile(r"^wc(\d+)-n(\d+)$")

TOR_ASN = 64500
NODE_ASN = 64512

CLIENT_ADDR = "10.10.0.2"
TOR_CLIENT_ADDR = "10.10.0.1"
TOR_RACK_ADDR = "172.31.0.1"
RR_ADDR = "172.31.0.2"
# The router of upstream MetalLB's configsamples (bgppeer_with_bfdprofile.yaml and others): rr
# holds it too, and the LB nodes reach it directly on the rack (single-hop BGP and BFD).
UPSTREAM_SAMPLE_PEER = "172.30.0.3"
RACK_PREFIX = "172.31.0"
BGP_VIPS = "198.51.100.0/24"
L2_VIPS = "172.31.0.192/26"
# IPv6: every link is dual-stack; with BGP the pools are too (the ToR peers over IPv6 as well).
CLIENT_ADDR6 = "fd00:10::2"
TOR_CLIENT_ADDR6 = "fd00:10::1"
TOR_RACK_ADDR6 = "fd00:31::1"
RACK_PREFIX6 = "fd00:31:"
BGP_VIPS6 = "2001:db8:100::/112"
L2_VIPS6 = "fd00:31::1:0/112"
BACKENDS = ("be1", "be2")
# Pods behind each node: two on each backend node; one on lb1, an LB node that is a backend
# too when a Service's endpoints include that pod.
PODS = {"be1": 2, "be2": 2, "lb1": 1}
# Each workload cluster: two nodes with three pod slots each (Pods of the cluster bound to a
# node take the slot of their name).
WORKLOAD_NODES = 2
WORKLOAD_POD_SLOTS = 3
MAX_WORKLOAD_CLUSTERS = 9  # wc9-n2 is .112 on the rack, below the layer 2 VIPs
POD_GATEWAY = "169.254.1.1"
POD_GATEWAY6 = "fe80::1"

# The demo pools: one per shard, in the VIP range of the protocol. The e2e suites use the
# upper halves of both ranges for pools of their own.
POOLS = {
    "bgp": {"gold": ["198.51.100.0/26", "2001:db8:100::1-2001:db8:100::ff"],
            "silver": ["198.51.100.64/26", "2001:db8:100::101-2001:db8:100::1ff"]},
    "layer2": {"gold": ["172.31.0.192/28", "fd00:31::1:1-fd00:31::1:f"],
               "silver": ["172.31.0.208/28", "fd00:31::1:11-fd00:31::1:1f"]},
}
SHARDS = ("gold", "silver")
HTTP_PORT = 80
CLIENT_MTU = 1500
UDP_PORT = 5000
# The BFD profile of the ToR and of the lab's BGPPeers: upstream's defaults, spelled out.
BFD_PROFILE = "tor-bfd"
BFD_INTERVAL_MS = 300
BFD_DETECT_MULTIPLIER = 3
# How the LB nodes reach the ToR: each peers with it (full-mesh), or through two route reflectors.
BGP_MODES = ("full-mesh", "reflector")
REFLECTORS = ("refl1", "refl2")
# The reflector-mode advertisement to the ToR: each pool's range in one aggregate (a /26 of the
# IPv4 pools; /121 is the widest length upstream accepts for the IPv6 ranges, whose CIDRs go
# down to /121).
AGGREGATION_LENGTH, AGGREGATION_LENGTH6 = 26, 121


class NetError(Exception):
    pass


@dataclass(frozen=True)
class Topology:
    lb_nodes: int
    workload_clusters: int = 0
    bgp_mode: str = "full-mesh"

    @property
    def reflectors(self):
        """The route reflectors between the LB nodes and the ToR (none in full mesh)."""
        return list(REFLECTORS) if self.bgp_mode == "reflector" else []

    @property
    def tor_peers(self):
        """The nodes that peer with the ToR: the reflectors, else every LB node."""
        return self.reflectors or self.lbs

    @property
    def lbs(self):
        return [f"lb{i}" for i in range(1, self.lb_nodes + 1)]

    @property
    def nodes(self):
        return self.lbs + list(BACKENDS)

    @staticmethod
    def netns(role):
        return NETNS_PREFIX + role

    @property
    def wcs(self):
        """The workload clusters' names, wc1..wcK."""
        return [f"wc{k}" for k in range(1, self.workload_clusters + 1)]

    @staticmethod
    def workload_nodes(wc):
        return [f"{wc}-n{j}" for j in range(1, WORKLOAD_NODES + 1)]

    @property
    def rack_nodes(self):
        """Every node on the rack: the LB cluster's, then the workload clusters'."""
        return self.nodes + [node for wc in self.wcs for node in self.workload_nodes(wc)]

    @property
    def all_netns(self):
        return [self.netns(r) for r in ["client", "tor", "rr", *self.reflectors, *self.rack_nodes, *self.all_pods]]

    @property
    def pods(self):
        """The LB cluster's pods, <node>-pod<n>."""
        return [pod for node in self.nodes for pod in self.pods_of(node)]

    @property
    def all_pods(self):
        """The LB cluster's pods and the workload clusters' pod slots."""
        return [pod for node in self.rack_nodes for pod in self.pods_of(node)]

    @staticmethod
    def pods_of(node):
        count = WORKLOAD_POD_SLOTS if WORKLOAD_NODE.match(node) else PODS.get(node, 0)
        return [f"{node}-pod{i}" for i in range(1, count + 1)]

    @staticmethod
    def node_of(pod):
        return pod.rsplit("-pod", 1)[0]

    @staticmethod
    def pod_address(pod):
        """A pod's address: 10.244.<its node's host number>.<n>."""
        node, index = pod.rsplit("-pod", 1)
        return f"10.244.{Topology._host(node)}.{index}"

    @staticmethod
    def pod_address6(pod):
        node, index = pod.rsplit("-pod", 1)
        return f"fd00:244:{Topology._host(node)}::{index}"

    @staticmethod
    def pod_prefixes(node):
        """The prefixes of a node's pods, which the ToR routes to the node."""
        host = Topology._host(node)
        return f"10.244.{host}.0/24", f"fd00:244:{host}::/64"

    @staticmethod
    def address(node):
        """A node's address on the rack: rr .2, reflN .2+N, lbN .10+N, beN .20+N, wcK-nJ .20+10K+J."""
        return f"{RACK_PREFIX}.{Topology._host(node)}"

    @staticmethod
    def address6(node):
        """A node's IPv6 address on the rack, with the same host number as its IPv4 one."""
        return f"{RACK_PREFIX6}:{Topology._host(node)}"

    @staticmethod
    def _host(node):
        if node == "rr":
            return 2
        if node.startswith("refl"):
            return 2 + int(node[4:])
        if m := WORKLOAD_NODE.match(node):
            return 20 + 10 * int(m[1]) + int(m[2])
        kind, index = node[:2], int(node[2:])
        return (10 if kind == "lb" else 20) + index

    def shards(self, lb):
        """The shards an LB node serves: gold on odd nodes, silver on even ones, both when
        there is only one node."""
        if self.lb_nodes == 1:
            return list(SHARDS)
        return [SHARDS[(int(lb[2:]) - 1) % 2]]


def frr_config(topology):
    """bgpd.conf of the ToR: eBGP with every LB node, or in reflector mode with the reflectors
    (one peer group a family), multipath over the LB nodes, each session watched by BFD with the
    lab's profile (bfdd_config). FRR accepts ADD-PATH from every neighbor (it advertises the
    receive capability unasked), which a reflector's one path per LB node needs."""
    neighbors = "".join(f" neighbor {topology.address(peer)} peer-group NODES\n"
                        f" neighbor {topology.address6(peer)} peer-group NODES6\n" for peer in topology.tor_peers)
    return f"""frr defaults traditional
hostname tor
log timestamp precision 3
!
router bgp {TOR_ASN}
 bgp router-id {TOR_RACK_ADDR}
 no bgp default ipv4-unicast
 no bgp ebgp-requires-policy
 no bgp network import-check
 bgp bestpath as-path multipath-relax
 timers bgp 3 9
 neighbor NODES peer-group
 neighbor NODES remote-as {NODE_ASN}
 neighbor NODES timers connect 2
 neighbor NODES bfd profile {BFD_PROFILE}
 neighbor NODES6 peer-group
 neighbor NODES6 remote-as {NODE_ASN}
 neighbor NODES6 timers connect 2
 neighbor NODES6 bfd profile {BFD_PROFILE}
{neighbors} !
 address-family ipv4 unicast
  neighbor NODES activate
  maximum-paths 16
 exit-address-family
 !
 address-family ipv6 unicast
  neighbor NODES6 activate
  maximum-paths 16
 exit-address-family
!
"""


def bfdd_config():
    """bfdd.conf of the ToR: the profile its BGP neighbors name."""
    return f"""hostname tor
!
bfd
 profile {BFD_PROFILE}
  receive-interval {BFD_INTERVAL_MS}
  transmit-interval {BFD_INTERVAL_MS}
  detect-multiplier {BFD_DETECT_MULTIPLIER}
 exit
!
"""


def rr_config(topology):
    """bgpd.conf of rr: iBGP with every LB node, whichever of rr's addresses the node peers with
    (bgpd runs with --no_kernel: it installs nothing); each session watched by BFD with upstream's
    default timers (300 ms x 3), as a router a sample's BFDProfile meets would be."""
    neighbors = "".join(f" neighbor {topology.address(lb)} peer-group NODES\n" for lb in topology.lbs)
    return f"""frr defaults traditional
hostname rr
log timestamp precision 3
!
router bgp {NODE_ASN}
 bgp router-id {RR_ADDR}
 no bgp ebgp-requires-policy
 timers bgp 3 9
 neighbor NODES peer-group
 neighbor NODES remote-as {NODE_ASN}
 neighbor NODES bfd
{neighbors} !
 address-family ipv4 unicast
  maximum-paths ibgp 16
 exit-address-family
!
"""


def lab_manifests(topology, protocol, namespace):
    """The lab's configuration: a pool per shard, the peers (with BFD) and advertisements, and
    two demo Services (gold-web, silver-web in namespace demo) with their EndpointSlices. In
    reflector mode (reflector_manifests) the ToR's BGPPeers select the reflectors' nodes."""
    pools = POOLS[protocol]
    docs = [pool_manifest(shard, namespace, cidrs, avoid_buggy_ips=True, shard=shard) for shard, cidrs in pools.items()]
    if protocol == "bgp":
        docs.append(f"""apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata:
  name: {BFD_PROFILE}
  namespace: {namespace}
spec:
  receiveInterval: {BFD_INTERVAL_MS}
  transmitInterval: {BFD_INTERVAL_MS}
  detectMultiplier: {BFD_DETECT_MULTIPLIER}""")
        if topology.reflectors:
            docs += reflector_manifests(topology, namespace, pools)
        else:
            docs.append(tor_peer_manifest("tor", TOR_RACK_ADDR, namespace))
            docs.append(tor_peer_manifest("tor6", TOR_RACK_ADDR6, namespace))
            docs.append(advertisement_manifest("BGPAdvertisement", "demo", namespace, pools, ["64512:100"]))
    else:
        docs.append(advertisement_manifest("L2Advertisement", "demo", namespace, pools))
    docs.append("""apiVersion: v1
kind: Namespace
metadata:
  name: demo""")
    # gold-web keeps the client's address (ETP=Local) and has a pod on lb1, an LB node of its
    # shard that is a backend too; silver-web lets kube-proxy on the backend node masquerade
    # the client's address (ETP=Cluster).
    for shard, policy, nodes in zip(pools, ("Local", "Cluster"), (("lb1", *BACKENDS), BACKENDS)):
        docs += service_manifests("demo", f"{shard}-web", {"metallb.io/address-pool": shard}, policy, nodes)
    return "\n---\n".join(docs) + "\n"


# The configuration of the lab that starts with upstream MetalLB (lab.py --metallb upstream):
# what upstream's native BGP mode accepts, since its speaker refuses a whole configuration with
# a BFD profile, keepaliveTime, connectTime, enableGracefulRestart or an IPv6 pool a
# BGPAdvertisement selects. Pools: two announced over BGP, one over layer 2 on the rack.
UPGRADE_POOLS = {"gold": ["198.51.100.0/26"], "silver": ["198.51.100.64/26"], "rack": ["172.31.0.192/28"]}
UPGRADE_BGP_POOLS = ("gold", "silver")
UPGRADE_REQUESTED_IP = "198.51.100.70"
UPGRADE_SHARING_KEY = "demo-shared"
# name: (annotations, ports); every one IPv4, externalTrafficPolicy Cluster, over the backends' pods.
UPGRADE_SERVICES = {
    "gold-web": ({"metallb.io/address-pool": "gold"}, None),
    "silver-web": ({"metallb.io/loadBalancerIPs": UPGRADE_REQUESTED_IP}, None),
    "shared-web": ({"metallb.io/address-pool": "silver", "metallb.io/allow-shared-ip": UPGRADE_SHARING_KEY},
                   (("http", HTTP_PORT, "TCP"),)),
    "shared-udp": ({"metallb.io/address-pool": "silver", "metallb.io/allow-shared-ip": UPGRADE_SHARING_KEY},
                   (("udp", UDP_PORT, "UDP"),)),
    "rack-web": ({"metallb.io/address-pool": "rack"}, None),
}


def upgrade_manifests(namespace):
    """The upgrade lab's configuration: pools gold and silver announced to the ToR with a
    community each (gold's by an alias of a Community), pool rack by layer 2, the BGPPeer tor,
    and Services in namespace demo: one per pool, one with a requested IP, two sharing an IP."""
    docs = [pool_manifest(name, namespace, cidrs, avoid_buggy_ips=name == "gold") for name, cidrs in UPGRADE_POOLS.items()]
    docs.append(f"""apiVersion: metallb.io/v1beta1
kind: Community
metadata:
  name: routes
  namespace: {namespace}
spec:
  communities:
  - {{name: gold-routes, value: "{NODE_ASN}:100"}}""")
    for pool, community in zip(UPGRADE_BGP_POOLS, ("gold-routes", f"{NODE_ASN}:200")):
        docs.append(advertisement_manifest("BGPAdvertisement", pool, namespace, [pool], [community]))
    docs.append(advertisement_manifest("L2Advertisement", "rack", namespace, ["rack"]))
    docs.append(tor_peer_manifest("tor", TOR_RACK_ADDR, namespace, upstream_native=True))
    docs.append("""apiVersion: v1
kind: Namespace
metadata:
  name: demo""")
    for name, (annotations, ports) in UPGRADE_SERVICES.items():
        docs += service_manifests("demo", name, annotations, "Cluster", BACKENDS, families=("IPv4",),
                                  **({"ports": ports} if ports else {}))
    return "\n---\n".join(docs) + "\n"


def pool_manifest(name, namespace, cidrs, avoid_buggy_ips, shard=None):
    shard_line = f"\n  shard: {shard}" if shard else ""
    return f"""apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: {name}
  namespace: {namespace}
spec:
  addresses: [{", ".join(f'"{c}"' for c in cidrs)}]
  avoidBuggyIPs: {str(avoid_buggy_ips).lower()}{shard_line}"""


def reflector_manifests(topology, namespace, pools):
    """Reflector mode in upstream's kinds, as configsamples/reflector.yaml has it: the LB nodes'
    BGPPeers with each reflector (iBGP, one a family, selecting the nodes that are no reflector;
    no BFD: the reflectors do not run it with their clients), the ToR's selecting the reflectors'
    nodes (with BFD), the VIPs' host routes to the reflectors and the aggregates to the ToR."""
    not_reflector = "maglb.io/reflector: DoesNotExist"
    docs, to_reflectors = [], []
    for refl in topology.reflectors:
        for name, address in ((refl, topology.address(refl)), (f"{refl}-v6", topology.address6(refl))):
            docs.append(tor_peer_manifest(name, address, namespace, peer_asn=NODE_ASN, bfd=False, selector=not_reflector))
            to_reflectors.append(name)
    docs.append(tor_peer_manifest("tor", TOR_RACK_ADDR, namespace, selector="maglb.io/reflector: Exists"))
    docs.append(tor_peer_manifest("tor6", TOR_RACK_ADDR6, namespace, selector="maglb.io/reflector: Exists"))
    docs.append(advertisement_manifest("BGPAdvertisement", "demo", namespace, pools, ["64512:100"], to_reflectors))
    docs.append(advertisement_manifest("BGPAdvertisement", "demo-aggregated", namespace, pools, ["64512:100"],
                                       ["tor", "tor6"], (AGGREGATION_LENGTH, AGGREGATION_LENGTH6)))
    return docs


def tor_peer_manifest(name, address, namespace, upstream_native=False, peer_asn=TOR_ASN, bfd=True, selector=None):
    """The LB nodes' BGPPeer with the ToR at address (or another peer's, in peer_asn): with the
    lab's keepalive and connect times and (bfd) BFD profile, unless upstream_native (upstream's
    native mode refuses them); selector, "KEY: OPERATOR", restricts it to the nodes it selects."""
    extra = "" if upstream_native else "\n  keepaliveTime: 3s\n  connectTime: 2s" + (f"\n  bfdProfile: {BFD_PROFILE}" if bfd else "")
    if selector:
        key, operator = selector.split(": ")
        extra += f"\n  nodeSelectors:\n  - matchExpressions:\n    - {{key: {key}, operator: {operator}}}"
    return f"""apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata:
  name: {name}
  namespace: {namespace}
spec:
  myASN: {NODE_ASN}
  peerASN: {peer_asn}
  peerAddress: "{address}"
  holdTime: 9s{extra}"""


def advertisement_manifest(kind, name, namespace, pools, communities=(), peers=(), aggregation_lengths=None):
    quoted = ", ".join(f'"{c}"' for c in communities)
    community_line = f"\n  communities: [{quoted}]" if communities else ""
    if peers:
        community_line += f"\n  peers: [{', '.join(peers)}]"
    if aggregation_lengths:
        community_line += "\n  aggregationLength: {}\n  aggregationLengthV6: {}".format(*aggregation_lengths)
    return f"""apiVersion: metallb.io/v1beta1
kind: {kind}
metadata:
  name: {name}
  namespace: {namespace}
spec:
  ipAddressPools: [{", ".join(pools)}]{community_line}"""


def service_manifests(namespace, name, annotations, traffic_policy, nodes, families=("IPv4", "IPv6"),
                      ports=(("http", HTTP_PORT, "TCP"), ("udp", UDP_PORT, "UDP"))):
    """A LoadBalancer Service on ports ((name, port, protocol): by default HTTP_PORT/TCP and
    UDP_PORT/UDP) of families, without a selector, and the EndpointSlices that put the pods of
    nodes behind it (no endpoint controller runs here)."""
    annotation_lines = "".join(f'\n    {k}: "{v}"' for k, v in annotations.items())

    def port_list(indent):
        return "".join(f"\n{indent}- {{name: {n}, port: {port}, protocol: {proto}}}" for n, port, proto in ports)
    policy = "PreferDualStack" if len(families) > 1 else "SingleStack"
    docs = [f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
  annotations:{annotation_lines}
spec:
  type: LoadBalancer
  externalTrafficPolicy: {traffic_policy}
  allocateLoadBalancerNodePorts: false
  ipFamilyPolicy: {policy}
  ipFamilies: [{", ".join(families)}]
  ports:{port_list("  ")}"""]
    addresses = {"IPv4": Topology.pod_address, "IPv6": Topology.pod_address6}
    for family, address in ((f, addresses[f]) for f in families):
        endpoints = "".join(f"""
- addresses: ["{address(pod)}"]
  nodeName: {node}
  targetRef: {{kind: Pod, namespace: {namespace}, name: {pod}}}
  conditions: {{ready: true, serving: true, terminating: false}}""" for node in nodes for pod in Topology.pods_of(node))
        docs.append(f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-lab-{family.lower()}
  namespace: {namespace}
  labels:
    kubernetes.io/service-name: {name}
    endpointslice.kubernetes.io/managed-by: maglb-lab
addressType: {family}
ports:{port_list("")}
endpoints:{endpoints}""")
    return docs


def node_manifests(topology):
    """The Node objects: LB nodes labelled with their shards, backends excluded from load
    balancing (they run no speaker), reflectors labelled maglb.io/reflector (and excluded)."""
    docs = []
    for node in topology.nodes + topology.reflectors:
        labels = {"kubernetes.io/hostname": node, "maglb.io/lab-role": node.rstrip("0123456789")}
        if node in topology.reflectors:
            labels["maglb.io/reflector"] = ""
        if node.startswith("lb"):
            labels.update({f"maglb.io/shard-{s}": "" for s in topology.shards(node)})
        else:
            labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
        label_lines = "".join(f'\n    {k}: "{v}"' for k, v in labels.items())
        docs.append(f"""apiVersion: v1
kind: Node
metadata:
  name: {node}
  labels:{label_lines}""")
    return "\n---\n".join(docs) + "\n"


# ---------------------------------------------------------------------------------------------
# I/O


def sh(*argv, capture=False):
    proc = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise NetError(f"`{' '.join(map(str, argv))}` failed: {proc.stdout.strip()}")
    return proc.stdout


def existing_lab_netns():
    out = sh("ip", "netns", "list")
    return [line.split()[0] for line in out.splitlines() if line.split() and LAB_NETNS.match(line.split()[0])]


def destroy():
    """Deletes every namespace of the lab (veths and XDP links go with them)."""
    gone = existing_lab_netns()
    for ns in gone:
        sh("ip", "netns", "delete", ns)
    return gone


def build(topology):
    """Creates the namespaces, links, addresses, routes and sysctls. Fails if any exists."""
    def ns_sysctl(ns, *settings):
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", *settings)

    for ns in topology.all_netns:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        # No duplicate address detection: addresses are usable at once.
        ns_sysctl(ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")

    tor, client = topology.netns("tor"), topology.netns("client")
    # client <-> tor
    sh("ip", "-n", client, "link", "add", "eth0", "type", "veth", "peer", "name", "client0", "netns", tor)
    sh("ip", "-n", client, "addr", "add", f"{CLIENT_ADDR}/24", "dev", "eth0")
    sh("ip", "-n", client, "addr", "add", f"{CLIENT_ADDR6}/64", "dev", "eth0")
    # The usual MTU: the LB answers "fragmentation needed" / "packet too big" when its outer
    # header would not fit, and the client's path MTU discovery follows.
    sh("ip", "-n", client, "link", "set", "eth0", "mtu", CLIENT_MTU, "up")
    # A veth hands its peer whole TCP segmentation batches (up to 64 KiB in one packet); on a
    # wire every packet is at most the MTU, which is what the load balancer checks against.
    sh("ip", "netns", "exec", client, "ethtool", "-K", "eth0", "tso", "off", "gso", "off")
    sh("ip", "-n", client, "route", "add", "default", "via", TOR_CLIENT_ADDR)
    sh("ip", "-n", client, "-6", "route", "add", "default", "via", TOR_CLIENT_ADDR6)
    sh("ip", "-n", tor, "addr", "add", f"{TOR_CLIENT_ADDR}/24", "dev", "client0")
    sh("ip", "-n", tor, "addr", "add", f"{TOR_CLIENT_ADDR6}/64", "dev", "client0")
    sh("ip", "-n", tor, "link", "set", "client0", "up")
    # The rack: a bridge in the ToR, its address the nodes' gateway.
    sh("ip", "-n", tor, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", tor, "addr", "add", f"{TOR_RACK_ADDR}/24", "dev", "br0")
    sh("ip", "-n", tor, "addr", "add", f"{TOR_RACK_ADDR6}/64", "dev", "br0")
    sh("ip", "-n", tor, "link", "set", "br0", "up")
    ns_sysctl(tor, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.rp_filter=0",
              "net.ipv4.conf.default.rp_filter=0", "net.ipv4.fib_multipath_hash_policy=1",
              "net.ipv6.fib_multipath_hash_policy=1")
    for node in ["rr", *topology.reflectors, *topology.rack_nodes]:
        ns = topology.netns(node)
        port = f"p-{node}"
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", tor)
        sh("ip", "-n", tor, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{topology.address(node)}/24", "dev", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"{topology.address6(node)}/64", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        add_uplink_routes(topology, node)
        if node == "rr":
            sh("ip", "-n", ns, "addr", "add", f"{UPSTREAM_SAMPLE_PEER}/32", "dev", "eth0")
        if node == "rr" or node in topology.reflectors:
            continue
        # Every node forwards, to its pods and back.
        ns_sysctl(ns, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.rp_filter=0",
                  "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0")
        for prefix, via in zip(topology.pod_prefixes(node), (topology.address(node), topology.address6(node))):
            if topology.pods_of(node):
                sh("ip", "-n", tor, "route", "add", prefix, "via", via)
        for pod in topology.pods_of(node):
            build_pod(ns, pod, topology)
        if not node.startswith("lb"):
            # Every VIP is local to the backend nodes, as direct server return has it: kube-proxy
            # takes VIP:port to a pod before routing, and the kernel answers anything else sent
            # to a VIP itself (a reset, port unreachable) instead of routing it back to the ToR.
            for vips in (BGP_VIPS, L2_VIPS, BGP_VIPS6, L2_VIPS6):
                sh("ip", "-n", ns, "route", "add", "local", vips, "dev", "lo")
            ns_sysctl(ns, "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
                      "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                      "net.ipv4.conf.eth0.rp_filter=0")


def build_pod(node_ns, pod, topology):
    """A pod behind its node: a veth whose node end has no address of its own (the node routes
    the pod's /32 and /128 over it and answers the pod's gateway by proxy ARP), as many CNIs
    wire pods."""
    ns, veth = Topology.netns(pod), "v" + pod.rsplit("-", 1)[1]
    addr, addr6 = topology.pod_address(pod), topology.pod_address6(pod)
    sh("ip", "-n", node_ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "netns", "exec", node_ns, "sysctl", "-qw", f"net.ipv4.conf.{veth}.proxy_arp=1",
       f"net.ipv4.conf.{veth}.rp_filter=0")
    sh("ip", "-n", node_ns, "addr", "add", f"{POD_GATEWAY6}/64", "dev", veth)
    sh("ip", "-n", node_ns, "link", "set", veth, "up")
    sh("ip", "-n", node_ns, "route", "add", f"{addr}/32", "dev", veth)
    sh("ip", "-n", node_ns, "-6", "route", "add", f"{addr6}/128", "dev", veth)
    sh("ip", "-n", ns, "addr", "add", f"{addr}/32", "dev", "eth0")
    sh("ip", "-n", ns, "addr", "add", f"{addr6}/128", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "route", "add", POD_GATEWAY, "dev", "eth0", "scope", "link")
    sh("ip", "-n", ns, "route", "add", "default", "via", POD_GATEWAY, "dev", "eth0")
    sh("ip", "-n", ns, "-6", "route", "add", "default", "via", POD_GATEWAY6, "dev", "eth0")


def uplink_down(topology, node):
    """Cuts a node off the rack as a failed NIC or cable would: its eth0 down, without a word
    to its peers. The kernel drops the link's routes and IPv6 addresses with it."""
    sh("ip", "-n", topology.netns(node), "link", "set", "eth0", "down")


def uplink_up(topology, node):
    """Brings a node's eth0 back with what uplink_down lost: its addresses and routes."""
    ns = topology.netns(node)
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "addr", "replace", f"{topology.address(node)}/24", "dev", "eth0")
    sh("ip", "-n", ns, "addr", "replace", f"{topology.address6(node)}/64", "dev", "eth0")
    add_uplink_routes(topology, node)


def add_uplink_routes(topology, node):
    """The routes over a node's eth0, which the kernel drops with the link: the default routes
    via the ToR and, on an LB node, the direct one to upstream's sample router."""
    ns = topology.netns(node)
    sh("ip", "-n", ns, "-4", "route", "replace", "default", "via", TOR_RACK_ADDR)
    sh("ip", "-n", ns, "-6", "route", "replace", "default", "via", TOR_RACK_ADDR6)
    if node.startswith("lb"):
        sh("ip", "-n", ns, "-4", "route", "replace", f"{UPSTREAM_SAMPLE_PEER}/32", "dev", "eth0", "src",
           topology.address(node))
