package broker

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/lpsdev/lps/mqttconn"
)

// Access rules (Config.ACLFile) in Mosquitto's acl_file format, so that an
// operator writes what Mosquitto taught them:
//
//	# a comment
//	topic read status/#            # before the first user line: anonymous clients
//	user proxy2-1                  # the rules below apply to this user name
//	topic read $share/legacy_proxy/+/message
//	topic write proxy2-1/retry/message
//	pattern write %u/message       # every client; %u user name, %c client id
//
// "topic [read|write|readwrite|deny] <filter>": without an access word the
// rule grants readwrite, and the filter is the rest of the line (it may hold
// spaces). Everything no rule grants is refused. Mosquitto's order of
// evaluation: the client's own rules (its user's section, or the anonymous
// one), deny rules first, then the granting ones; then the patterns, deny
// first; the first rule that applies decides. A rule that does not start with
// $ never applies to a topic or filter that does (so "topic readwrite #" grants
// neither $SYS, nor $share subscriptions, nor $delayed publishes as such).
//
// Where Mosquitto says nothing, or checks only at delivery, the LPS decides:
//   - A subscription is checked when it is made, and refused (SUBACK 0x87 Not
//     authorized, or 0x80 when a deny rule refuses it) unless one rule grants
//     read on every topic its filter can match: "topic read a/+" grants the
//     filters a/+ and a/b, not a/#. A deny rule refuses the filters it holds
//     wholly (deny a/b refuses a/b, not a/+); a plain subscription that only
//     overlaps a deny rule is granted, and the denied topics are withheld from
//     it at delivery, as Mosquitto withholds them.
//   - A shared subscription $share/<group>/<filter> is checked first as that
//     whole string, which only rules starting with $share can match: "topic
//     read $share/legacy_proxy/+/message" lets a user join that group on that
//     filter, "topic deny $share/legacy_proxy/#" (or the same as a pattern, for
//     everyone without a grant of their own) keeps a user out. If no such rule
//     decides, it is checked as a subscription to <filter>, as Mosquitto does
//     (so "topic readwrite #" lets a client join any group). What a group
//     receives is not checked again per member: a group's message goes to
//     whichever member has room.
//   - A publish to $delayed/<seconds>/<topic> is checked as a write to
//     <topic>, the topic it will be published to (delayed.go).
//   - Retained messages sent on subscribing are checked as reads of their
//     topics.
//   - A will is checked at CONNECT as a publish of its client to its topic
//     (CONNACK 0x87 if refused), as Mosquitto does.

// accessMode is what a rule grants; 0 is a deny rule.
type accessMode uint8

const (
	accessRead accessMode = 1 << iota
	accessWrite
	accessDeny accessMode = 0
)

// verdict is the outcome of checking an access.
type verdict uint8

const (
	notGranted verdict = iota // no rule grants it: refused by default
	granted
	denied // a deny rule refuses it
)

type aclRule struct {
	mode   accessMode
	filter string
	levels []string
}

// ACL is a parsed access rule file.
type ACL struct {
	anonymous []aclRule            // rules before the first user line
	users     map[string][]aclRule // by user name
	patterns  []aclRule            // pattern lines, for every client
}

// LoadACL reads and parses an access rule file.
func LoadACL(path string) (*ACL, error) {
	return loadFile(path, "ACL file", ParseACL)
}

// loadFile opens path and parses it with parse, which names the file in its
// errors; what names the kind of file when it cannot be opened.
func loadFile[T any](path, what string, parse func(name string, r io.Reader) (T, error)) (T, error) {
	f, err := os.Open(path)
	if err != nil {
		var zero T
		return zero, fmt.Errorf("reading %s: %w", what, err)
	}
	defer f.Close()
	return parse(path, f)
}

// ParseACL parses access rules in Mosquitto's acl_file format (see above);
// name is the file's name in error messages, which give the line.
func ParseACL(name string, r io.Reader) (*ACL, error) {
	a := &ACL{users: map[string][]aclRule{}}
	user, inUser := "", false // the section the topic lines belong to
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("ACL file %s, line %d: %s", name, n, fmt.Sprintf(format, args...))
		}
		keyword, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch keyword {
		case "user":
			if rest == "" {
				return nil, fail("user needs a user name: user <name>")
			}
			// A second section for a user adds to the first, as in Mosquitto.
			user, inUser = rest, true
			if _, ok := a.users[user]; !ok {
				a.users[user] = nil
			}
		case "topic", "pattern":
			rule, err := parseRule(keyword, rest)
			if err != nil {
				return nil, fail("%v", err)
			}
			switch {
			case keyword == "pattern":
				a.patterns = append(a.patterns, rule)
			case inUser:
				a.users[user] = append(a.users[user], rule)
			default:
				a.anonymous = append(a.anonymous, rule)
			}
		default:
			return nil, fail("unknown keyword %q: want user, topic or pattern (a comment starts with #)", keyword)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading ACL file %s after line %d: %w", name, n, err)
	}
	return a, nil
}

