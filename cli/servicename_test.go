package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestServiceNameMustBeSafeAsAFileName: the service name names the log file in --log-file's
// folder, so a name that would leave the folder, hide the file or is too long stops the role
// before it starts, with one line naming the flag and its environment variables.
func TestServiceNameMustBeSafeAsAFileName(t *testing.T) {
	logs := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"parent dir from env", nil, map[string]string{"SERVICE_NAME": "x/../../escape"}, `invalid --service-name "x/../../escape" (env LPS_SERVICE_NAME, SERVICE_NAME): holds '/' at byte 1`},
		{"dot dot slash", nil, map[string]string{"SERVICE_NAME": "../escape"}, `invalid --service-name "../escape" (env LPS_SERVICE_NAME, SERVICE_NAME): must not start with '.'`},
		{"absolute path", []string{"--service-name", "/etc/x"}, nil, `invalid --service-name "/etc/x"`},
		{"hidden", []string{"--service-name", ".hidden"}, nil, "must not start with '.'"},
		{"dot dot", nil, map[string]string{"LPS_SERVICE_NAME": ".."}, "must not start with '.'"},
		{"empty", []string{"--service-name", ""}, nil, `invalid --service-name "" (env LPS_SERVICE_NAME, SERVICE_NAME): must not be empty`},
		{"space", []string{"--service-name", "a b"}, nil, "holds ' ' at byte 1"},
		{"too long", []string{"--service-name", strings.Repeat("a", 129)}, nil, "129 bytes long, longer than 128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"comp2", "--upstream", "http://a", "--listen", "127.0.0.1:0", "--log-file", logs}, tc.args...)
			code := Execute(NewRoot(Options{LookupEnv: env(tc.env), Stdout: &out, Stderr: &errOut}), args)
			msg := errOut.String()
			if code == 0 || !strings.Contains(msg, tc.want) || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
				t.Errorf("exit %d, stderr %q: want a non-zero exit and one line containing %q", code, msg, tc.want)
			}
		})
	}
}
