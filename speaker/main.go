// SPDX-License-Identifier: Apache-2.0

// Command speaker is MagLB's per-node agent. It announces the VIPs its node serves (BGP with
// an embedded BGP speaker, ARP/NDP), programs them into the node's datapath, and reports the
// configuration it runs in the node's "speaker-<node>" ConfigurationState. Flags and
// environment follow upstream MetalLB's speaker. With --role=backend-agent it is instead the
// agent that decapsulates the load balancers' tunnelled traffic on backend nodes, with
// --role=reflector the route reflector between the LB nodes and the ToRs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/datapath/ebpf"
	"github.com/maglb/maglb/datapath/kubeproxy"
	"github.com/maglb/maglb/internal/announce"
	"github.com/maglb/maglb/internal/backendagent"
	"github.com/maglb/maglb/internal/bgp"
	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/k8s/configstate"
	"github.com/maglb/maglb/internal/k8s/speakercontroller"
	"github.com/maglb/maglb/internal/layer2"
	"github.com/maglb/maglb/internal/logging"
	"github.com/maglb/maglb/internal/reflector"
	"github.com/maglb/maglb/internal/upstreamflags"
)

type options struct {
	k8s.Options
	nodeName string
	role     string
	// bgpType is METALLB_BGP_TYPE; "native", the default, is MagLB's embedded BGP.
	bgpType           string
	loadBalancerClass string
	ignoreExcludeLB   bool
	datapath          string
	xdpMode           string
	iface             string
	encap             string
	gueport           uint
	keepDatapath      bool
	pinPath           string
	tunnelSources     []string
	maxServices       int
}

func main() {
	switch backendagent.RoleOf(os.Args[1:]) {
	case backendagent.Role:
		backendagent.Main(os.Args[1:])
		return
	case reflector.Role:
		reflector.Main(os.Args[1:])
		return
	}
	o := bindFlags(flag.CommandLine)
	flag.Parse()
	o.bgpType = os.Getenv("METALLB_BGP_TYPE")

	logging.Main(o.LogLevel, func(logger log.Logger) error {
		if err := o.validate(); err != nil {
			return err
		}
		return run(ctrl.SetupSignalHandler(), ctrl.GetConfigOrDie(), *o, logger)
	})
}

// validate refuses bad flag values before anything starts, the datapath's whichever
// datapath is chosen, so that switching to it later does not reveal them.
func (o *options) validate() error {
	if err := o.Options.Validate(); err != nil {
		return err
	}
	if o.role != "speaker" {
		return fmt.Errorf("--role %q is not one of speaker, %s, %s", o.role, backendagent.Role, reflector.Role)
	}
	if err := k8s.CheckNodeName(o.nodeName); err != nil {
		return err
	}
	if err := k8s.CheckLBClass(o.loadBalancerClass); err != nil {
		return err
	}
	if o.datapath != "kubeproxy" && o.datapath != "ebpf" {
		return fmt.Errorf("--datapath %q is not one of kubeproxy, ebpf", o.datapath)
	}
	if o.datapath == "ebpf" && o.iface == "" {
		return errors.New("--datapath=ebpf needs --datapath-interface, the uplink to attach the XDP program to")
	}
	if mode := ebpf.XDPMode(o.xdpMode); mode != ebpf.XDPNative && mode != ebpf.XDPGeneric {
		return fmt.Errorf("--xdp-mode %q is not one of native, generic", o.xdpMode)
	}
	if o.encap != "ipip" && o.encap != "gue" {
		return fmt.Errorf("--datapath-encap %q is not one of ipip, gue", o.encap)
	}
	if o.iface != "" && !ebpf.ValidInterfaceName(o.iface) {
		return fmt.Errorf("--datapath-interface %q is not an interface name", o.iface)
	}
	if err := k8s.CheckPort("gue-port", int(min(o.gueport, 1<<20)), false); err != nil {
		return err
	}
	if o.maxServices < 1 {
		return fmt.Errorf("--datapath-max-services %d: at least 1", o.maxServices)
	}
	if !filepath.IsAbs(o.pinPath) {
		return fmt.Errorf("--datapath-pin-path %q is not an absolute path", o.pinPath)
	}
	if _, _, err := ebpf.ParseTunnelSources(o.tunnelSources); err != nil {
		return fmt.Errorf("--tunnel-source-cidr %s: %w", strings.Join(o.tunnelSources, ","), err)
	}
	switch o.bgpType {
	case "", "native":
	case "frr", "frr-k8s":
		return fmt.Errorf("METALLB_BGP_TYPE=%s is not supported: MagLB speaks BGP with its embedded implementation; unset METALLB_BGP_TYPE or set it to native", o.bgpType)
	default:
		return fmt.Errorf("METALLB_BGP_TYPE=%q is not one of native, frr, frr-k8s", o.bgpType)
	}
	return nil
}

