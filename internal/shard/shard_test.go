// SPDX-License-Identifier: Apache-2.0

package shard

import (
	"slices"
	"testing"
)

func TestServes(t *testing.T) {
	gold := map[string]string{"maglb.io/shard-gold": "", "kubernetes.io/hostname": "lb1"}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		shard  string
		want   bool
	}{
		{"unsharded pool, any node", nil, "", true},
		{"member", gold, "gold", true},
		{"label value does not matter", map[string]string{"maglb.io/shard-gold": "false"}, "gold", true},
		{"other shard", gold, "silver", false},
		{"prefix of another shard", gold, "gol", false},
		{"no labels", nil, "gold", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Serves(tc.labels, tc.shard); got != tc.want {
				t.Errorf("Serves = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOf(t *testing.T) {
	labels := map[string]string{"maglb.io/shard-silver": "", "maglb.io/shard-gold": "", "maglb.io/shard-": "", "maglb.io/other": ""}
	if got, want := Of(labels), []string{"gold", "silver"}; !slices.Equal(got, want) {
		t.Errorf("Of = %v, want %v", got, want)
	}
}

func TestUnserved(t *testing.T) {
	nodes := []map[string]string{{"maglb.io/shard-gold": ""}, {"maglb.io/shard-silver": "", "maglb.io/shard-gold": ""}, nil}
	for _, tc := range []struct {
		name   string
		shards []string
		want   []string
	}{
		{"all served", []string{"", "gold", "silver"}, nil},
		{"bronze has no node", []string{"bronze", "gold", "bronze"}, []string{"bronze"}},
		{"sorted", []string{"zinc", "bronze"}, []string{"bronze", "zinc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Unserved(tc.shards, nodes); !slices.Equal(got, tc.want) {
				t.Errorf("Unserved = %v, want %v", got, tc.want)
			}
		})
	}
}
