package mqttconn

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Default broker ports of the URL schemes.
const (
	DefaultPort    = 1883 // mqtt:// and tcp://
	DefaultTLSPort = 8883 // mqtts://, ssl:// and tls://
)

// Broker is a parsed broker URL.
type Broker struct {
	// URL is the normalised URL autopaho dials: scheme "mqtt" or "tls", host with port, no user
	// information, no path.
	URL *url.URL
	// TLS says whether the connection is encrypted.
	TLS bool
	// Username and Password come from the URL's user information ("" when it has none).
	Username, Password string
}

// String is the URL without credentials, safe to log.
func (b Broker) String() string { return b.URL.String() }

// ParseBroker parses a broker URL: mqtt://host[:port] and tcp://host[:port] connect in plain
// TCP (port 1883 by default); mqtts://, ssl:// and tls:// connect with TLS (port 8883 by
// default). User information (mqtt://user:pass@host) is accepted as credentials. Anything else
// is an error that names the URL and says what is wrong with it.
func ParseBroker(raw string) (Broker, error) {
	bad := func(format string, args ...any) (Broker, error) {
		return Broker{}, fmt.Errorf("invalid broker URL %q: %s", redact(raw), fmt.Sprintf(format, args...))
	}
	if strings.TrimSpace(raw) == "" {
		return bad("is empty (want mqtt://host:%d)", DefaultPort)
	}
	if !strings.Contains(raw, "://") {
		return bad("has no scheme (want mqtt://host:%d or mqtts://host:%d)", DefaultPort, DefaultTLSPort)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("%v", unwrapURLError(err))
	}
	var b Broker
	port := DefaultPort
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp":
	case "mqtts", "ssl", "tls":
		b.TLS, port = true, DefaultTLSPort
	default:
		return bad("scheme %q is not supported (use mqtt, tcp, mqtts, ssl or tls)", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return bad("has no host")
	}
	if u.Path != "" && u.Path != "/" {
		return bad("has a path %q; a broker URL names only host and port", u.Path)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return bad("has a query or fragment; a broker URL names only host and port")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return bad("port %q is not a number between 1 and 65535", p)
		}
		port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return bad("has an empty port")
	}
	if u.User != nil {
		b.Username = u.User.Username()
		b.Password, _ = u.User.Password()
	}
	scheme := "mqtt"
	if b.TLS {
		scheme = "tls"
	}
	b.URL = &url.URL{Scheme: scheme, Host: net.JoinHostPort(u.Hostname(), strconv.Itoa(port))}
	return b, nil
}

// redact hides the password of a URL that parses; one that does not is shown as given, since
// it cannot be taken apart reliably.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		return u.Redacted()
	}
	return raw
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
