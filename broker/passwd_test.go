package broker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// hashFor returns a bcrypt hash of password at the lowest cost: tests need
// valid hashes, not slow ones.
func hashFor(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestParsePasswordFile(t *testing.T) {
	good := hashFor(t, "pw")
	for _, tc := range []struct {
		name, file, want string
	}{
		{"no colon", "# users\nalice " + good + "\n", `line 2: want user:bcrypt-hash`},
		{"empty user", ":" + good + "\n", "line 1: the user name is empty"},
		{"user with a space", "al ice:" + good + "\n", `line 1: user name "al ice" has a space`},
		{"twice", "a:" + good + "\n\nb:" + good + "\na:" + good + "\n", `line 4: user "a" is there twice`},
		{"not bcrypt", "a:$6$salt$hash\n", `line 1: the hash of user "a" is not a bcrypt hash`},
		{"empty hash", "a:\n", `line 1: the hash of user "a" is not a bcrypt hash`},
		{"truncated hash", "a:" + good[:len(good)-5] + "\n", `line 1: the hash of user "a" is not a bcrypt hash`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePasswordFile("pw", strings.NewReader(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "password file pw") {
				t.Errorf("error %v, want one naming the file and containing %q", err, tc.want)
			}
		})
	}

	p, err := ParsePasswordFile("pw", strings.NewReader("# c\n\n  alice:"+good+"  \nbob:"+hashFor(t, "other")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, pass string
		want       bool
	}{
		{"alice", "pw", true},
		{"alice", "wrong", false},
		{"alice", "", false},
		{"bob", "other", true},
		{"bob", "pw", false},
		{"carol", "pw", false},
	} {
		if got := p.Check([]byte(tc.user), []byte(tc.pass)); got != tc.want {
			t.Errorf("Check(%q, %q) = %t, want %t", tc.user, tc.pass, got, tc.want)
		}
	}
}

func TestSetPassword(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := SetPassword(path, "alice", "one"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("new file: %v, mode %v; want 0600", err, fi.Mode())
	}
	// Other lines, comments included, stay as they are; the user's hash is replaced.
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append([]byte("# my users\n"), data...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(path, "bob", "two"); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(path, "alice", "three"); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 3 || lines[0] != "# my users" || !strings.HasPrefix(lines[1], "alice:$2a$") || !strings.HasPrefix(lines[2], "bob:$2a$") {
		t.Fatalf("file:\n%s\nwant the comment, alice, bob", data)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v after a change, want the file's 0640 kept", fi.Mode())
	}
	p, err := LoadPasswordFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Check([]byte("alice"), []byte("three")) || p.Check([]byte("alice"), []byte("one")) || !p.Check([]byte("bob"), []byte("two")) {
		t.Error("the file does not hold alice:three and bob:two")
	}

	for _, tc := range []struct{ name, user, pass, want string }{
		{"colon in user", "a:b", "x", "has a colon"},
		{"empty password", "a", "", "the password is empty"},
		{"too long", "a", strings.Repeat("x", 73), "longer than 72 bytes"},
	} {
		if err := SetPassword(path, tc.user, tc.pass); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("alice:nohash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(bad, "bob", "x"); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("a malformed file: %v, want it left alone with an error naming the line", err)
	}
	if data, _ := os.ReadFile(bad); string(data) != "alice:nohash\n" {
		t.Errorf("the malformed file was changed: %q", data)
	}
}
