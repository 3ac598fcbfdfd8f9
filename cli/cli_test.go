package cli

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/lpsdev/lps/roles"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// testCmd is a command with the flags of an HTTP role that forwards upstream.
func testCmd() (*cobra.Command, *roles.Server, *roles.Upstream, *upstreamFlags) {
	var srv roles.Server
	var up roles.Upstream
	cmd := &cobra.Command{Use: "x"}
	addServerFlags(cmd.Flags(), &srv, "listen", ":8080", "svc")
	uf := addUpstreamFlags(cmd.Flags(), &up, "test")
	return cmd, &srv, &up, uf
}

func TestEnvironmentFillsFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		listen  string
		url     string
		http2   bool
		noCache bool
		svc     string
	}{
		{name: "defaults", listen: ":8080", svc: "svc"},
		{name: "original names", env: map[string]string{"TARGET_URL": "http://a:1", "USE_HTTP_2": "yes", "SKIP_DNS_CACHE": "1", "SERVICE_NAME": "ars-comp-2-1", "HTTP_HOST": "127.0.0.1", "HTTP_PORT": "9000"},
			listen: "127.0.0.1:9000", url: "http://a:1", http2: true, noCache: true, svc: "ars-comp-2-1"},
		{name: "port only", env: map[string]string{"HTTP_PORT": "9001"}, listen: "0.0.0.0:9001", svc: "svc"},
		{name: "LPS_ names win over original ones", env: map[string]string{"TARGET_URL": "http://a:1", "LPS_UPSTREAM": "http://b:2", "LPS_LISTEN": ":7000", "HTTP_PORT": "9"},
			listen: ":7000", url: "http://b:2", svc: "svc"},
		{name: "flag wins over env", args: []string{"--upstream", "http://c:3", "--http2=false", "--listen", ":1"},
			env:    map[string]string{"TARGET_URL": "http://a:1", "USE_HTTP_2": "true", "HTTP_PORT": "9"},
			listen: ":1", url: "http://c:3", svc: "svc"},
		{name: "skip dns cache false keeps it", env: map[string]string{"SKIP_DNS_CACHE": "false"}, listen: ":8080", svc: "svc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, srv, up, uf := testCmd()
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			a := &app{opts: Options{LookupEnv: env(tc.env)}}
			if err := applyEnv(cmd, a.opts.LookupEnv); err != nil {
				t.Fatal(err)
			}
			if err := a.listenEnv(cmd); err != nil {
				t.Fatal(err)
			}
			uf.cfg.NoDNSCache = !uf.dnsCache
			if srv.Listen != tc.listen || up.URL != tc.url || up.HTTP2 != tc.http2 || up.NoDNSCache != tc.noCache || srv.ServiceName != tc.svc {
				t.Errorf("got listen %q url %q http2 %v nocache %v svc %q", srv.Listen, up.URL, up.HTTP2, up.NoDNSCache, srv.ServiceName)
			}
		})
	}
}

// dataDir is the original's data beside the repository, which lps experiment reads.
const dataDir = "../../shared/data/rast"

