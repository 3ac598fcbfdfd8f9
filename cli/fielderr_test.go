package cli

import (
	"fmt"
	"testing"

	"github.com/spf13/pflag"

	"github.com/lpsdev/lps/config"
)

func TestFlagFor(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	for _, f := range []string{"max-inflight", "upstream", "timeout", "admin-listen", "backlog", "qos", "queue", "dedup-dir", "service-name"} {
		fs.String(f, "", "")
	}
	for field, want := range map[string]string{
		"MaxInflight":      "max-inflight",
		"Upstream.URL":     "upstream",
		"Upstream.Timeout": "timeout",
		"Admin.Listen":     "admin-listen",
		"Admin.Backlog":    "backlog",
		"QoS":              "qos",
		"Queues":           "queue",
		"DedupDir":         "dedup-dir",
		"ServiceName":      "service-name",
		"Unknown":          "",
	} {
		if got := flagFor(fs, field); got != want {
			t.Errorf("flagFor(%q) = %q, want %q", field, got, want)
		}
	}
	fs.Set("max-inflight", "70000")
	err := flagError(fs, fmt.Errorf("building: %w", config.Invalid("MaxInflight", 70000, "must be between 1 and 65535")))
	if err == nil || err.Error() != "invalid --max-inflight 70000: must be between 1 and 65535" {
		t.Errorf("flagError: %v", err)
	}
}