// bindFlags registers the speaker's flags, upstream's included, on fs.
func bindFlags(fs *flag.FlagSet) *options {
	var o options
	o.Options.Bind(fs, 7472)
	o.Upstream.Bind(fs, upstreamflags.Speaker)
	k8s.BindHost(fs, &o.BindHost)
	fs.StringVar(&o.nodeName, "node-name", os.Getenv("METALLB_NODE_NAME"), "name of the node this speaker runs on")
	fs.StringVar(&o.loadBalancerClass, "lb-class", "", "load balancer class: when set, only Services of this spec.loadBalancerClass are announced")
	fs.BoolVar(&o.ignoreExcludeLB, "ignore-exclude-lb", false, "ignore the node.kubernetes.io/exclude-from-external-load-balancers label")
	fs.StringVar(&o.datapath, "datapath", "kubeproxy", "kubeproxy: announce only, kube-proxy forwards (upstream behaviour); ebpf: the XDP Maglev load balancer forwards to the backends")
	fs.StringVar(&o.xdpMode, "xdp-mode", "native", "how the XDP program attaches (ebpf datapath): native, or generic where the driver has no XDP support")
	fs.StringVar(&o.iface, "datapath-interface", "", "the uplink the XDP program attaches to (ebpf datapath)")
	fs.StringVar(&o.encap, "datapath-encap", "ipip", "encapsulation towards the backends (ebpf datapath): ipip or gue")
	fs.UintVar(&o.gueport, "gue-port", 6080, "UDP port of GUE encapsulation (ebpf datapath)")
	fs.BoolVar(&o.keepDatapath, "keep-datapath-on-exit", true, "leave the XDP program attached and its maps pinned when the speaker exits, so forwarding continues across a restart")
	fs.StringVar(&o.pinPath, "datapath-pin-path", ebpf.DefaultPinPath, "the bpffs directory where the eBPF datapath pins its maps and link (ebpf datapath)")
	fs.IntVar(&o.maxServices, "datapath-max-services", ebpf.DefaultMaxServices, "how many (VIP, protocol, port) services the datapath can program (ebpf datapath); past it a service is withdrawn from this node with a DatapathFailed event; pinned maps of another size are recreated at start")
	fs.StringVar(&o.role, "role", "speaker", "speaker, backend-agent for backend nodes (see speaker --role=backend-agent --help), or reflector (see speaker --role=reflector --help)")
	fs.Func("tunnel-source-cidr", "per-flow outer source prefix of tunnelled packets, one per family, comma-separated or repeated (ebpf datapath); default: the node's address on --datapath-interface", func(v string) error {
		o.tunnelSources = append(o.tunnelSources, v)
		return nil
	})
	return &o
}