// parseRule parses what follows "topic" or "pattern": an optional access word
// and a topic filter, the rest of the line.
func parseRule(keyword, rest string) (aclRule, error) {
	rule := aclRule{mode: accessRead | accessWrite}
	word, filter, _ := strings.Cut(rest, " ")
	switch word {
	case "read":
		rule.mode = accessRead
	case "write":
		rule.mode = accessWrite
	case "readwrite":
	case "deny":
		rule.mode = accessDeny
	default:
		filter = rest // no access word: the whole rest is the filter, granted readwrite
	}
	filter = strings.TrimSpace(filter)
	if filter == "" {
		return rule, fmt.Errorf("%s needs a topic filter: %s [read|write|readwrite|deny] <filter>", keyword, keyword)
	}
	if err := mqttconn.ValidateFilter(filter); err != nil {
		return rule, err
	}
	rule.filter = filter
	rule.levels = strings.Split(filter, "/")
	hasSubst := func(l string) bool { return strings.Contains(l, "%c") || strings.Contains(l, "%u") }
	for _, l := range rule.levels {
		switch {
		case keyword == "topic" && hasSubst(l):
			// Mosquitto would take it literally, which is never what was meant.
			return rule, fmt.Errorf("topic %q: %%c and %%u are substituted in pattern lines only", filter)
		case hasSubst(l) && l != "%c" && l != "%u":
			return rule, fmt.Errorf("pattern %q: %%c and %%u must each be a whole level", filter)
		}
	}
	return rule, nil
}

// check decides whether a client may read (subscribe to, receive) or write
// (publish to) filter, a topic filter or a topic name. user is its
// authenticated user name ("" with anonymous), clientID its client id.
func (a *ACL) check(user string, anonymous bool, clientID, filter string, want accessMode) verdict {
	v := a.checkOne(user, anonymous, clientID, filter, want)
	if v != notGranted {
		return v
	}
	// A shared subscription no $share rule decides is a subscription to its
	// filter (Mosquitto checks only that, when it delivers).
	if _, inner, ok, err := mqttconn.SplitShared(filter); ok && err == nil {
		return a.checkOne(user, anonymous, clientID, inner, want)
	}
	return notGranted
}

// checkOne is check without the fallback of shared subscriptions.
func (a *ACL) checkOne(user string, anonymous bool, clientID, filter string, want accessMode) verdict {
	f := strings.Split(filter, "/")
	own := a.anonymous
	if !anonymous {
		own = a.users[user]
	}
	if v, ok := decide(own, f, filter, want, nil); ok {
		return v
	}
	if len(a.patterns) == 0 {
		return notGranted
	}
	// A client id or user name with a wildcard would turn a pattern into a
	// wider filter than its owner's: Mosquitto refuses such clients every
	// pattern, and so do we.
	if strings.ContainsAny(clientID, "+#") || strings.ContainsAny(user, "+#") {
		return notGranted
	}
	subst := func(l string) (string, bool) {
		switch l {
		case "%c":
			return clientID, true
		case "%u":
			return user, !anonymous // a pattern naming the user does not apply to anonymous clients
		}
		return l, true
	}
	if v, ok := decide(a.patterns, f, filter, want, subst); ok {
		return v
	}
	return notGranted
}

// decide applies rules, deny rules first, to filter (split into f): ok false
// means none applies. subst, if not nil, replaces pattern levels (false: the
// rule does not apply).
func decide(rules []aclRule, f []string, filter string, want accessMode, subst func(string) (string, bool)) (verdict, bool) {
	for _, deny := range []bool{true, false} {
		for _, r := range rules {
			if (r.mode == accessDeny) != deny || (!deny && r.mode&want == 0) {
				continue
			}
			// A rule that does not start with $ does not apply to a filter or
			// topic that does (Mosquitto; MQTT 4.7.2 for wildcards).
			if strings.HasPrefix(filter, "$") && !strings.HasPrefix(r.filter, "$") {
				continue
			}
			levels := r.levels
			if subst != nil {
				var ok bool
				if levels, ok = substitute(r.levels, subst); !ok {
					continue
				}
			}
			if covers(levels, f) {
				if deny {
					return denied, true
				}
				return granted, true
			}
		}
	}
	return notGranted, false
}

func substitute(levels []string, subst func(string) (string, bool)) ([]string, bool) {
	out := make([]string, len(levels))
	for i, l := range levels {
		s, ok := subst(l)
		if !ok {
			return nil, false
		}
		out[i] = s
	}
	return out, true
}

// covers reports whether every topic that filter f matches is matched by
// rule r (both split into levels). For a topic name this is r matching it.
func covers(r, f []string) bool {
	for i, rl := range r {
		if rl == "#" {
			return true // the rest, the parent level included: a/# matches a
		}
		if i >= len(f) {
			return false
		}
		switch fl := f[i]; {
		case fl == "#":
			return false // f reaches any depth below here; r does not
		case rl == "+":
			continue
		case fl == "+" || fl != rl:
			return false
		}
	}
	return len(r) == len(f)
}
