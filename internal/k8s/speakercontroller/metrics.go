// SPDX-License-Identifier: Apache-2.0

package speakercontroller

import (
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// announcedGauge is upstream's metallb_speaker_announced.
var announcedGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Namespace: "metallb", Subsystem: "speaker", Name: "announced",
	Help: "Services being announced from this node. This is desired state, it does not guarantee that the routing protocols have converged.",
}, []string{"node", "protocol", "service"})

func init() {
	crmetrics.Registry.MustRegister(announcedGauge)
}
