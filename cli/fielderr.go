package cli

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/spf13/pflag"

	"github.com/lpsdev/lps/config"
)

// flagError turns a role's *config.FieldError into the one-line error the command line promises:
// "invalid --<flag> <value>: <reason>", naming the flag of fs that sets the field. The roles
// validate their own Config; the command line only knows which flag fills which field. Other
// errors pass unchanged.
func flagError(fs *pflag.FlagSet, err error) error {
	var fe *config.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	name := flagFor(fs, fe.Field)
	if name == "" {
		return err
	}
	switch v := fe.Value.(type) {
	case nil:
		return fmt.Errorf("invalid --%s: %s", name, fe.Reason)
	case string:
		if v == "" {
			return fmt.Errorf("invalid --%s: %s", name, fe.Reason)
		}
		return fmt.Errorf("invalid --%s %q: %s", name, v, fe.Reason)
	default:
		return fmt.Errorf("invalid --%s %v: %s", name, v, fe.Reason)
	}
}

// flagFor names the flag of fs that sets the Config field at path: the kebab-case of the path
// or of its last parts ("Admin.Listen" is --admin-listen, "Admin.Backlog" --backlog), the name
// of the struct for a URL field ("Upstream.URL" is --upstream), a plural field's singular flag
// ("Queues" is --queue) and a file field's flag without "-file" ("MappingFile" is --mapping).
// "" when there is none.
func flagFor(fs *pflag.FlagSet, path string) string {
	parts := strings.Split(path, ".")
	var names []string
	for i := range parts {
		names = append(names, kebab(strings.Join(parts[i:], "")))
	}
	if n := len(parts); n > 1 && parts[n-1] == "URL" {
		names = append(names, kebab(parts[n-2]))
	}
	for _, n := range names {
		for _, cand := range []string{n, strings.TrimSuffix(n, "s"), strings.TrimSuffix(n, "-file")} {
			if fs.Lookup(cand) != nil {
				return cand
			}
		}
	}
	return ""
}

// kebab turns a Go field name into a flag name: MaxInflight is max-inflight; runs of capitals
// are one word (URL, QoS).
func kebab(s string) string {
	s = strings.ReplaceAll(s, "QoS", "Qos")
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		if unicode.IsUpper(r) && i > 0 && (unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1]) ||
			(i+1 < len(rs) && unicode.IsLower(rs[i+1]) && unicode.IsUpper(rs[i-1]))) {
			b.WriteByte('-')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
