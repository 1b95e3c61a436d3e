// SPDX-License-Identifier: Apache-2.0

package maglev

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func equalBackends(n int) []Backend {
	backends := make([]Backend, n)
	for i := range backends {
		backends[i] = Backend{Key: fmt.Sprintf("10.0.%d.%d", i/256, i%256), Weight: 1}
	}
	return backends
}

func fixedSize(size uint32) Config {
	c := DefaultConfig()
	c.MinSize, c.MaxSize = size, size
	return c
}

// counts returns the number of entries each backend holds.
func counts(t Table) []int {
	c := make([]int, len(t.Backends))
	for _, e := range t.Entries {
		c[e]++
	}
	return c
}

// imbalance is the busiest backend's entries over the average, among backends with weight.
func imbalance(t Table) float64 {
	busiest := slices.Max(counts(t))
	return float64(busiest) * float64(len(t.Backends)) / float64(len(t.Entries))
}

// survivorsMoved is the share of the entries held by backends present in both tables that
// point elsewhere in after. Both tables must have the same size.
func survivorsMoved(before, after Table) float64 {
	if len(before.Entries) != len(after.Entries) {
		panic("survivorsMoved: table sizes differ")
	}
	kept := map[string]bool{}
	for _, b := range after.Backends {
		kept[b.Key] = true
	}
	var held, moved int
	for i, e := range before.Entries {
		key := before.Backends[e].Key
		if !kept[key] {
			continue
		}
		held++
		if after.Backends[after.Entries[i]].Key != key {
			moved++
		}
	}
	return float64(moved) / float64(held)
}

func withoutOne(backends []Backend, index int) []Backend {
	return slices.Delete(slices.Clone(backends), index, index+1)
}

func TestSize(t *testing.T) {
	narrow := DefaultConfig()
	narrow.MinSize, narrow.MaxSize = 1021, 65537
	for _, tc := range []struct {
		config Config
		n      int
		want   uint32
	}{
		{DefaultConfig(), 0, 251},
		{DefaultConfig(), 1, 251},
		{DefaultConfig(), 2, 251},
		{DefaultConfig(), 3, 509},
		{DefaultConfig(), 10, 1021},
		{DefaultConfig(), 11, 2039},
		{DefaultConfig(), 100, 16381},
		{DefaultConfig(), 655, 65537},
		{DefaultConfig(), 656, 131071},
		{DefaultConfig(), 1310, 131071},
		{DefaultConfig(), 5000, 131071},
		{narrow, 1, 1021},
		{narrow, 700, 65537},
		{fixedSize(65537), 1000, 65537},
	} {
		if got := tc.config.Size(tc.n); got != tc.want {
			t.Errorf("Size(%d) with bounds %d..%d = %d, want %d", tc.n, tc.config.MinSize, tc.config.MaxSize, got, tc.want)
		}
	}
}

