// SPDX-License-Identifier: Apache-2.0

package allocator

import (
	"net/netip"
	"slices"
	"sort"
)

// span is an inclusive run of consecutive addresses of one family.
type span struct{ lo, hi netip.Addr }

// spanSet is a set of addresses kept as sorted, disjoint, non-adjacent runs, so that
// "the lowest address at or above x that is not in the set" costs a binary search
// however densely the addresses below x are used.
type spanSet struct {
	spans []span
}

// at returns the index of the first run that ends at or after x, and whether that run
// contains x.
func (s *spanSet) at(x netip.Addr) (int, bool) {
	i := sort.Search(len(s.spans), func(i int) bool { return s.spans[i].hi.Compare(x) >= 0 })
	return i, i < len(s.spans) && s.spans[i].lo.Compare(x) <= 0
}

func (s *spanSet) add(x netip.Addr) {
	i, in := s.at(x)
	if in {
		return
	}
	joinsLeft := i > 0 && s.spans[i-1].hi.Next() == x
	joinsRight := i < len(s.spans) && x.Next() == s.spans[i].lo
	switch {
	case joinsLeft && joinsRight:
		s.spans[i-1].hi = s.spans[i].hi
		s.spans = slices.Delete(s.spans, i, i+1)
	case joinsLeft:
		s.spans[i-1].hi = x
	case joinsRight:
		s.spans[i].lo = x
	default:
		s.spans = slices.Insert(s.spans, i, span{x, x})
	}
}

func (s *spanSet) remove(x netip.Addr) {
	i, in := s.at(x)
	if !in {
		return
	}
	r := s.spans[i]
	switch {
	case r.lo == r.hi:
		s.spans = slices.Delete(s.spans, i, i+1)
	case x == r.lo:
		s.spans[i].lo = x.Next()
	case x == r.hi:
		s.spans[i].hi = x.Prev()
	default:
		s.spans[i].hi = x.Prev()
		s.spans = slices.Insert(s.spans, i+1, span{x.Next(), r.hi})
	}
}

// firstAbsent returns the lowest address at or above x (same family) that is not in the
// set, or the zero Addr when every address up to the end of the family is.
func (s *spanSet) firstAbsent(x netip.Addr) netip.Addr {
	i, in := s.at(x)
	if !in {
		return x
	}
	return s.spans[i].hi.Next()
}

// sortedAddrs is a sorted list of distinct addresses.
type sortedAddrs []netip.Addr

func (l sortedAddrs) search(x netip.Addr) (int, bool) {
	return slices.BinarySearchFunc(l, x, netip.Addr.Compare)
}

func (l sortedAddrs) insert(x netip.Addr) sortedAddrs {
	i, found := l.search(x)
	if found {
		return l
	}
	return slices.Insert(l, i, x)
}

func (l sortedAddrs) remove(x netip.Addr) sortedAddrs {
	i, found := l.search(x)
	if !found {
		return l
	}
	return slices.Delete(l, i, i+1)
}
