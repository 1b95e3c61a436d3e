// SPDX-License-Identifier: Apache-2.0

package allocator

import (
	"strings"

	"github.com/maglb/maglb/internal/lbservice"
)

// currentFor returns the metallb.io annotation that replaces a legacy one, and false
// when key is not of the form metallb.universe.tf/<name>.
func currentFor(key string) (string, bool) {
	name, ok := strings.CutPrefix(key, lbservice.LegacyAnnotationPrefix+"/")
	if !ok {
		return "", false
	}
	return "metallb.io/" + name, true
}
