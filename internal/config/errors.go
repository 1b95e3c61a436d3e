// SPDX-License-Identifier: Apache-2.0

package config

import (
	"errors"
	"fmt"
)

// TransientError is a configuration error that may go away once another object exists:
// a peer naming a BFD profile or password secret not created yet, or an advertisement
// naming a community alias not defined yet. Callers retry instead of reporting it as
// a broken configuration.
type TransientError struct {
	Message string
}

func (e TransientError) Error() string { return e.Message }

// objectRef names the custom resource an error is about, so that every message says
// which object and which field to fix.
type objectRef struct {
	kind, name string
}

func (o objectRef) errorf(field, format string, args ...any) error {
	return errors.New(o.describe(field, format, args...))
}

func (o objectRef) transientf(field, format string, args ...any) error {
	return TransientError{Message: o.describe(field, format, args...)}
}

func (o objectRef) describe(field, format string, args ...any) string {
	return fmt.Sprintf("%s %q: %s: %s", o.kind, o.name, field, fmt.Sprintf(format, args...))
}
