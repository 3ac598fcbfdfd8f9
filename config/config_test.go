package config

import (
	"errors"
	"fmt"
	"testing"
)

func TestFieldError(t *testing.T) {
	err := Within("Upstream", Invalid("URL", "ftp://x", "scheme must be http or https"))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "Upstream.URL" || err.Error() != "Upstream.URL ftp://x: scheme must be http or https" {
		t.Errorf("%v (%+v)", err, fe)
	}
	if Within("X", nil) != nil {
		t.Error("Within(nil) is not nil")
	}
	plain := fmt.Errorf("other")
	if Within("X", plain) != plain {
		t.Error("Within changed an error that is not a FieldError")
	}
	if got := Invalid("Topic", "", "is required").Error(); got != "Topic: is required" {
		t.Errorf("empty value: %q", got)
	}
}
