// SPDX-License-Identifier: Apache-2.0

package backendagent

import (
	"errors"
	"fmt"
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/maglb/maglb/datapath/ebpf"
)

func TestCollector(t *testing.T) {
	registry := prometheus.NewPedanticRegistry()
	registry.MustRegister(NewCollector(func() (ebpf.DecapCounters, error) {
		return ebpf.DecapCounters{IPIP: 7, GUE: 3, Bytes: 1500, Rejected: 2}, nil
	}))
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
			}
			got[name] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		`maglb_decap_packets_total{encapsulation="ipip"}`: 7,
		`maglb_decap_packets_total{encapsulation="gue"}`:  3,
		"maglb_decap_bytes_total":                         1500,
		"maglb_decap_rejected_total":                      2,
	}
	if !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}

	failing := prometheus.NewPedanticRegistry()
	failing.MustRegister(NewCollector(func() (ebpf.DecapCounters, error) { return ebpf.DecapCounters{}, errors.New("map gone") }))
	if _, err := failing.Gather(); err == nil {
		t.Error("a failing read was not reported at the scrape")
	}
}
