// SPDX-License-Identifier: Apache-2.0

// Package maglev builds weighted lookup tables for consistent hashing in the manner of Maglev
// (Eisenbud et al., NSDI '16): every entry names a backend, every backend holds 0.95 to 1.05
// times its share once tables hold 100 entries per backend, and a change of the backend set
// moves few entries of the backends that stay.
//
// Sizes follow the number of backends N (memory follows backends, not VIPs × 65537): the
// smallest BaseSize·2^k with at least EntriesPerBackend entries per backend. A plain Maglev
// table per size reshuffles most entries whenever N crosses a size step (83% at 10↔11, 91% at
// 20↔21 measured with the prime sizes this replaced). Here the table of each size is derived
// from the half-size table for the same backends: doubled (entries i and i+S both take entry
// i, so a hash modulo either size finds the same backend), then rebalanced. A lookup changes
// backend across a step only where that rebalance moved its entry, so a step costs about what
// a change within a size costs (BenchmarkDisruption: 0–5.4% of the survivors' lookups move for
// one backend more or less, under 1.5% up to 11 backends; the goal of 2% is not met yet).
//
// The table is a pure function of the backend set and the Config, with no history: every LB
// node of a shard must build the same table from the same backends, a node that just joined and
// a speaker that restarted on its pinned maps included, or flows that ECMP moves between nodes
// change backend. A size chosen with hysteresis from the previous one would depend on a history
// those nodes lack, and would still reshuffle at the steps it takes.
//
// Construction: the table of BaseSize entries gives each entry, in order, to the backend
// scoring highest for it among those below their capacity (rendezvous hashing with bounded
// loads); at each doubling, backends above their capacity release the entries they score
// lowest, which are given out the same way; then backends below 0.95 of their share take the
// entries they score highest from backends above their share. Scores are fixed hashes of the backend's key and
// the entry, and capacities grow smoothly with the share, so every node makes the same choices
// and one backend more or less changes few of them. Small tables are where the choices weigh
// most: an entry of the first table stands for 2^k entries of the final one.
package maglev

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
)

// BaseSize is the smallest table size; every size is BaseSize·2^k, up to Sizes' last. Choices
// in the first table weigh 2^k times in the last, so a larger base moves fewer entries: 1021
// keeps one backend more or less under 1.5% moved up to 11 backends (251: up to 6.8%), for
// 2 KiB per VIP with few backends.
const BaseSize = 1021

// Sizes are the table sizes a table may have. Every node must use the same list, so it is fixed.
var Sizes = []uint32{BaseSize, BaseSize << 1, BaseSize << 2, BaseSize << 3, BaseSize << 4,
	BaseSize << 5, BaseSize << 6, BaseSize << 7}

// EntriesPerBackend is the table size per backend that keeps the busiest backend within 5% of
// its share (see capacity).
const EntriesPerBackend = 100

// Version names the construction; it changes whenever a table for the same backends and Config
// would change, so that nodes can tell tables of other versions apart.
const Version = 2

// Config fixes everything a table depends on besides the backends. Nodes that must agree on
// tables must use the same Config.
type Config struct {
	// Seed seeds the scores of backends for entries.
	Seed uint64
	// MinSize and MaxSize bound the table size; both must be members of Sizes.
	MinSize uint32
	MaxSize uint32
}

