//go:build e2e

// SPDX-License-Identifier: Apache-2.0

// Package e2etest holds MagLB's end-to-end suites, in upstream MetalLB's style: they drive a
// running installation through its API, and check the result where a network engineer
// would: at the routers, and with traffic from a client.
//
//	python3 tasks.py e2etest                       # against the dev-env lab, brought up as needed
//	go test -tags e2e ./e2etest/ -args --lab .dev-env/lab.json --ginkgo.label-filter=bgp
//
// What the suites need to know about the environment comes from --lab, a JSON description
// the dev-env writes (.dev-env/lab.json). For another cluster, write one with the same fields:
// the routers and the command that runs vtysh in each (upstream's "exec in the FRR
// container"), the LB nodes and their metrics URLs, the backend nodes and the pods behind them
// that run the echo servers (labagent pod), the commands that take an LB node out of
// service and back, gracefully and hard, and in route-reflector mode the reflectors and the
// commands that kill and restart one.
// --kubeconfig, --router-exec and --client-netns override what the description says.
package e2etest

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/maglb/maglb/internal/k8s"
)

var (
	labFile     = flag.String("lab", filepath.Join("..", ".dev-env", "lab.json"), "the description of the environment (the dev-env writes .dev-env/lab.json)")
	routerExec  = flag.String("router-exec", "", "the command that runs vtysh in the ToR, e.g. \"docker exec frr vtysh\" (default: the description's)")
	clientNetns = flag.String("client-netns", "", "the network namespace client traffic starts from (default: the description's; \"-\": this process's own)")
	reportDir   = flag.String("report-dir", "", "a directory the datapath specs write their figures to, as JSON")
	namespace   = flag.String("namespace", "", "the namespace of MagLB and its metallb.io objects (default: the description's, else metallb-system)")

	// The cluster comes from --kubeconfig or KUBECONFIG (flags controller-runtime registers),
	// else from the description.
	cs  client.Client
	env environment
)

// environment is the description --lab names.
type environment struct {
	Datapath          string              `json:"datapath"` // ebpf or kubeproxy
	Encap             string              `json:"encap"`    // ipip or gue: how the ebpf datapath reaches backends
	ClientMTU         int                 `json:"client_mtu"`
	Protocol          string              `json:"protocol"` // bgp or layer2
	Kubeconfig        string              `json:"kubeconfig"`
	Namespace         string              `json:"namespace"`
	ClientNetns       string              `json:"client_netns"`
	ClientAddress     string              `json:"client_address"`
	ClientAddress6    string              `json:"client_address6"`
	Routers           map[string]router   `json:"routers"`
	NodeASN           uint32              `json:"node_asn"`
	LBNodes           map[string]lbNode   `json:"lb_nodes"`
	Backends          map[string]backend  `json:"backends"`
	Pods              map[string]pod      `json:"pods"` // the echo servers behind the nodes, when not on them
	ControllerMetrics string              `json:"controller_metrics"`
	Pools             map[string][]string `json:"pools"`
	VIPRange          string              `json:"vip_range"`
	VIPRange6         string              `json:"vip_range6"` // none: no IPv6 VIPs here
	HTTPPort          int32               `json:"http_port"`
	UDPPort           int32               `json:"udp_port"`
	NodeDown          []string            `json:"node_down"`
	NodeUp            []string            `json:"node_up"`
	// NodeUplinkDown cuts an LB node off the network (a hard failure: nothing leaves
	// gracefully); NodeUplinkUp reconnects it.
	NodeUplinkDown []string `json:"node_uplink_down"`
	NodeUplinkUp   []string `json:"node_uplink_up"`
	// WorkloadClusters are the clusters whose Services are projected into this (the LB) one,
	// by the name of their WorkloadCluster; KubeconfigSecretNamespace holds their kubeconfigs.
	WorkloadClusters          map[string]workloadCluster `json:"workload_clusters"`
	KubeconfigSecretNamespace string                     `json:"kubeconfig_secret_namespace"`
	// MetalLB is what the environment starts with: "maglb", or "upstream" (MetalLB's own
	// release, UpstreamMetalLB). SwapToMagLB and SwapToUpstream replace one with the other as a
	// user upgrades and goes back: CRDs applied over the old ones, controller, then speakers.
	MetalLB         string `json:"metallb"`
	UpstreamMetalLB struct {
		Version string `json:"version"`
	} `json:"upstream_metallb"`
	SwapToMagLB    []string `json:"swap_to_maglb"`
	SwapToUpstream []string `json:"swap_to_upstream"`
	// BGPMode is how the LB nodes reach the ToR: "full-mesh" (or empty), each peers with it,
	// or "reflector": through Reflectors, which ReflectorStop kills (a crash) and
	// ReflectorStart starts again, the reflector's name appended.
	BGPMode        string                   `json:"bgp_mode"`
	Reflectors     map[string]reflectorNode `json:"reflectors"`
	ReflectorStop  []string                 `json:"reflector_stop"`
	ReflectorStart []string                 `json:"reflector_start"`
	// Chaos are the commands of the chaos suite's faults.
	Chaos chaosCommands `json:"chaos"`
}