func run(ctx context.Context, restConfig *rest.Config, o options, logger log.Logger) error {
	if o.nodeName == "" {
		return errors.New("the node name is missing: set --node-name or METALLB_NODE_NAME")
	}
	if o.bgpType == "" {
		o.bgpType = "native"
	}
	mode, dp, encap, err := newDatapath(o, logger)
	if err != nil {
		return err
	}
	defer dp.Close()
	level.Info(logger).Log("op", "startup", "msg", "MagLB speaker starting", "node", o.nodeName, "namespace", o.Namespace, "datapath", o.datapath)
	o.Upstream.LogIgnored(logger)

	mgrOptions := o.ManagerOptions()
	// Only the speakers' leases matter, and RBAC grants them in the namespace only.
	mgrOptions.Cache.ByObject[&coordinationv1.Lease{}] = cache.ByObject{Namespaces: map[string]cache.Config{o.Namespace: {}}}
	maps.Copy(mgrOptions.Cache.ByObject, speakercontroller.StatusCache(o.Namespace, o.nodeName))
	mgr, err := k8s.NewManager(restConfig, mgrOptions)
	if err != nil {
		return err
	}
	bgpSpeaker, err := newBGP(logger)
	if err != nil {
		return err
	}
	defer bgpSpeaker.close()
	l2 := layer2.New(logger, o.Upstream.GratuitousARPInterval)
	defer l2.Close()

	recorder, err := k8s.NewEventRecorder(mgr, "metallb-speaker", logger)
	if err != nil {
		return err
	}
	speaker := &speakercontroller.Reconciler{
		Client:          mgr.GetClient(),
		Recorder:        recorder,
		Namespace:       o.Namespace,
		NodeName:        o.nodeName,
		LBClass:         o.loadBalancerClass,
		BGP:             bgpSpeaker,
		L2:              l2,
		Datapath:        dp,
		Mode:            mode,
		Encap:           encap,
		IgnoreExcludeLB: o.ignoreExcludeLB,
		Logger:          logger,
	}
	if err := speaker.SetupWithManager(mgr); err != nil {
		return err
	}
	configs := &configstate.Reconciler{
		Client:      mgr.GetClient(),
		Namespace:   o.Namespace,
		NodeName:    o.nodeName,
		Validate:    config.ValidationFor(o.bgpType),
		StateName:   "speaker-" + o.nodeName,
		StateLabels: configstate.NewStateLabels("speaker", o.nodeName),
		Apply:       speaker.SetConfig,
		Ignored:     bgp.Ignored,
		Logger:      logger,
	}
	if err := configs.SetupWithManager(mgr); err != nil {
		return err
	}
	if stats, ok := dp.(datapath.StatsReader); ok {
		if err := registerDatapathMetrics(stats); err != nil {
			return err
		}
	}
	if pinned, ok := dp.(*ebpf.Datapath); ok {
		if err := guardPins(ctx, pinned, logger); err != nil {
			return err
		}
	}
	return mgr.Start(ctx)
}

// newDatapath returns the datapath of --datapath, the options validated.
func newDatapath(o options, logger log.Logger) (announce.DatapathMode, datapath.Datapath, datapath.Encap, error) {
	encap := datapath.EncapIPIP
	if o.encap == "gue" {
		encap = datapath.EncapGUE
	}
	switch o.datapath {
	case "kubeproxy":
		return announce.KubeProxy, kubeproxy.Datapath{}, encap, nil
	case "ebpf":
		mode := ebpf.XDPMode(o.xdpMode)
		source4, source6, err := ebpf.ParseTunnelSources(o.tunnelSources)
		if err != nil {
			return 0, nil, 0, fmt.Errorf("--tunnel-source-cidr: %w", err)
		}
		dp, err := ebpf.New(ebpf.Options{
			Interface:     o.iface,
			TunnelSource4: source4,
			TunnelSource6: source6,
			XDPMode:       mode,
			GUEPort:       uint16(o.gueport),
			KeepOnClose:   o.keepDatapath,
			PinPath:       o.pinPath,
			MaxServices:   o.maxServices,
			Logger:        logger,
		})
		if err != nil {
			return 0, nil, 0, fmt.Errorf("starting the eBPF datapath on %s: %w", o.iface, err)
		}
		return announce.EBPF, dp, encap, nil
	}
	return 0, nil, 0, fmt.Errorf("--datapath %q is not one of kubeproxy, ebpf", o.datapath)
}
