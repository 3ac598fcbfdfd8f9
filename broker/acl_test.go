package broker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseACLErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"unknown keyword", "topic read a\nallow a/b\n", `line 2: unknown keyword "allow"`},
		{"user without name", "# c\nuser\n", "line 2: user needs a user name"},
		{"user with only spaces", "user   \n", "line 1: user needs a user name"},
		{"topic without filter", "topic\n", "line 1: topic needs a topic filter"},
		{"topic with access but no filter", "user u\ntopic read\n", "line 2: topic needs a topic filter"},
		{"pattern without filter", "pattern deny \n", "line 1: pattern needs a topic filter"},
		{"invalid filter", "\n\ntopic read a/#/b\n", "line 3: topic filter \"a/#/b\": # must be the whole last level"},
		{"plus inside a level", "topic a+/b\n", "line 1: topic filter \"a+/b\": + must be a whole level"},
		{"substitution in a topic line", "topic write %c/x\n", "line 1: topic \"%c/x\": %c and %u are substituted in pattern lines only"},
		{"substitution within a level", "pattern write x/a%u\n", "line 1: pattern \"x/a%u\": %c and %u must each be a whole level"},
		{"line too long", "topic " + strings.Repeat("a", 2<<20) + "\n", "reading ACL file acl after line 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseACL("acl", strings.NewReader(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ACL file acl") {
				t.Errorf("error %v, want one naming the file and containing %q", err, tc.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "nope")
		if _, err := LoadACL(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("error %v, want one naming %s", err, path)
		}
	})
	t.Run("New names the file and line", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "acl")
		if err := os.WriteFile(path, []byte("user a\ntopic rw x\ntopic bogus/#/x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := New(Config{Address: "127.0.0.1:0", ACLFile: path})
		if err == nil || !strings.Contains(err.Error(), "ACL file "+path+", line 3") {
			t.Errorf("New: %v, want an error naming %s, line 3", err, path)
		}
	})
}

