// SPDX-License-Identifier: Apache-2.0

package datapath

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

type fixedStats Stats

func (s fixedStats) Stats() (Stats, error) { return Stats(s), nil }

func TestCollector(t *testing.T) {
	key := ServiceKey{VIP: netip.MustParseAddr("192.0.2.1"), Protocol: TCP, Port: 80}
	stats := fixedStats{
		Global:   Counters{Packets: 10, Bytes: 1000, NewFlows: 2, LRUMisses: 1, Drops: map[string]uint64{"no_backend": 3}},
		Services: map[ServiceKey]Counters{key: {Packets: 7}},

		ServiceIDs: 1, ServiceIDCapacity: 16384,
		MapEntries: map[string]int{"vips": 2, "rings": 1},
	}
	registry := prometheus.NewRegistry()
	registry.MustRegister(NewCollector(stats))
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"maglb_datapath_packets_total{}":                                           10,
		"maglb_datapath_bytes_total{}":                                             1000,
		"maglb_datapath_new_flows_total{}":                                         2,
		"maglb_datapath_lru_misses_total{}":                                        1,
		"maglb_datapath_drops_total{reason=no_backend}":                            3,
		"maglb_datapath_service_packets_total{port=80,protocol=TCP,vip=192.0.2.1}": 7,
		"maglb_datapath_service_ids_used{}":                                        1,
		"maglb_datapath_service_ids_capacity{}":                                    16384,
		"maglb_datapath_map_entries{map=vips}":                                     2,
		"maglb_datapath_map_entries{map=rings}":                                    1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], want, got)
		}
	}
}
