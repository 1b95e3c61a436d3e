// SPDX-License-Identifier: Apache-2.0

// Package maglev builds weighted Maglev lookup tables (Eisenbud et al., NSDI '16, §3.4).
//
// A table is a pure function of the backend set and the Config: backends are sorted by key and
// hashed with fixed seeds, so every node that builds a table for the same backends gets the same
// table. Permutations are walked incrementally (offset, skip, position per backend): memory is
// O(N + M), never N×M.
package maglev

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Sizes are the table sizes a table may have: primes near powers of two (65537 as in the paper).
// The steps are coarse on purpose: when N crosses a step, M changes and most flows map to a new
// entry (established ones stay put through the connection table), so fewer steps mean fewer
// remaps, for at most twice the memory of 100·N entries. Every node must use the same list, so
// it is fixed.
var Sizes = []uint32{251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65537, 131071}

// EntriesPerBackend is the table size per backend that keeps the busiest backend within 1% of
// the average: each backend gets ⌊M/N⌋ or ⌈M/N⌉ entries.
const EntriesPerBackend = 100

// Config fixes everything a table depends on besides the backends. Nodes that must agree on
// tables must use the same Config.
type Config struct {
	// OffsetSeed and SkipSeed seed the two hashes that place each backend's permutation.
	OffsetSeed uint64
	SkipSeed   uint64
	// MinSize and MaxSize bound the table size; both must be members of Sizes.
	MinSize uint32
	MaxSize uint32
}

// DefaultConfig returns the seeds and bounds MagLB uses unless told otherwise.
func DefaultConfig() Config {
	return Config{
		OffsetSeed: 0x6d61676c62206f66, // "maglb of"
		SkipSeed:   0x6d61676c6220736b, // "maglb sk"
		MinSize:    Sizes[0],
		MaxSize:    Sizes[len(Sizes)-1],
	}
}

// Validate reports whether the bounds are members of Sizes and ordered.
func (c Config) Validate() error {
	if !slices.Contains(Sizes, c.MinSize) || !slices.Contains(Sizes, c.MaxSize) {
		return fmt.Errorf("maglev: table size bounds %d..%d must be members of maglev.Sizes", c.MinSize, c.MaxSize)
	}
	if c.MinSize > c.MaxSize {
		return fmt.Errorf("maglev: minimum table size %d exceeds maximum %d", c.MinSize, c.MaxSize)
	}
	return nil
}

// Size returns the table size for n backends: the smallest member of Sizes that is at least
// EntriesPerBackend·n and within the bounds, or MaxSize when no member is large enough.
func (c Config) Size(n int) uint32 {
	want := uint64(EntriesPerBackend) * uint64(n)
	for _, size := range Sizes {
		if size >= c.MinSize && uint64(size) >= want {
			return min(size, c.MaxSize)
		}
	}
	return c.MaxSize
}

// Backend is one table member. Key identifies it (for example the address bytes); Weight is its
// share of the entries relative to the others. A zero weight gets no entries.
type Backend struct {
	Key    string
	Weight uint32
}

// Table is a lookup table: Entries[i] indexes Backends, which are sorted by Key.
type Table struct {
	Backends []Backend
	Entries  []uint32
}

// ErrNoBackends is returned when no backend has a positive weight.
var ErrNoBackends = errors.New("maglev: no backend with a positive weight")

// Build returns the table for backends, in any order. Keys must be unique.
func (c Config) Build(backends []Backend) (Table, error) {
	if err := c.Validate(); err != nil {
		return Table{}, err
	}
	sorted := slices.Clone(backends)
	slices.SortFunc(sorted, func(a, b Backend) int { return strings.Compare(a.Key, b.Key) })
	var total uint64
	for i, b := range sorted {
		if i > 0 && sorted[i-1].Key == b.Key {
			return Table{}, fmt.Errorf("maglev: duplicate backend key %q", b.Key)
		}
		total += uint64(b.Weight)
	}
	if total == 0 {
		return Table{}, ErrNoBackends
	}
	size := c.Size(len(sorted))
	return Table{Backends: sorted, Entries: c.populate(sorted, size, total)}, nil
}

// walker is one backend's position in its permutation, (offset + j·skip) mod M.
type walker struct {
	position, skip uint64
	quota, taken   uint64
	credit         uint64
}

// next steps to the following entry of the permutation; position and skip are below m, so one
// subtraction replaces a division.
func (w *walker) next(m uint64) {
	w.position += w.skip
	if w.position >= m {
		w.position -= m
	}
}

// populate fills the table by turns. Per round every backend earns its weight in credit and
// takes one turn per maxWeight of credit, so turns follow the weights; a turn claims the next
// free entry of the backend's permutation. Quotas (largest remainder of size·w/total) stop a
// backend at exactly its share, within one entry.
func (c Config) populate(backends []Backend, size uint32, total uint64) []uint32 {
	m := uint64(size)
	walkers := make([]walker, len(backends))
	var maxWeight uint64
	for i, b := range backends {
		maxWeight = max(maxWeight, uint64(b.Weight))
		walkers[i] = walker{
			position: hash(b.Key, c.OffsetSeed) % m,
			skip:     hash(b.Key, c.SkipSeed)%(m-1) + 1,
		}
	}
	assignQuotas(walkers, backends, m, total)

	const empty = ^uint32(0)
	entries := make([]uint32, size)
	for i := range entries {
		entries[i] = empty
	}
	for filled := uint64(0); filled < m; {
		for i := range walkers {
			w := &walkers[i]
			if w.taken == w.quota {
				continue
			}
			w.credit += uint64(backends[i].Weight)
			for w.credit >= maxWeight && w.taken < w.quota {
				w.credit -= maxWeight
				for entries[w.position] != empty {
					w.next(m)
				}
				entries[w.position] = uint32(i)
				w.next(m)
				w.taken++
				filled++
			}
		}
	}
	return entries
}

// assignQuotas gives each backend ⌊m·w/total⌋ entries and the remaining ones to the largest
// remainders, ties to the lower index, so the quotas sum to m.
func assignQuotas(walkers []walker, backends []Backend, m, total uint64) {
	type remainder struct {
		index int
		value uint64
	}
	remainders := make([]remainder, 0, len(backends))
	left := m
	for i, b := range backends {
		share := m * uint64(b.Weight)
		walkers[i].quota = share / total
		left -= walkers[i].quota
		if b.Weight > 0 {
			remainders = append(remainders, remainder{i, share % total})
		}
	}
	slices.SortStableFunc(remainders, func(a, b remainder) int {
		switch {
		case a.value > b.value:
			return -1
		case a.value < b.value:
			return 1
		}
		return 0
	})
	for _, r := range remainders[:left] {
		walkers[r.index].quota++
	}
}

// hash is FNV-1a over key from a seeded basis, finished with the SplitMix64 mixer so that
// keys differing in one byte land far apart.
func hash(key string, seed uint64) uint64 {
	h := uint64(0xcbf29ce484222325) ^ seed
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 0x100000001b3
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