func TestInvalidConfigurationStopsWithOneLineNamingTheFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"malformed url", []string{"comp2", "--upstream", "not a url"}, nil, "--upstream"},
		{"missing url", []string{"comp1"}, nil, "--upstream"},
		{"url from env", []string{"comp2"}, map[string]string{"TARGET_URL": "ftp://x"}, "--upstream"},
		{"port out of range", []string{"comp2", "--upstream", "http://a", "--listen", ":70000"}, nil, "--listen"},
		{"env port out of range", []string{"comp2", "--upstream", "http://a"}, map[string]string{"HTTP_PORT": "99999"}, "HTTP_PORT"},
		{"bad bool env", []string{"comp2", "--upstream", "http://a"}, map[string]string{"USE_HTTP_2": "maybe"}, "--http2 from $USE_HTTP_2"},
		{"bad backlog", []string{"rast-sim", "--backlog", "x"}, nil, "--backlog"},
		{"bad backlog env", []string{"rast-sim"}, map[string]string{"LPS_BACKLOG": "-5"}, "--backlog"},
		{"bad log format", []string{"rast-sim", "--log-format", "xml", "--listen", "127.0.0.1:0"}, nil, "log format"},
		{"unknown topology", []string{"up", "--topology", "mesh"}, nil, "mesh"},
		{"upstream list with a bad entry", []string{"mqtt2http", "--broker", "mqtt://b:1883", "--upstream", "http://a,ftp://b"}, nil, "--upstream"},
		{"upstream listed twice", []string{"comp1", "--upstream", "http://a,http://a"}, nil, "twice"},
		{"negative forward timeout", []string{"comp2", "--upstream", "http://a", "--forward-timeout", "-1s"}, nil, "--forward-timeout"},
		{"max inflight too large", []string{"mqtt2http", "--broker", "mqtt://b:1883", "--upstream", "http://a", "--max-inflight", "70000"}, nil, "invalid --max-inflight 70000"},
		{"qos 0", []string{"http2mqtt", "--qos", "0", "--broker", "mqtt://b:1883", "--qos", "3"}, nil, "invalid --qos 3"},
		{"bad broker url", []string{"http2mqtt", "--broker", "http://b"}, nil, "invalid --broker"},
		{"negative session expiry", []string{"mqtt2http", "--broker", "mqtt://b:1883", "--upstream", "http://a", "--session-expiry", "-1s"}, nil, "invalid --session-expiry -1s"},
		{"retry max below base", []string{"mqtt2http", "--broker", "mqtt://b:1883", "--upstream", "http://a", "--retry-base", "5s", "--retry-max", "1s"}, nil, "invalid --retry-max 1s"},
		{"broker admin port", []string{"broker", "--admin-listen", "127.0.0.1:99999"}, nil, "invalid --admin-listen"},
		{"rast-sim model", []string{"rast-sim", "--model", "fast"}, nil, "invalid --model \"fast\""},
		{"negative dedup window", []string{"comp2", "--upstream", "http://a", "--dedup-window", "-1s"}, nil, "invalid --dedup-window -1s"},
		{"negative max attempts", []string{"mqtt2http", "--broker", "mqtt://b:1883", "--upstream", "http://a", "--max-attempts", "-1"}, nil, "invalid --max-attempts -1"},
		{"unknown delayed publish", []string{"mqtt2http", "--broker", "mqtt://b:1883", "--upstream", "http://a", "--delayed-publish", "maybe"}, nil, "invalid --delayed-publish"},
		{"dead letters limit", []string{"dead-letters", "--limit", "70000"}, nil, "invalid --limit 70000"},
		{"dead letters idle", []string{"dead-letters", "--idle", "-1s"}, nil, "invalid --idle -1s"},
		{"dead letters to without replay", []string{"dead-letters", "--to", "a/b"}, nil, "--to \"a/b\" needs --replay"},
		{"dead letters bad to", []string{"dead-letters", "--replay", "--to", "a/#"}, nil, "invalid --to"},
		{"dead letters bad broker", []string{"dead-letters", "--broker", "http://x"}, nil, "invalid --broker"},
		{"dead letters timeout", []string{"dead-letters", "--timeout", "0s"}, nil, "invalid --timeout"},
		{"unknown experiment", []string{"experiment", "chaos"}, nil, `unknown experiment "chaos"`},
		{"experiment topology", []string{"experiment", "failover", "--topology", "mesh"}, nil, "invalid --topology"},
		{"experiment data", []string{"experiment", "failover", "--data", "/nonexistent"}, nil, "invalid --data"},
		{"experiment time scale", []string{"experiment", "failover", "--data", dataDir, "--time-scale", "-1"}, nil, "invalid --time-scale -1"},
		{"experiment target", []string{"experiment", "failover", "--data", dataDir, "--target", "k8s"}, nil, `invalid --target "k8s": unknown target`},
		{"experiment steps", []string{"experiment", "performance", "--data", dataDir, "--max-steps", "-2"}, nil, "invalid --max-steps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			root := NewRoot(Options{LookupEnv: env(tc.env), Stdout: &out, Stderr: &errOut})
			code := Execute(root, tc.args)
			msg := errOut.String()
			if code == 0 || !strings.Contains(msg, tc.want) || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
				t.Errorf("exit %d, stderr %q: want a non-zero exit and one line containing %q", code, msg, tc.want)
			}
		})
	}
}

