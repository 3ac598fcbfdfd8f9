package mqttconn

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// sharePrefix starts an MQTT v5 shared subscription filter: $share/<group>/<filter>.
const sharePrefix = "$share/"

// ValidateTopic checks a topic name to publish to: not empty, UTF-8 without NUL, no wildcards,
// not one of the broker's $ topics, at most 65535 bytes.
func ValidateTopic(topic string) error {
	if err := validateString(topic); err != nil {
		return fmt.Errorf("topic %q %w", topic, err)
	}
	if strings.ContainsAny(topic, "+#") {
		return fmt.Errorf("topic %q contains a wildcard (+ or #); a message is published to one topic", topic)
	}
	if strings.HasPrefix(topic, "$") {
		return fmt.Errorf("topic %q starts with $, which is reserved for the broker", topic)
	}
	return nil
}

// ValidateFilter checks a topic filter to subscribe to (without a $share prefix): not empty,
// UTF-8 without NUL, + only as a whole level, # only as the whole last level.
func ValidateFilter(filter string) error {
	if err := validateString(filter); err != nil {
		return fmt.Errorf("topic filter %q %w", filter, err)
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch {
		case strings.Contains(l, "#") && (l != "#" || i != len(levels)-1):
			return fmt.Errorf("topic filter %q: # must be the whole last level", filter)
		case strings.Contains(l, "+") && l != "+":
			return fmt.Errorf("topic filter %q: + must be a whole level", filter)
		}
	}
	return nil
}

func validateString(s string) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > 65535:
		return errors.New("is longer than 65535 bytes")
	case !utf8.ValidString(s):
		return errors.New("is not valid UTF-8")
	case strings.ContainsRune(s, 0):
		return errors.New("contains NUL")
	}
	return nil
}

// SplitShared splits a shared subscription filter "$share/<group>/<filter>" into its group and
// filter. A filter without the prefix is returned as it is, with group "" and ok false.
func SplitShared(s string) (group, filter string, ok bool, err error) {
	if !strings.HasPrefix(s, sharePrefix) {
		return "", s, false, nil
	}
	group, filter, found := strings.Cut(strings.TrimPrefix(s, sharePrefix), "/")
	if !found || filter == "" {
		return "", "", false, fmt.Errorf("shared subscription %q has no topic filter after the group (want $share/<group>/<filter>)", s)
	}
	if err := ValidateShareGroup(group); err != nil {
		return "", "", false, fmt.Errorf("shared subscription %q: %w", s, err)
	}
	return group, filter, true, nil
}

// ValidateShareGroup checks a shared subscription group name: not empty, no /, + or #.
func ValidateShareGroup(group string) error {
	if group == "" || strings.ContainsAny(group, "/+#") || validateString(group) != nil {
		return fmt.Errorf("share group %q must be a non-empty UTF-8 name without /, + or #", group)
	}
	return nil
}

// SharedFilter returns "$share/<group>/<filter>".
func SharedFilter(group, filter string) string { return sharePrefix + group + "/" + filter }

// Match reports whether topic filter matches topic name (MQTT 4.7: + is one level, # the
// rest; a filter starting with a wildcard does not match a $ topic).
func Match(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(t) || (l != "+" && l != t[i]) {
			return false
		}
	}
	return len(f) == len(t)
}