// reflectorNode is a route reflector (speaker --role=reflector) between the LB nodes and the ToR.
type reflectorNode struct {
	Address  string `json:"address"`
	Address6 string `json:"address6"`
	Metrics  string `json:"metrics"`
}

type router struct {
	Exec []string `json:"exec"`
	// KernelRoutes prints the router's kernel route to an address appended, as
	// `ip -j route show ADDRESS` does.
	KernelRoutes []string `json:"kernel_routes"`
	Address      string   `json:"address"`
	Address6     string   `json:"address6"`
	ASN          uint32   `json:"asn"`
	// UpstreamSampleAddress is where the router also answers as the peer of upstream MetalLB's
	// configuration samples (172.30.0.3, AS 64512), so that they apply unchanged.
	UpstreamSampleAddress string `json:"upstream_sample_address"`
}

type lbNode struct {
	Address  string   `json:"address"`
	Address6 string   `json:"address6"`
	Shards   []string `json:"shards"`
	Metrics  string   `json:"metrics"`
}

type backend struct {
	Address  string `json:"address"`
	Address6 string `json:"address6"`
}

type pod struct {
	Node     string `json:"node"`
	Address  string `json:"address"`
	Address6 string `json:"address6"`
}

// workloadCluster is a cluster behind the LB cluster: its nodes (kube-proxy and the backend
// agent on each), the pod slots on them (a Pod named after a free slot becomes Ready there and
// runs the echo server) and the commands that stop and start its API server.
type workloadCluster struct {
	Kubeconfig     string             `json:"kubeconfig"`
	Nodes          map[string]backend `json:"nodes"`
	PodSlots       map[string]pod     `json:"pod_slots"`
	APIServerStop  []string           `json:"apiserver_stop"`
	APIServerStart []string           `json:"apiserver_start"`
}

func TestE2E(t *testing.T) {
	// The suite's clients log nothing; without a logger controller-runtime prints a warning
	// with a stack trace the first time one would.
	ctrl.SetLogger(logr.Discard())
	RegisterFailHandler(Fail)
	RunSpecs(t, "MagLB e2e")
}

var _ = BeforeSuite(func() {
	// Convergence through a real API server, routers and kernels, not a timing requirement.
	SetDefaultEventuallyTimeout(60 * time.Second)
	SetDefaultEventuallyPollingInterval(250 * time.Millisecond)

	data, err := os.ReadFile(*labFile)
	Expect(err).NotTo(HaveOccurred(), "the environment's description (--lab); `python3 tasks.py dev-env` writes one")
	Expect(json.Unmarshal(data, &env)).To(Succeed(), *labFile)
	if *routerExec != "" {
		tor := env.Routers["tor"]
		tor.Exec = strings.Fields(*routerExec)
		env.Routers["tor"] = tor
	}
	switch *clientNetns {
	case "":
	case "-":
		env.ClientNetns = ""
	default:
		env.ClientNetns = *clientNetns
	}
	if *namespace != "" {
		env.Namespace = *namespace
	}
	if env.Namespace == "" {
		env.Namespace = "metallb-system"
	}
	if f := flag.Lookup("kubeconfig"); f != nil && f.Value.String() == "" && os.Getenv("KUBECONFIG") == "" {
		Expect(os.Setenv("KUBECONFIG", env.Kubeconfig)).To(Succeed())
	}
	cfg, err := ctrl.GetConfig()
	Expect(err).NotTo(HaveOccurred(), "set --kubeconfig, KUBECONFIG or the description's kubeconfig")
	cs, err = client.New(cfg, client.Options{Scheme: k8s.NewScheme()})
	Expect(err).NotTo(HaveOccurred())
})

// requireProtocol skips a spec written for another announcement protocol than the
// environment's; "bgp" is BGP with every LB node peering with the ToR (full mesh).
func requireProtocol(protocol string) {
	if env.Protocol != protocol {
		Skip("needs the " + protocol + " protocol; the environment runs " + env.Protocol)
	}
	if protocol == "bgp" && env.BGPMode == "reflector" {
		Skip("needs the LB nodes peering with the ToR; the environment's peer with route reflectors")
	}
}

// requireReflectors skips a spec written for the route-reflector mode when the LB nodes
// peer with the ToR themselves.
func requireReflectors() {
	if env.Protocol != "bgp" || env.BGPMode != "reflector" {
		Skip("needs the LB nodes peering with route reflectors; the environment runs " + env.Protocol + " in full mesh")
	}
}

// requireDatapath skips a spec written for another datapath than the environment's.
func requireDatapath(datapath string) {
	if env.Datapath != datapath {
		Skip("needs the " + datapath + " datapath; the environment runs " + env.Datapath)
	}
}