func TestHelpListsRoles(t *testing.T) {
	var out bytes.Buffer
	root := NewRoot(Options{Stdout: &out, Stderr: &out, LookupEnv: env(nil)})
	if code := Execute(root, []string{"--help"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"rast-sim", "comp1", "comp2", "up", "probe", "version", "Examples:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	Execute(NewRoot(Options{Stdout: &out, Stderr: &out, LookupEnv: env(nil)}), []string{"comp2", "--help"})
	for _, want := range []string{"TARGET_URL", "LPS_UPSTREAM", "SKIP_DNS_CACHE", "USE_HTTP_2", "SERVICE_NAME"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("comp2 help lacks %q", want)
		}
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := Execute(NewRoot(Options{Version: "v9.9.9", Stdout: &out, LookupEnv: env(nil)}), []string{"version"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.HasPrefix(out.String(), "lps v9.9.9 (commit ") {
		t.Errorf("version printed %q", out.String())
	}
}

// TestCPUProfile: --cpuprofile (or LPS_CPUPROFILE) writes a profile of the command's run, a
// nested command's too; a file that cannot be created stops the command before it runs, exit 2,
// naming the flag.
func TestCPUProfile(t *testing.T) {
	dir := t.TempDir()
	prof := filepath.Join(dir, "version.prof")
	var out, errOut bytes.Buffer
	if code := Execute(NewRoot(Options{Stdout: &out, Stderr: &errOut, LookupEnv: env(nil)}), []string{"version", "--cpuprofile", prof}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	isProfile := func(path string) {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f) // a pprof profile is a gzipped protocol buffer
		if err != nil {
			t.Fatalf("%s is not a profile: %v", path, err)
		}
		body, err := io.ReadAll(zr)
		if err != nil || !bytes.Contains(body, []byte("nanoseconds")) {
			t.Errorf("%s: %v, %d bytes without the CPU profile's unit", path, err, len(body))
		}
	}
	isProfile(prof)

	passwd := filepath.Join(dir, "passwd")
	nested := filepath.Join(dir, "passwd.prof")
	args := []string{"broker", "passwd", passwd, "alice", "--password", "s3cret"}
	if code := Execute(NewRoot(Options{Stdout: &out, Stderr: &errOut, LookupEnv: env(map[string]string{"LPS_CPUPROFILE": nested})}), args); code != 0 {
		t.Fatalf("broker passwd: exit %d: %s", code, errOut.String())
	}
	isProfile(nested)

	errOut.Reset()
	bad := filepath.Join(dir, "missing", "x.prof")
	if code := Execute(NewRoot(Options{Stdout: &out, Stderr: &errOut, LookupEnv: env(nil)}), []string{"broker", "passwd", passwd, "bob", "--password", "x", "--cpuprofile", bad}); code != 2 {
		t.Errorf("unwritable --cpuprofile: exit %d, want 2", code)
	}
	if !strings.Contains(errOut.String(), "--cpuprofile") || !strings.Contains(errOut.String(), bad) {
		t.Errorf("error %q does not name the flag and the file", errOut.String())
	}
	if data, _ := os.ReadFile(passwd); bytes.Contains(data, []byte("bob:")) {
		t.Error("the command ran although its profile could not be written")
	}
}
