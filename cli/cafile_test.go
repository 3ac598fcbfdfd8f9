package cli

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestCAFileErrorNamesTheFlag: every command that connects to a broker takes --ca-file, and a
// file it cannot use stops it with one line naming the flag, the file and the reason.
func TestCAFileErrorNamesTheFlag(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.pem")
	for _, args := range [][]string{
		{"http2mqtt", "--listen", "127.0.0.1:0"},
		{"mqtt2http", "--admin-listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1"},
		{"dead-letters"},
		{"up", "--topology", "lps", "--ephemeral-ports"},
	} {
		t.Run(args[0], func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append(args, "--broker", "mqtts://127.0.0.1:8883", "--ca-file", missing)
			code := Execute(NewRoot(Options{LookupEnv: env(nil), Stdout: &out, Stderr: &errOut}), args)
			msg := errOut.String()
			want := `invalid --ca-file "` + missing + `": reading the CA bundle: no such file or directory`
			if code == 0 || !strings.Contains(msg, want) || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
				t.Errorf("exit %d, stderr %q: want a non-zero exit and one line containing %q", code, msg, want)
			}
		})
	}
}
