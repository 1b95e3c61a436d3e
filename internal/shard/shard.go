// SPDX-License-Identifier: Apache-2.0

// Package shard decides which LB nodes serve which VIPs. A node belongs to shard S when it
// carries the label maglb.io/shard-S (a node may be in several); a pool without a shard is
// served by every node, as upstream.
package shard

import (
	"slices"
	"strings"

	maglbv1beta1 "github.com/maglb/maglb/upstream/api/v1beta1"
)

// Label returns the node label that makes a node a member of shard.
func Label(shard string) string {
	return maglbv1beta1.ShardLabelPrefix + shard
}

// Serves reports whether a node with nodeLabels serves the VIPs of a pool with shard.
func Serves(nodeLabels map[string]string, shard string) bool {
	if shard == "" {
		return true
	}
	_, ok := nodeLabels[Label(shard)]
	return ok
}

// Of returns the shards a node with nodeLabels belongs to, sorted.
func Of(nodeLabels map[string]string) []string {
	var shards []string
	for key := range nodeLabels {
		if name, ok := strings.CutPrefix(key, maglbv1beta1.ShardLabelPrefix); ok && name != "" {
			shards = append(shards, name)
		}
	}
	slices.Sort(shards)
	return shards
}

// Unserved returns, sorted, the shards of pools that no node serves: their VIPs would be
// allocated but never announced.
func Unserved(poolShards []string, nodeLabels []map[string]string) []string {
	var unserved []string
	for _, s := range poolShards {
		if s == "" || slices.Contains(unserved, s) {
			continue
		}
		if !slices.ContainsFunc(nodeLabels, func(l map[string]string) bool { return Serves(l, s) }) {
			unserved = append(unserved, s)
		}
	}
	slices.Sort(unserved)
	return unserved
}
