package logging

import (
	"errors"
	"fmt"
)

// MaxServiceNameLen bounds a service name: it becomes a file name (with ".log" and
// lumberjack's backup timestamp added, far below the usual 255-byte limit) and an MQTT
// client id (with "-retry" added).
const MaxServiceNameLen = 128

// CheckServiceName returns an error unless name is safe as a file name inside the log
// directory: 1 to MaxServiceNameLen letters (ASCII), digits, '-', '_' and '.', not starting
// with '.'. A name such as "../x" or "/etc/x" would otherwise put the log file outside
// --log-file's folder, and ".x" would hide it. The error says what is wrong, not which
// variable held the name: the caller names it.
func CheckServiceName(name string) error {
	switch {
	case name == "":
		return errors.New("must not be empty")
	case len(name) > MaxServiceNameLen:
		return fmt.Errorf("is %d bytes long, longer than %d", len(name), MaxServiceNameLen)
	case name[0] == '.':
		return errors.New("must not start with '.'")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("holds %q at byte %d: only letters, digits, '-', '_' and '.' are allowed (it names the log file)", c, i)
		}
	}
	return nil
}