// The rules of Mosquitto's acl_file as the package documentation (acl.go)
// states them, and the LPS's decisions where Mosquitto has none.
func TestACLCheck(t *testing.T) {
	const file = `# anonymous clients
topic read public/#
topic readwrite anon/rw
topic deny public/secret

user alice
topic read a/#
topic write a/in
topic deny a/private/#
topic b/both
topic read $share/g1/jobs/+
topic deny $share/g3/#
topic read $SYS/#
# a second section of alice adds to the first
user bob
topic write bob/out
topic read $share/locked/x
user alice
topic read later/x

pattern read users/%u/#
pattern write clients/%c/status
pattern deny a/denied-by-pattern
pattern deny $share/locked/#
`
	acl, err := ParseACL("acl", strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	const anon = "" // user "" with anonymous true
	for _, tc := range []struct {
		user   string
		client string
		filter string
		mode   accessMode
		want   verdict
	}{
		// Anonymous rules apply to anonymous clients only.
		{anon, "c", "public/news", accessRead, granted},
		{anon, "c", "public/#", accessRead, granted},
		{anon, "c", "public/news", accessWrite, notGranted},
		{anon, "c", "anon/rw", accessWrite, granted},
		{anon, "c", "anon/rw", accessRead, granted},
		{anon, "c", "public/secret", accessRead, denied},
		{anon, "c", "public/+", accessRead, granted}, // overlaps the deny rule only partly
		{"alice", "c", "public/news", accessRead, notGranted},

		// A user's rules; containment for filters.
		{"alice", "c", "a/x/y", accessRead, granted},
		{"alice", "c", "a/+", accessRead, granted},
		{"alice", "c", "a/#", accessRead, granted},
		{"alice", "c", "a", accessRead, granted}, // a/# matches its parent
		{"alice", "c", "#", accessRead, notGranted},
		{"alice", "c", "+/x", accessRead, notGranted},
		{"alice", "c", "a/in", accessWrite, granted},
		{"alice", "c", "a/out", accessWrite, notGranted},
		{"alice", "c", "a/private/x", accessRead, denied},
		{"alice", "c", "a/private/#", accessRead, denied},
		{"alice", "c", "a/private", accessRead, denied},
		{"alice", "c", "b/both", accessWrite, granted},
		{"alice", "c", "b/both", accessRead, granted},
		{"alice", "c", "later/x", accessRead, granted},
		{"bob", "c", "bob/out", accessWrite, granted},
		{"bob", "c", "a/x", accessRead, notGranted},
		{"carol", "c", "a/x", accessRead, notGranted}, // a user with no section

		// $ topics and filters: only rules starting with $ apply.
		{"alice", "c", "$share/g1/jobs/+", accessRead, granted},
		{"alice", "c", "$share/g1/jobs/x", accessRead, granted},
		{"alice", "c", "$share/g1/jobs/#", accessRead, notGranted},
		{"alice", "c", "$share/g2/jobs/+", accessRead, notGranted},
		// A shared subscription no $share rule decides is one to its filter.
		{"alice", "c", "$share/g1/a/x", accessRead, granted},
		{"alice", "c", "$share/any/a/#", accessRead, granted},
		{"alice", "c", "$share/g3/a/x", accessRead, denied},
		{"alice", "c", "$share/g1/a/private/x", accessRead, denied},
		{anon, "c", "$share/g/public/news", accessRead, granted},
		{"bob", "c", "$share/locked/x", accessRead, granted}, // its own grant before the patterns' deny
		{"alice", "c", "$share/locked/a/x", accessRead, denied},
		{anon, "c", "$share/locked/public/x", accessRead, denied},
		{"alice", "c", "$SYS/broker/uptime", accessRead, granted},
		{anon, "c", "$SYS/broker/uptime", accessRead, notGranted},

		// Patterns: every user, %u and %c substituted.
		{"alice", "c", "users/alice/inbox", accessRead, granted},
		{"alice", "c", "users/bob/inbox", accessRead, notGranted},
		{anon, "c", "users//inbox", accessRead, notGranted}, // %u does not apply to anonymous clients
		{"bob", "dev-1", "clients/dev-1/status", accessWrite, granted},
		{"bob", "dev-1", "clients/dev-2/status", accessWrite, notGranted},
		{anon, "dev-1", "clients/dev-1/status", accessWrite, granted},
		{"bob", "dev+", "clients/dev+/status", accessWrite, notGranted}, // a wildcard in a client id gets no pattern
		{"bob", "c", "a/denied-by-pattern", accessRead, denied},
		// Mosquitto's order: the user's own grant is decided before the patterns' deny.
		{"alice", "c", "a/denied-by-pattern", accessRead, granted},
	} {
		got := acl.check(tc.user, tc.user == anon, tc.client, tc.filter, tc.mode)
		if got != tc.want {
			t.Errorf("user %q client %q %s %q: %v, want %v", tc.user, tc.client, modeName(tc.mode), tc.filter, got, tc.want)
		}
	}
}

func modeName(m accessMode) string {
	if m == accessWrite {
		return "write"
	}
	return "read"
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		rule, filter string
		want         bool
	}{
		{"#", "a/b/c", true},
		{"#", "a/#", true},
		{"a/#", "a", true},
		{"a/#", "a/+/c", true},
		{"a/+", "a/b", true},
		{"a/+", "a/+", true},
		{"a/+", "a/#", false},
		{"a/+", "a", false},
		{"a/+", "a/b/c", false},
		{"a/+/#", "a/#", false},
		{"a/b", "a/+", false},
		{"+/+", "a/b", true},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
	} {
		if got := covers(strings.Split(tc.rule, "/"), strings.Split(tc.filter, "/")); got != tc.want {
			t.Errorf("covers(%q, %q) = %t, want %t", tc.rule, tc.filter, got, tc.want)
		}
	}
}
