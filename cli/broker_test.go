package cli

import (
	"bytes"
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
