package mqttconn

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseBroker: a broker URL either fails with an error that says so, or parses into a
// plain or TLS URL with a host and a port in range and nothing else, which parses again into
// itself.
func FuzzParseBroker(f *testing.F) {
	for _, seed := range []string{
		"mqtt://broker", "tcp://10.0.0.1:1884", "MQTTS://Broker:1883/", "ssl://[::1]", "tls://[fe80::1%25eth0]:8883",
		"mqtt://alice:s3cret@broker", "mqtt://u:p@ss@broker", "mqtt://broker:", "mqtt://broker:0", "mqtt://:1883",
		"mqtt://broker/topic", "mqtt://broker?x=1", "mqtt://broker#f", "ws://broker", "broker:1883", "", " ",
		"mqtt:broker", "mqtt:///x", "mqtt://b%41d", "mqtt://[::1", "mqtt://u:hunter2@broker:abc",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		b, err := ParseBroker(raw)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "invalid broker URL ") {
				t.Fatalf("error %q does not say the broker URL is invalid", err)
			}
			return
		}
		u := b.URL
		if (u.Scheme != "mqtt" && u.Scheme != "tls") || b.TLS != (u.Scheme == "tls") {
			t.Fatalf("%q: scheme %q with TLS %v", raw, u.Scheme, b.TLS)
		}
		if u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			t.Fatalf("%q parsed into %#v, which has more than host and port", raw, u)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" {
			t.Fatalf("%q: host %q is not host:port (%v)", raw, u.Host, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			t.Fatalf("%q: port %q out of range", raw, port)
		}
		again, err := ParseBroker(b.String())
		if err != nil || again.URL.String() != u.String() || again.TLS != b.TLS {
			t.Fatalf("%q parsed into %s, which parses into %v (%v)", raw, b, again.URL, err)
		}
	})
}

// TestParseBrokerNeverShowsPassword: what FuzzParseBrokerRedacts found, and what it guards.
func TestParseBrokerNeverShowsPassword(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"mqtt://u:hunter2@broker:abc", `"mqtt://u:xxxxx@broker:abc": cannot be parsed`},
		{"mqtt://u:hunter/2@broker", `"mqtt://u:xxxxx@broker": cannot be parsed`},
		{"mqtt://u:hunter%zz@broker", `"mqtt://u:xxxxx@broker": cannot be parsed`},
		{"mqtt://u:1883/hunter2@broker", `"mqtt://u:xxxxx@broker": has a path;`},
		{"mqtt://u:99999/hunter2@broker", `"mqtt://u:xxxxx@broker": has a path;`},
		{"mqtt://u:hunter2@broker/x", `"mqtt://u:xxxxx@broker/x": has a path;`},
		{"u:hunter2@broker", `"u:xxxxx@broker": has no scheme`},
	} {
		_, err := ParseBroker(tc.raw)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter") {
			t.Errorf("%s: error %v, want one with %s and without the password", tc.raw, err, tc.want)
		}
	}
	for _, raw := range []string{"mqtt://]", "tcp://::1", "mqtt://a]b", "mqtt://[::1%25]"} {
		if b, err := ParseBroker(raw); err == nil {
			t.Errorf("%s parsed into %s; it names no host", raw, b)
		}
	}
}

// FuzzParseBrokerRedacts: whatever is wrong with a broker URL that carries a password, the
// error does not show the password (it is logged and printed at start).
func FuzzParseBrokerRedacts(f *testing.F) {
	for _, seed := range [][4]string{
		{"mqtt", "u", "hunter2", "broker:abc"},
		{"mqtt", "u", "hunter2", "broker/x"},
		{"mqtt", "u", "hunter2", "broker?x=1"},
		{"mqtt", "u", "hunter/2", "broker"},
		{"mqtt", "u", "hunter?2", "broker"},
		{"mqtt", "u", "hun#ter2", "broker"},
		{"mqtt", "u", "hunter2", ""},
		{"http", "u", "hunter2", "broker"},
		{"mqtt", "u", "hunter%zz", "broker"},
		{"mqtt", "u", "hunt er2", "broker"},
		{"mqtt", "", "hunter2", "broker:99999"},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3])
	}
	f.Fuzz(func(t *testing.T, scheme, user, pass, rest string) {
		// The password is what follows the first ":" of the user information. A shorter one
		// could appear in the message by chance, one that occurs in the URL twice would, and one
		// with an x could be made up by "xxxxx", the redaction, and what surrounds it. The other
		// parts keep to characters that no URL encoding changes, so that an escape such as %00
		// cannot make up the password either.
		raw := scheme + "://" + user + ":" + pass + "@" + rest
		if len(pass) < 6 || strings.Count(raw, pass) != 1 || strings.Contains(pass, "x") ||
			!plain(scheme, "+-.") || !plain(user, "-._~") || !plain(rest, "-._~!$&'()*+,;=:@/?#[]") {
			return
		}
		_, err := ParseBroker(raw)
		if err == nil {
			return
		}
		// The message is `invalid broker URL "<url>": <detail>`; the URL is compared unquoted, as
		// quoting may make text that looks like the password (\xd0 followed by 00000).
		msg := strings.TrimPrefix(err.Error(), "invalid broker URL ")
		quoted, qerr := strconv.QuotedPrefix(msg)
		if qerr != nil {
			t.Fatalf("error %q does not quote the URL", err)
		}
		shown, _ := strconv.Unquote(quoted)
		if strings.Contains(shown, pass) || strings.Contains(msg[len(quoted):], pass) {
			t.Fatalf("the error for %q shows the password: %v", raw, err)
		}
	})
}

// plain reports whether s has only ASCII letters, digits and the bytes of extra.
func plain(s, extra string) bool {
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return true
}

// FuzzMatch: Match agrees with a direct reading of MQTT 4.7 for every valid filter and topic:
// + matches exactly one level, # the rest (also none, matching the parent), and a filter
// starting with a wildcard does not match a topic starting with $.
func FuzzMatch(f *testing.F) {
	for _, seed := range [][2]string{
		{"+/message", "proxy1/message"}, {"+/retry/message", "proxy1/retry/message"}, {"#", "$SYS/x"},
		{"sport/#", "sport"}, {"sport/+", "sport/"}, {"+/+", "/"}, {"+", ""}, {"a/b", "a/b/c"}, {"$SYS/#", "$SYS"},
		{"lps/dead-letter", "lps/dead-letter"}, {"+/message", "lps/dead-letter"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, filter, topic string) {
		if ValidateFilter(filter) != nil || validateString(topic) != nil || strings.ContainsAny(topic, "+#") {
			return
		}
		want := matchLevels(strings.Split(filter, "/"), strings.Split(topic, "/"))
		if strings.HasPrefix(topic, "$") && strings.ContainsAny(filter[:1], "+#") {
			want = false
		}
		if got := Match(filter, topic); got != want {
			t.Fatalf("Match(%q, %q) = %v, want %v", filter, topic, got, want)
		}
		if !strings.ContainsAny(filter, "+#") && Match(filter, topic) != (filter == topic) {
			t.Fatalf("Match(%q, %q) without wildcards is not equality", filter, topic)
		}
	})
}

// matchLevels matches filter levels against topic levels recursively.
func matchLevels(f, t []string) bool {
	switch {
	case len(f) == 0:
		return len(t) == 0
	case f[0] == "#":
		return true
	case len(t) == 0:
		return false
	case f[0] == "+" || f[0] == t[0]:
		return matchLevels(f[1:], t[1:])
	default:
		return false
	}
}
