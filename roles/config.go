package roles

import (
	"fmt"
	"net"
	"strconv"

	"github.com/lpsdev/lps/config"
)

// Validate checks the server settings; zero values are valid (they take the defaults).
func (s Server) Validate() error {
	if s.Listener == nil && s.Listen != "" {
		if err := ValidateListen(s.Listen); err != nil {
			return config.Invalid("Listen", s.Listen, "%v", err)
		}
	}
	switch {
	case s.Backlog < 0:
		return config.Invalid("Backlog", s.Backlog, "must not be negative (0: the default)")
	case s.MaxBodyBytes < 0:
		return config.Invalid("MaxBodyBytes", s.MaxBodyBytes, "must not be negative (0: the default)")
	case s.ShutdownTimeout < 0:
		return config.Invalid("ShutdownTimeout", s.ShutdownTimeout, "must not be negative (0: the default)")
	}
	return nil
}

// ValidateListen checks a listen address: host:port with a port from 0 to 65535 (0: any free
// one).
func ValidateListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// Validate checks the upstream settings: a URL (or a list) is required.
func (u Upstream) Validate() error {
	if err := ValidateURLs(u.URL); err != nil {
		return config.Invalid("URL", u.URL, "%v", err)
	}
	if u.Timeout < 0 {
		return config.Invalid("Timeout", u.Timeout, "must not be negative (0: the default)")
	}
	return nil
}
