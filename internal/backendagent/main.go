// SPDX-License-Identifier: Apache-2.0

package backendagent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/maglb/maglb/datapath/ebpf"
	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/logging"
)

// Role is the value of the speaker's --role that runs the backend agent.
const Role = "backend-agent"

// DefaultPort serves /metrics and /healthz; it differs from the speaker's 7472 and 7473, as
// both run on the host network of the same nodes.
const DefaultPort = 7476

// RoleOf returns the speaker's --role in args (a command line without the program name):
// "" when absent, Role for the backend agent.
func RoleOf(args []string) string {
	for i, arg := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if !strings.HasPrefix(arg, "-") || name != "role" {
			continue
		}
		if !hasValue && i+1 < len(args) {
			value = args[i+1]
		}
		return value
	}
	return ""
}

type options struct {
	kubeconfig     string
	logLevel       string
	host           string
	port           int
	interfaces     string
	decapHook      string
	xdpMode        string
	gueport        uint
	pinPath        string
	keep           bool
	tunnelSources  []string
	lbNodeSelector string
	watchNodes     bool
}

// Main runs the backend agent with the command line args and exits when it ends.
func Main(args []string) {
	var o options
	fs := flag.NewFlagSet("speaker --role="+Role, flag.ExitOnError)
	fs.String("role", Role, "speaker (the default) or backend-agent")
	fs.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the LB cluster, to read its Nodes; empty: the in-cluster service account")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: all, debug, info, warn, error or none")
	k8s.BindHost(fs, &o.host)
	fs.IntVar(&o.port, "port", DefaultPort, "HTTP port of /metrics and /healthz; 0 disables them")
	fs.StringVar(&o.interfaces, "backend-interfaces", "", "comma-separated interfaces the decapsulation program attaches to; empty: the interfaces of the default routes (IPv4 and IPv6)")
	fs.StringVar(&o.decapHook, "decap-hook", string(ebpf.DecapAuto), "where the decapsulation program attaches: xdp, tcx (TC ingress, behind the interface's XDP program), or auto: tcx on a load balancer node (its address is an LB node's InternalIP) and on an interface where another XDP program (the speaker's load balancer) is attached, xdp elsewhere")
	fs.StringVar(&o.xdpMode, "xdp-mode", string(ebpf.XDPNative), "how the XDP program attaches: native, or generic where the driver has no XDP support")
	fs.UintVar(&o.gueport, "gue-port", ebpf.DefaultGUEPort, "UDP port of GUE encapsulation; the same as the speakers'")
	fs.StringVar(&o.pinPath, "datapath-pin-path", ebpf.DefaultPinPath, "the bpffs directory where the program's maps and links are pinned")
	fs.BoolVar(&o.keep, "keep-datapath-on-exit", true, "leave the program attached and its maps pinned when the agent exits, so decapsulation continues across a restart")
	fs.Func("tunnel-sources", "CIDRs tunnelled packets may come from, comma-separated or repeated (the speakers' --tunnel-source-cidr, or LB nodes this cluster cannot see)", func(v string) error {
		o.tunnelSources = append(o.tunnelSources, v)
		return nil
	})
	fs.StringVar(&o.lbNodeSelector, "lb-node-selector", "", "label selector of this cluster's Nodes that are load balancers, whose InternalIPs are allowed tunnel sources; empty: every Node. Nodes are watched when this is set or --tunnel-sources is not")
	_ = fs.Parse(args)
	o.watchNodes = len(o.tunnelSources) == 0
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "lb-node-selector" {
			o.watchNodes = true
		}
	})
	logging.Main(o.logLevel, func(logger log.Logger) error {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return run(ctx, o, logger)
	})
}

func run(ctx context.Context, o options, logger log.Logger) error {
	mode := ebpf.XDPMode(o.xdpMode)
	if mode != ebpf.XDPNative && mode != ebpf.XDPGeneric {
		return fmt.Errorf("--xdp-mode %q is not one of native, generic", o.xdpMode)
	}
	hook := ebpf.DecapHook(o.decapHook)
	if hook != ebpf.DecapAuto && hook != ebpf.DecapXDP && hook != ebpf.DecapTCX {
		return fmt.Errorf("--decap-hook %q is not one of auto, xdp, tcx", o.decapHook)
	}
	if err := k8s.CheckPort("port", o.port, true); err != nil {
		return err
	}
	if err := k8s.CheckHost(o.host); err != nil {
		return err
	}
	if err := k8s.CheckPort("gue-port", int(min(o.gueport, 1<<20)), false); err != nil {
		return err
	}
	if !filepath.IsAbs(o.pinPath) {
		return fmt.Errorf("--datapath-pin-path %q is not an absolute path", o.pinPath)
	}
	selector, err := labels.Parse(o.lbNodeSelector)
	if err != nil {
		return fmt.Errorf("--lb-node-selector %q: %w", o.lbNodeSelector, err)
	}
	var sources []netip.Prefix
	for _, value := range o.tunnelSources {
		for _, field := range strings.Split(value, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(field))
			if err != nil {
				return fmt.Errorf("--tunnel-sources %q: %w", value, err)
			}
			sources = append(sources, p)
		}
	}
	cfg := Config{
		DecapHook: hook, XDPMode: mode, GUEPort: uint16(o.gueport), PinPath: o.pinPath, KeepOnExit: o.keep,
		TunnelSources: sources, Logger: logger,
	}
	if o.interfaces != "" {
		for _, name := range strings.Split(o.interfaces, ",") {
			if name = strings.TrimSpace(name); !ebpf.ValidInterfaceName(name) {
				return fmt.Errorf("--backend-interfaces %q: %q is not an interface name", o.interfaces, name)
			}
			cfg.Interfaces = append(cfg.Interfaces, name)
		}
	}
	level.Info(logger).Log("op", "startup", "msg", "MagLB backend agent starting", "watchNodes", o.watchNodes, "lbNodeSelector", o.lbNodeSelector)

	if o.watchNodes {
		restConfig, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
		if err != nil {
			return fmt.Errorf("--kubeconfig (KUBECONFIG) %s: %w", o.kubeconfig, err)
		}
		changes := make(chan struct{}, 1)
		cfg.NodesChanged = changes
		if cfg.LBNodes, err = WatchNodes(ctx, restConfig, selector, changes); err != nil {
			return err
		}
	}
	agent, err := New(cfg)
	if err != nil {
		return err
	}
	if o.port != 0 {
		stopServing, err := serve(ctx, net.JoinHostPort(o.host, strconv.Itoa(o.port)), agent, logger)
		if err != nil {
			_ = agent.decap.Close()
			return err
		}
		defer stopServing()
	}
	return agent.Run(ctx)
}

// serve answers /metrics and /healthz on address.
func serve(ctx context.Context, address string, agent *Agent, logger log.Logger) (stop func(), err error) {
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), NewCollector(agent.Stats), agent.PinMetrics())
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := agent.Healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	l, err := net.Listen("tcp", address)
	if err != nil {
		return nil, err
	}
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		if err := server.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			level.Error(logger).Log("op", "metrics", "error", err)
		}
	}()
	return func() { _ = server.Close() }, nil
}
