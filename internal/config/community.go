// SPDX-License-Identifier: Apache-2.0

package config

import (
	"cmp"
	"errors"
	"fmt"
	"strconv"
	"strings"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
)

// Community is a BGP community: standard (RFC 1997), written "65535:65282", or large
// (RFC 8092), written "large:1:2:3".
type Community struct {
	Large bool
	// Global is a standard community's 32-bit value (its ASN in the upper 16 bits) or a
	// large community's global administrator.
	Global uint32
	// LocalData1 and LocalData2 are a large community's local data parts.
	LocalData1, LocalData2 uint32
}

func (c Community) String() string {
	if c.Large {
		return fmt.Sprintf("%s:%d:%d:%d", largeCommunityMarker, c.Global, c.LocalData1, c.LocalData2)
	}
	return fmt.Sprintf("%d:%d", c.Global>>16, c.Global&0xffff)
}

// CompareCommunities orders communities, a standard community as the large community with
// the same global part and zero local parts, so that both kinds sort together.
func CompareCommunities(a, b Community) int {
	return cmp.Or(
		cmp.Compare(a.Global, b.Global),
		cmp.Compare(a.LocalData1, b.LocalData1),
		cmp.Compare(a.LocalData2, b.LocalData2),
		compareBools(a.Large, b.Large),
	)
}

func compareBools(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

const largeCommunityMarker = "large"

var (
	// errCommunityValue: the string has a community's shape but a part is wrong.
	errCommunityValue = errors.New("invalid community value")
	// errCommunityFormat: the string is not shaped like a community; in an
	// advertisement it may be an alias not defined yet.
	errCommunityFormat = errors.New("invalid community format")
)

func parseCommunity(s string) (Community, error) {
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
		asn, err := parseCommunityPart(parts[0], s, 16)
		if err != nil {
			return Community{}, err
		}
		value, err := parseCommunityPart(parts[1], s, 16)
		if err != nil {
			return Community{}, err
		}
		return Community{Global: asn<<16 | value}, nil
	case 4:
		if parts[0] != largeCommunityMarker {
			return Community{}, fmt.Errorf("%w: invalid marker for large community, expected community to be of format %s:<uint32>:<uint32>:<uint32> but got %q instead",
				errCommunityValue, largeCommunityMarker, s)
		}
		c := Community{Large: true}
		for i, dst := range []*uint32{&c.Global, &c.LocalData1, &c.LocalData2} {
			part, err := parseCommunityPart(parts[i+1], s, 32)
			if err != nil {
				return Community{}, err
			}
			*dst = part
		}
		return c, nil
	}
	return Community{}, fmt.Errorf("%w: %s", errCommunityFormat, s)
}

func parseCommunityPart(part, community string, bits int) (uint32, error) {
	n, err := strconv.ParseUint(part, 10, bits)
	if err != nil {
		return 0, fmt.Errorf("%w: invalid section %q of community %q: %v", errCommunityValue, part, community, err)
	}
	return uint32(n), nil
}

// communityAliasesFor collects the aliases the Community resources define.
func communityAliasesFor(crs []metallbv1beta1.Community) (map[string]Community, error) {
	aliases := map[string]Community{}
	for _, cr := range crs {
		obj := objectRef{"community", cr.Name}
		for i, alias := range cr.Spec.Communities {
			field := fmt.Sprintf("spec.communities[%d]", i)
			value, err := parseCommunity(alias.Value)
			if err != nil {
				return nil, obj.errorf(field+".value", "parsing community %q: %v", alias.Name, err)
			}
			if _, ok := aliases[alias.Name]; ok {
				return nil, obj.errorf(field+".name", "duplicate definition of community %q", alias.Name)
			}
			aliases[alias.Name] = value
		}
	}
	return aliases, nil
}
