package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// Password files (Config.PasswordFile): one "user:hash" per line, the hash a
// bcrypt one ($2a$, $2b$ or $2y$, as htpasswd -B and `lps broker passwd`
// write); lines starting with # and empty lines are ignored. Mosquitto's own
// hashes ($6$, $7$) are not read: bcrypt is what Go's x/crypto offers, and a
// hash the broker cannot check must fail at start, not at the first CONNECT.

// PasswordFile is a parsed password file: user names and their bcrypt hashes.
type PasswordFile struct {
	hashes map[string][]byte
}

// LoadPasswordFile reads and parses a password file.
func LoadPasswordFile(path string) (*PasswordFile, error) {
	return loadFile(path, "password file", ParsePasswordFile)
}

// ParsePasswordFile parses a password file; name is the file's name in error
// messages, which give the line.
func ParsePasswordFile(name string, r io.Reader) (*PasswordFile, error) {
	p := &PasswordFile{hashes: map[string][]byte{}}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		user, hash, found := strings.Cut(line, ":")
		switch {
		case !found:
			return nil, fmt.Errorf("password file %s, line %d: want user:bcrypt-hash (lps broker passwd writes one)", name, n)
		case ValidateUserName(user) != nil:
			return nil, fmt.Errorf("password file %s, line %d: %v", name, n, ValidateUserName(user))
		case p.hashes[user] != nil:
			return nil, fmt.Errorf("password file %s, line %d: user %q is there twice", name, n, user)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("password file %s, line %d: the hash of user %q is not a bcrypt hash ($2a$, $2b$ or $2y$): %v", name, n, user, err)
		}
		p.hashes[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading password file %s after line %d: %w", name, n, err)
	}
	return p, nil
}

// ValidateUserName checks a user name for a password file: not empty, UTF-8,
// no colon (it ends the name), no space or control character.
func ValidateUserName(user string) error {
	switch {
	case user == "":
		return errors.New("the user name is empty")
	case !utf8.ValidString(user):
		return fmt.Errorf("user name %q is not UTF-8", user)
	case strings.ContainsRune(user, ':'):
		return fmt.Errorf("user name %q has a colon, which ends the name in a password file", user)
	case strings.IndexFunc(user, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("user name %q has a space or a control character", user)
	}
	return nil
}

// dummyHash is compared with the password of an unknown user, so that a
// refusal takes as long whether or not the user exists.
var dummyHash = []byte("$2a$10$hmu0cWD3J/zH.04nSiXZHu/Coydo43rvCHX0HmvESxu3gCrIYHPZK")

// Check reports whether password is user's. An unknown user costs as much
// time as a wrong password.
func (p *PasswordFile) Check(user, password []byte) bool {
	hash, ok := p.hashes[string(user)]
	if !ok {
		_ = bcrypt.CompareHashAndPassword(dummyHash, password)
		return false
	}
	return bcrypt.CompareHashAndPassword(hash, password) == nil
}

// SetPassword adds user with password to the password file at path, or
// replaces its hash, leaving every other line as it is. A new file is
// created with mode 0600; the file is replaced atomically (a new file
// renamed over it), keeping its mode.
func SetPassword(path, user, password string) error {
	if err := ValidateUserName(user); err != nil {
		return err
	}
	if password == "" {
		return errors.New("the password is empty")
	}
	if len(password) > 72 {
		return errors.New("the password is longer than 72 bytes, bcrypt's limit")
	}
	mode := fs.FileMode(0o600)
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("reading password file: %w", err)
	default:
		if _, err := ParsePasswordFile(path, bytes.NewReader(old)); err != nil {
			return fmt.Errorf("not changing it: %w", err)
		}
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
		}
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return fmt.Errorf("hashing the password: %w", err)
	}
	entry := user + ":" + string(hash)
	var out []string
	replaced := false
	if len(old) > 0 {
		for _, line := range strings.Split(strings.TrimSuffix(string(old), "\n"), "\n") {
			if u, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && u == user && !strings.HasPrefix(strings.TrimSpace(line), "#") {
				line, replaced = entry, true
			}
			out = append(out, line)
		}
	}
	if !replaced {
		out = append(out, entry)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing password file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("writing password file: %w", err)
	}
	if _, err := tmp.WriteString(strings.Join(out, "\n") + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("writing password file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing password file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing password file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing password file: %w", err)
	}
	return nil
}
