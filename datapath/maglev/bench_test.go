// SPDX-License-Identifier: Apache-2.0

package maglev

import (
	"fmt"
	"testing"
)

// BenchmarkBuild times a full table build at M=65537 and reports, per N, the imbalance
// (busiest backend over average) and the share of the survivors' entries that move when one
// backend is removed.
func BenchmarkBuild(b *testing.B) { benchmarkBuild(b, fixedSize(65537)) }

// BenchmarkBuildDefaultSize builds at the size Sync uses (smallest member of Sizes ≥ 100·N).
func BenchmarkBuildDefaultSize(b *testing.B) { benchmarkBuild(b, DefaultConfig()) }

func benchmarkBuild(b *testing.B, config Config) {
	for _, n := range []int{10, 100, 1000} {
		backends := equalBackends(n)
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var table Table
			for b.Loop() {
				var err error
				if table, err = config.Build(backends); err != nil {
					b.Fatal(err)
				}
			}
			after, err := config.Build(withoutOne(backends, n/2))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(len(table.Entries)), "M")
			b.ReportMetric(imbalance(table), "max/avg")
			b.ReportMetric(100*survivorsMoved(table, after), "moved%")
		})
	}
}