// DefaultConfig returns the seed and bounds MagLB uses unless told otherwise.
func DefaultConfig() Config {
	return Config{
		Seed:    0x6d61676c62207363, // "maglb sc"
		MinSize: Sizes[0],
		MaxSize: Sizes[len(Sizes)-1],
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

// builder holds a table under construction and each backend's place in it.
type builder struct {
	weights []uint64
	total   uint64
	scorer  []uint64 // per backend: its key's hash, which its scores derive from
	entries []uint32
	counts  []uint64
}

// populate builds the table of BaseSize entries, then doubles and rebalances it up to size.
func (c Config) populate(backends []Backend, size uint32, total uint64) []uint32 {
	b := builder{
		weights: make([]uint64, len(backends)),
		total:   total,
		scorer:  make([]uint64, len(backends)),
		entries: make([]uint32, BaseSize, size),
		counts:  make([]uint64, len(backends)),
	}
	for i, backend := range backends {
		b.weights[i] = uint64(backend.Weight)
		b.scorer[i] = hash(backend.Key, c.Seed)
	}
	free := make([]int, BaseSize)
	for e := range free {
		free[e] = e
	}
	b.assign(free)
	b.raise()
	for len(b.entries) < int(size) {
		b.entries = append(b.entries, b.entries...)
		for i := range b.counts {
			b.counts[i] *= 2
		}
		b.assign(b.release())
		b.raise()
	}
	return b.entries
}

// score is how much backend i wants entry e.
func (b *builder) score(i int, e int) uint64 {
	return mix(b.scorer[i] ^ uint64(e+1)*0x9e3779b97f4a7c15)
}

// capacity is the most entries backend i may hold: 1.03 times its share plus a fraction of an
// entry fixed per backend, rounded down, plus one. Capacities grow smoothly with the share, and
// a backend's changes at its own share, so one backend more or less changes few of them; the
// busiest backend stays within 1.05 of its share once shares are at least 100 entries.
func (b *builder) capacity(i int) uint64 {
	if b.weights[i] == 0 {
		return 0
	}
	scale := 100 * b.total
	hi, lo := bits.Mul64(scale, b.scorer[i]>>48)
	fraction := hi<<48 | lo>>16 // scale·q/2^16 with q < 2^16: below scale
	return (uint64(len(b.entries))*b.weights[i]*103+fraction)/scale + 1
}

// release takes from every backend above its capacity the entries it scores lowest, and returns
// them in index order.
func (b *builder) release() []int {
	excess := make([]uint64, len(b.counts))
	over := false
	for i, count := range b.counts {
		if c := b.capacity(i); count > c {
			excess[i], over = count-c, true
		}
	}
	if !over {
		return nil
	}
	type held struct {
		score uint64
		entry int
	}
	byBackend := map[int][]held{}
	for e, i := range b.entries {
		if excess[i] > 0 {
			byBackend[int(i)] = append(byBackend[int(i)], held{b.score(int(i), e), e})
		}
	}
	var freed []int
	for i, entries := range byBackend {
		slices.SortFunc(entries, func(x, y held) int { return cmp.Compare(x.score, y.score) })
		for _, h := range entries[:excess[i]] {
			freed = append(freed, h.entry)
		}
		b.counts[i] -= excess[i]
	}
	slices.Sort(freed)
	return freed
}

// floor is the fewest entries backend i should hold: 0.95 times its share, rounded down.
func (b *builder) floor(i int) uint64 {
	return uint64(len(b.entries)) * b.weights[i] * 95 / 100 / b.total
}

// raise lifts every backend below its floor, in index order: it takes the entries it scores
// highest among those of backends holding more than their share.
func (b *builder) raise() {
	above := func(j uint32) bool {
		return b.counts[j]*b.total > uint64(len(b.entries))*b.weights[j]
	}
	var pool []int // entries of backends above their share when raising starts
	for i := range b.counts {
		lacking := b.floor(i)
		if b.counts[i] >= lacking {
			continue
		}
		lacking -= b.counts[i]
		if pool == nil {
			for e, j := range b.entries {
				if above(j) {
					pool = append(pool, e)
				}
			}
		}
		// Scores are uniform: the best few times lacking entries of the pool score above
		// cutoff. If those do not suffice, all of them are offered.
		cutoff := ^uint64(0) - ^uint64(0)/uint64(len(pool))*min(uint64(len(pool)), 4*lacking+16)
		for _, threshold := range []uint64{cutoff, 0} {
			lacking = b.take(i, pool, lacking, threshold, above)
			if lacking == 0 {
				break
			}
		}
	}
}

// take gives backend i up to lacking entries of pool scoring at least threshold for it, highest
// first, from backends still above their share, and returns how many it still lacks.
func (b *builder) take(i int, pool []int, lacking, threshold uint64, above func(uint32) bool) uint64 {
	type offer struct {
		score uint64
		entry int
	}
	var offers []offer
	for _, e := range pool {
		if score := b.score(i, e); score >= threshold && above(b.entries[e]) {
			offers = append(offers, offer{score, e})
		}
	}
	slices.SortFunc(offers, func(x, y offer) int { return cmp.Compare(y.score, x.score) })
	for _, o := range offers {
		if lacking == 0 {
			break
		}
		if j := b.entries[o.entry]; above(j) {
			b.counts[j]--
			b.entries[o.entry] = uint32(i)
			b.counts[i]++
			lacking--
		}
	}
	return lacking
}

// assign gives each entry, in order, to the backend scoring highest for it among those below
// their capacity: rendezvous hashing with bounded loads.
func (b *builder) assign(entries []int) {
	capacities := make([]uint64, len(b.counts))
	for i := range capacities {
		capacities[i] = b.capacity(i)
	}
	for _, e := range entries {
		best, bestScore := -1, uint64(0)
		for i, count := range b.counts {
			if count >= capacities[i] {
				continue
			}
			if score := b.score(i, e); best < 0 || score > bestScore {
				best, bestScore = i, score
			}
		}
		b.entries[e] = uint32(best)
		b.counts[best]++
	}
}

// hash is FNV-1a over key from a seeded basis, mixed so that keys differing in one byte land
// far apart.
func hash(key string, seed uint64) uint64 {
	h := uint64(0xcbf29ce484222325) ^ seed
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 0x100000001b3
	}
	return mix(h)
}

// mix is the SplitMix64 finalizer.
func mix(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
