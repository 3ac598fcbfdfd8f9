// Package config is how a role's configuration says what is wrong with it: a *FieldError names
// the Config field and its value. Every role validates its own Config (as a Caddy module's
// Validate does); the command line only maps flags to Config fields, and turns a FieldError
// into a one-line error naming the flag that sets the field.
package config

import (
	"errors"
	"fmt"
)

// FieldError is an invalid value of a Config field. Field is the field's path in the Config
// ("MaxInflight", "Upstream.URL", "Admin.Listen").
type FieldError struct {
	Field  string
	Value  any
	Reason string
}

func (e *FieldError) Error() string {
	if s, ok := e.Value.(string); ok && s == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("%s %v: %s", e.Field, e.Value, e.Reason)
}

// Invalid returns a *FieldError.
func Invalid(field string, value any, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// Within prefixes the Field of a *FieldError in err with the path of the struct that holds it
// (Within("Upstream", URL error) is about "Upstream.URL"); other errors, and nil, pass
// unchanged.
func Within(path string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return &FieldError{Field: path + "." + fe.Field, Value: fe.Value, Reason: fe.Reason}
	}
	return err
}
