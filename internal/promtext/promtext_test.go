// SPDX-License-Identifier: Apache-2.0

package promtext

import (
	"maps"
	"testing"
)

const exposition = `# HELP metallb_bgp_session_up BGP session state (1 is up, 0 is down)
# TYPE metallb_bgp_session_up gauge
metallb_bgp_session_up{peer="172.31.0.1:179",vrf="default"} 1
metallb_bgp_session_up{peer="172.31.0.2:179",vrf="default"} 0
maglb_datapath_service_packets_total{port="80",protocol="TCP",vip="198.51.100.1"} 42
maglb_datapath_packets_total 1e+03
metallb_odd{msg="a b"} 7
`

func TestSum(t *testing.T) {
	for _, tc := range []struct {
		name    string
		labels  []string
		sum     float64
		matched int
	}{
		{"metallb_bgp_session_up", nil, 1, 2},
		{"metallb_bgp_session_up", []string{"peer=172.31.0.2:179"}, 0, 1},
		{"maglb_datapath_service_packets_total", []string{"vip=198.51.100.1", "port=80"}, 42, 1},
		{"maglb_datapath_service_packets_total", []string{"vip=198.51.100.2"}, 0, 0},
		{"maglb_datapath_packets_total", nil, 1000, 1},
		{"metallb_odd", []string{"msg=a b"}, 7, 1},
		{"metallb_bgp", nil, 0, 0}, // a prefix of a name is not the name
	} {
		sum, matched, err := Sum(exposition, tc.name, tc.labels...)
		if err != nil || sum != tc.sum || matched != tc.matched {
			t.Errorf("Sum(%s, %v) = %v, %d, %v; want %v, %d", tc.name, tc.labels, sum, matched, err, tc.sum, tc.matched)
		}
	}
	if _, err := Value(exposition, "metallb_missing"); err == nil {
		t.Error("Value of a missing metric: no error")
	}
	if _, _, err := Sum("bad_metric{} notanumber\n", "bad_metric"); err == nil {
		t.Error("an unparsable value: no error")
	}
}

func TestSamples(t *testing.T) {
	for _, tc := range []struct {
		name string
		want map[string]float64
	}{
		{"metallb_bgp_session_up", map[string]float64{`peer="172.31.0.1:179",vrf="default"`: 1, `peer="172.31.0.2:179",vrf="default"`: 0}},
		{"maglb_datapath_packets_total", map[string]float64{"": 1000}},
		{"metallb_odd", map[string]float64{`msg="a b"`: 7}},
		{"metallb_bgp", map[string]float64{}},
	} {
		got, err := Samples(exposition, tc.name)
		if err != nil || !maps.Equal(got, tc.want) {
			t.Errorf("Samples(%s) = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}
