// SPDX-License-Identifier: Apache-2.0

// Command speaker is MagLB's per-node agent. It turns the metallb.io objects that concern its
// node into the configuration in effect and reports it in the node's "speaker-<node>"
// ConfigurationState. Flags and environment follow upstream MetalLB's speaker.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/maglb/maglb/internal/config"
	"github.com/maglb/maglb/internal/k8s"
	"github.com/maglb/maglb/internal/k8s/configstate"
	"github.com/maglb/maglb/internal/logging"
)

type options struct {
	k8s.Options
	nodeName string
	// bgpType is METALLB_BGP_TYPE; "native", the default, is MagLB's embedded BGP.
	bgpType string
}

func main() {
	var o options
	o.Options.Bind(flag.CommandLine, 7472)
	flag.StringVar(&o.nodeName, "node-name", os.Getenv("METALLB_NODE_NAME"), "name of the node this speaker runs on")
	flag.Parse()
	o.bgpType = os.Getenv("METALLB_BGP_TYPE")

	logger, err := logging.New(o.LogLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := run(ctrl.SetupSignalHandler(), o, logger); err != nil {
		level.Error(logger).Log("op", "startup", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, logger log.Logger) error {
	if o.nodeName == "" {
		return fmt.Errorf("the node name is missing: set --node-name or METALLB_NODE_NAME")
	}
	switch o.bgpType {
	case "", "native":
		o.bgpType = "native"
	case "frr", "frr-k8s":
		return fmt.Errorf("METALLB_BGP_TYPE=%s is not supported: MagLB speaks BGP with its embedded implementation; unset METALLB_BGP_TYPE or set it to native", o.bgpType)
	default:
		return fmt.Errorf("METALLB_BGP_TYPE=%q is not one of native, frr, frr-k8s", o.bgpType)
	}
	level.Info(logger).Log("op", "startup", "msg", "MagLB speaker starting", "node", o.nodeName, "namespace", o.Namespace)

	mgr, err := k8s.NewManager(ctrl.GetConfigOrDie(), o.ManagerOptions())
	if err != nil {
		return err
	}
	reconciler := &configstate.Reconciler{
		Client:      mgr.GetClient(),
		Namespace:   o.Namespace,
		NodeName:    o.nodeName,
		Validate:    config.ValidationFor(o.bgpType),
		StateName:   "speaker-" + o.nodeName,
		StateLabels: configstate.NewStateLabels("speaker", o.nodeName),
		Apply: func(cfg *config.Config) {
			level.Info(logger).Log("op", "setConfig", "msg", "configuration in effect", "pools", len(cfg.Pools.ByName), "peers", len(cfg.Peers))
		},
		Logger: logger,
	}
	if err := reconciler.SetupWithManager(mgr); err != nil {
		return err
	}
	return mgr.Start(ctx)
}
