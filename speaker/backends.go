// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"time"

	"github.com/go-kit/log"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/maglb/maglb/datapath"
	"github.com/maglb/maglb/datapath/ebpf"
	"github.com/maglb/maglb/internal/bgp"
)

// bgpSpeaker gives the speaker controller the embedded BGP speaker.
type bgpSpeaker struct {
	*bgp.Speaker
}

func newBGP(logger log.Logger) (bgpSpeaker, error) {
	// Connect out only, like upstream's native speaker: nothing listens on port 179.
	s, err := bgp.New(logger, bgp.Options{ListenPort: -1})
	return bgpSpeaker{s}, err
}

// close stops BGP; with graceful restart the peers keep the routes until we are back.
func (b bgpSpeaker) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.Speaker.Close(ctx)
}

func registerDatapathMetrics(stats datapath.StatsReader) error {
	return crmetrics.Registry.Register(datapath.NewCollector(stats))
}

// guardPins keeps the eBPF datapath's pins in place until ctx ends (ebpf.PinGuard).
func guardPins(ctx context.Context, dp *ebpf.Datapath, logger log.Logger) error {
	guard := ebpf.NewPinGuard(dp.RestorePins, logger)
	if err := crmetrics.Registry.Register(guard); err != nil {
		return err
	}
	go guard.Run(ctx)
	return nil
}
