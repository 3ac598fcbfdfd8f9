package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lpsdev/lps/broker"
	"github.com/lpsdev/lps/roles/mqttbroker"
)

func TestBrokerQueueFlag(t *testing.T) {
	defaults := mqttbroker.DefaultQueues()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []broker.Queue // nil: the defaults are not expected, an empty slice: none
	}{
		{name: "defaults", want: defaults},
		{name: "none", args: []string{"--queue", "none"}, want: []broker.Queue{}},
		{name: "none from env", env: map[string]string{"LPS_QUEUE": "none"}, want: []broker.Queue{}},
		{name: "repeated", args: []string{"--queue", "a:x/+", "--queue", "b:y/#"}, want: []broker.Queue{{Group: "a", Filter: "x/+"}, {Group: "b", Filter: "y/#"}}},
		{name: "comma-separated", args: []string{"--queue", "a:x/+,b:y/#"}, want: []broker.Queue{{Group: "a", Filter: "x/+"}, {Group: "b", Filter: "y/#"}}},
		{name: "comma-separated from env", env: map[string]string{"LPS_QUEUE": "a:x/+,b:y/#"}, want: []broker.Queue{{Group: "a", Filter: "x/+"}, {Group: "b", Filter: "y/#"}}},
		{name: "flag wins over env", args: []string{"--queue", "a:x"}, env: map[string]string{"LPS_QUEUE": "b:y"}, want: []broker.Queue{{Group: "a", Filter: "x"}}},
		{name: "quoted comma in a filter", args: []string{"--queue", `"a:x,y"`}, want: []broker.Queue{{Group: "a", Filter: "x,y"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &app{opts: Options{LookupEnv: env(tc.env)}}
			cmd := a.newBrokerCmd()
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			if err := applyEnv(cmd, a.opts.LookupEnv); err != nil {
				t.Fatal(err)
			}
			vals, err := cmd.Flags().GetStringSlice("queue")
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseQueues(vals)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || !slices.Equal(got, tc.want) {
				t.Errorf("queues %v (nil: %t), want %v", got, got == nil, tc.want)
			}
		})
	}
}

func TestBrokerInvalidQueueExits2NamingTheFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no colon", []string{"broker", "--queue", "bad"}, nil, `invalid --queue "bad"`},
		{"bad group", []string{"broker", "--queue", "a/b:x"}, nil, `invalid --queue "a/b:x"`},
		{"bad filter", []string{"broker", "--queue", "g:a/#/b"}, nil, `invalid --queue "g:a/#/b"`},
		{"one of several", []string{"broker", "--queue", "g:a", "--queue", "g:"}, nil, `invalid --queue "g:"`},
		{"none with others", []string{"broker", "--queue", "none,g:a"}, nil, "--queue"},
		{"twice", []string{"broker", "--queue", "g:a,g:a"}, nil, `invalid --queue "g:a": declared twice`},
		{"from env", []string{"broker"}, map[string]string{"LPS_QUEUE": "bad"}, `invalid --queue "bad"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Execute(NewRoot(Options{LookupEnv: env(tc.env), Stdout: &out, Stderr: &errOut}), tc.args)
			msg := errOut.String()
			if code != 2 || !strings.Contains(msg, tc.want) || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
				t.Errorf("exit %d, stderr %q: want exit 2 and one line containing %q", code, msg, tc.want)
			}
		})
	}
}

func TestBrokerHelpShowsDefaultQueues(t *testing.T) {
	var out bytes.Buffer
	if code := Execute(NewRoot(Options{Stdout: &out, Stderr: &out, LookupEnv: env(nil)}), []string{"broker", "--help"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--queue", "LPS_QUEUE", "legacy_proxy:+/message", "legacy_proxy:+/retry/message", "dead_letters:lps/dead-letter"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("broker --help lacks %q:\n%s", want, out.String())
		}
	}
}

// lps broker passwd end to end: a new file (0600) from standard input, a second user, a
// changed password from --password, and the errors that exit 2.
func TestBrokerPasswd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	run := func(stdin string, args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		root := NewRoot(Options{LookupEnv: env(nil), Stdout: &out, Stderr: &errOut})
		root.SetIn(strings.NewReader(stdin))
		return Execute(root, append([]string{"broker", "passwd"}, args...)), out.String(), errOut.String()
	}
	if code, out, errOut := run("first pw\n", path, "alice"); code != 0 || !strings.Contains(out, "set the password of alice") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the new file: %v, mode %v; want 0600", err, fi.Mode())
	}
	if code, _, errOut := run("", "--password", "bob pw", path, "bob"); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := run("second pw\r\n", path, "alice"); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	p, err := broker.LoadPasswordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, pass string
		want       bool
	}{{"alice", "second pw", true}, {"alice", "first pw", false}, {"bob", "bob pw", true}} {
		if got := p.Check([]byte(tc.user), []byte(tc.pass)); got != tc.want {
			t.Errorf("%s with %q: %t, want %t", tc.user, tc.pass, got, tc.want)
		}
	}

	for _, tc := range []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"colon in the user name", "pw\n", []string{path, "a:b"}, "has a colon"},
		{"empty password", "\n", []string{path, "carol"}, "the password is empty"},
		{"no standard input", "", []string{path, "carol"}, "reading the password from standard input"},
		{"one argument", "pw\n", []string{path}, "accepts 2 arg(s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := run(tc.stdin, tc.args...)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q: want a failure containing %q", code, errOut, tc.want)
			}
		})
	}
	if p, err := broker.LoadPasswordFile(path); err != nil || p.Check([]byte("carol"), []byte("pw")) {
		t.Errorf("a failed command changed the file: %v", err)
	}
}

// A bad --acl or --password-file stops the broker at start with the file and line.
func TestBrokerBadAccessFiles(t *testing.T) {
	dir := t.TempDir()
	acl := filepath.Join(dir, "acl")
	pw := filepath.Join(dir, "passwd")
	if err := os.WriteFile(acl, []byte("user a\ntopic read a/#\ntopc write b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte("a:not-a-hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		flag, file, want string
	}{
		{"--acl", acl, "ACL file " + acl + ", line 3: unknown keyword \"topc\""},
		{"--password-file", pw, "password file " + pw + ", line 1"},
	} {
		var out, errOut bytes.Buffer
		code := Execute(NewRoot(Options{LookupEnv: env(nil), Stdout: &out, Stderr: &errOut}),
			[]string{"broker", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-level", "error", tc.flag, tc.file})
		if code == 0 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want a failure containing %q", tc.flag, code, errOut.String(), tc.want)
		}
	}
}