func TestSizesArePrimeAndIncreasing(t *testing.T) {
	for i, s := range Sizes {
		for d := uint32(2); d*d <= s; d++ {
			if s%d == 0 {
				t.Errorf("size %d is divisible by %d", s, d)
			}
		}
		if i > 0 && s <= Sizes[i-1] {
			t.Errorf("size %d does not follow %d", s, Sizes[i-1])
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		min     uint32
		max     uint32
		wantErr bool
	}{
		{"defaults", 251, 131071, false},
		{"single size", 65537, 65537, false},
		{"not a member", 1000, 131071, true},
		{"above the list", 251, 262139, true},
		{"reversed", 65537, 251, true},
	} {
		c := DefaultConfig()
		c.MinSize, c.MaxSize = tc.min, tc.max
		if err := c.Validate(); (err != nil) != tc.wantErr {
			t.Errorf("%s: Validate() = %v, want error %v", tc.name, err, tc.wantErr)
		}
	}
}

func TestBuildRejects(t *testing.T) {
	for _, tc := range []struct {
		name     string
		backends []Backend
	}{
		{"none", nil},
		{"all weights zero", []Backend{{"a", 0}, {"b", 0}}},
		{"duplicate key", []Backend{{"a", 1}, {"a", 2}}},
	} {
		if _, err := DefaultConfig().Build(tc.backends); err == nil {
			t.Errorf("%s: Build succeeded", tc.name)
		}
	}
}

func TestEveryEntryFilled(t *testing.T) {
	for _, n := range []int{1, 2, 3, 10, 100, 1000} {
		table, err := DefaultConfig().Build(equalBackends(n))
		if err != nil {
			t.Fatal(err)
		}
		if want := DefaultConfig().Size(n); len(table.Entries) != int(want) {
			t.Fatalf("N=%d: %d entries, want %d", n, len(table.Entries), want)
		}
		for i, e := range table.Entries {
			if int(e) >= n {
				t.Fatalf("N=%d: entry %d = %d is not a backend", n, i, e)
			}
		}
	}
}

func TestImbalance(t *testing.T) {
	for _, n := range []int{1, 2, 7, 10, 64, 100, 500, 1000, 1310} {
		table, err := DefaultConfig().Build(equalBackends(n))
		if err != nil {
			t.Fatal(err)
		}
		if m := len(table.Entries); m < EntriesPerBackend*n {
			t.Fatalf("N=%d: table size %d below %d·N", n, m, EntriesPerBackend)
		}
		if got := imbalance(table); got > 1.01 {
			t.Errorf("N=%d M=%d: max/avg = %.4f, want ≤ 1.01", n, len(table.Entries), got)
		}
	}
}

func TestWeights(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []uint32
		size    uint32
	}{
		{"two to one", []uint32{2, 1}, 251},
		{"ascending", []uint32{1, 2, 3, 4}, 1021},
		{"one heavy", []uint32{10, 1, 1, 1, 1, 1}, 65537},
		{"with zero", []uint32{3, 0, 5}, 2039},
		{"large weights", []uint32{4000000000, 1000000000}, 1021},
		{"many mixed", []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, 131071},
	} {
		backends := make([]Backend, len(tc.weights))
		var total float64
		for i, w := range tc.weights {
			backends[i] = Backend{Key: fmt.Sprintf("b%02d", i), Weight: w}
			total += float64(w)
		}
		table, err := fixedSize(tc.size).Build(backends)
		if err != nil {
			t.Fatal(err)
		}
		for i, got := range counts(table) {
			want := float64(tc.size) * float64(table.Backends[i].Weight) / total
			if diff := float64(got) - want; diff > 1 || diff < -1 {
				t.Errorf("%s: backend %d holds %d entries, want %.1f ± 1", tc.name, i, got, want)
			}
			if want >= 100 && (float64(got) > want*1.01 || float64(got) < want*0.99) {
				t.Errorf("%s: backend %d holds %d entries, more than 1%% off %.1f", tc.name, i, got, want)
			}
		}
	}
}

func TestDisruption(t *testing.T) {
	for _, tc := range []struct {
		n    int
		size uint32
		max  float64
	}{
		{10, 0, 0.05},
		{100, 0, 0.02},
		{100, 65537, 0.01},
		{1000, 0, 0.02},
	} {
		config := DefaultConfig()
		if tc.size != 0 {
			config = fixedSize(tc.size)
		}
		backends := equalBackends(tc.n)
		before, err := config.Build(backends)
		if err != nil {
			t.Fatal(err)
		}
		var worst float64
		for _, removed := range []int{0, tc.n / 2, tc.n - 1} {
			after, err := config.Build(withoutOne(backends, removed))
			if err != nil {
				t.Fatal(err)
			}
			worst = max(worst, survivorsMoved(before, after))
		}
		t.Logf("N=%d M=%d: removing one backend moves at most %.3f%% of the survivors' entries", tc.n, len(before.Entries), 100*worst)
		if worst > tc.max {
			t.Errorf("N=%d: %.3f%% of the survivors' entries moved, want ≤ %.1f%%", tc.n, 100*worst, 100*tc.max)
		}
	}
}

func TestDeterministic(t *testing.T) {
	backends := equalBackends(50)
	for i := range backends {
		backends[i].Weight = uint32(1 + i%4)
	}
	first, err := DefaultConfig().Build(backends)
	if err != nil {
		t.Fatal(err)
	}
	shuffled := slices.Clone(backends)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	second, err := DefaultConfig().Build(shuffled)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first.Entries, second.Entries) || !slices.Equal(first.Backends, second.Backends) {
		t.Fatal("tables built from differently ordered input differ")
	}

	other := DefaultConfig()
	other.OffsetSeed++
	third, err := other.Build(backends)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(first.Entries, third.Entries) {
		t.Fatal("a different seed built the same table")
	}
}

// TestGolden pins a small table so that a change to hashing or filling, which would make nodes
// of different versions disagree, cannot go unnoticed.
func TestGolden(t *testing.T) {
	table, err := DefaultConfig().Build([]Backend{{"a", 1}, {"b", 1}, {"c", 2}})
	if err != nil {
		t.Fatal(err)
	}
	want := []uint32{1, 1, 2, 2, 0, 2, 1, 1, 2, 0, 2, 2, 1, 1, 0, 2}
	if !slices.Equal(table.Entries[:16], want) {
		t.Fatalf("first entries = %v, want %v", table.Entries[:16], want)
	}
}
