// SPDX-License-Identifier: Apache-2.0

package maglev

import (
	"fmt"
	"testing"
)

// BenchmarkBuild times a table build at every size Sync uses, with the most backends that size
// takes, and reports, per N, the table size and the imbalance (busiest backend over average).
func BenchmarkBuild(b *testing.B) {
	for _, size := range Sizes {
		backends := equalBackends(int(size) / EntriesPerBackend)
		n := len(backends)
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var table Table
			for b.Loop() {
				var err error
				if table, err = DefaultConfig().Build(backends); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(table.Entries)), "M")
			b.ReportMetric(imbalance(table), "max/avg")
		})
	}
}

// BenchmarkDisruption reports, for one backend added to or removed from N (at the first, middle
// and last key), the largest share of the survivors' entries that move to another survivor,
// within a size and across every size step; the goal is 2%.
func BenchmarkDisruption(b *testing.B) {
	for _, pair := range oneChanged() {
		name := fmt.Sprintf("N=%d↔%d", len(pair.small), len(pair.large))
		b.Run(name, func(b *testing.B) {
			var worst float64
			var small, large Table
			for b.Loop() {
				var err error
				if small, err = DefaultConfig().Build(pair.small); err != nil {
					b.Fatal(err)
				}
				if large, err = DefaultConfig().Build(pair.large); err != nil {
					b.Fatal(err)
				}
			}
			worst = max(survivorsMoved(small, large), survivorsMoved(large, small))
			b.ReportMetric(float64(len(small.Entries)), "M-before")
			b.ReportMetric(float64(len(large.Entries)), "M-after")
			b.ReportMetric(100*worst, "moved%")
			b.ReportMetric(max(imbalance(small), imbalance(large)), "max/avg")
		})
	}
}
