package mqttconn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
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
// is an error that names the URL and says what is wrong with it, never showing the password.
func ParseBroker(raw string) (Broker, error) {
	bad := func(format string, args ...any) (Broker, error) {
		return Broker{}, fmt.Errorf("invalid broker URL %q: %s", redact(raw), fmt.Sprintf(format, args...))
	}
	// A password that is not percent-encoded (/, ?, # or % in it) may end up in any part of a
	// URL that does not parse as intended, so a URL with one quotes none of its parts.
	hide := passwordIn(raw) != ""
	if strings.TrimSpace(raw) == "" {
		return bad("is empty (want mqtt://host:%d)", DefaultPort)
	}
	if !strings.Contains(raw, "://") {
		return bad("has no scheme (want mqtt://host:%d or mqtts://host:%d)", DefaultPort, DefaultTLSPort)
	}
	u, err := url.Parse(raw)
	if err != nil {
		if hide {
			return bad("cannot be parsed; percent-encode /, ?, #, %%, @ and spaces in the user name and password")
		}
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
		if hide {
			return bad("has a path; a broker URL names only host and port")
		}
		return bad("has a path %q; a broker URL names only host and port", u.Path)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return bad("has a query or fragment; a broker URL names only host and port")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			if hide {
				return bad("port is not a number between 1 and 65535")
			}
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
	// url.Parse takes "mqtt://]" for a host, and "tcp://::1" for host ":" and port 1, which
	// nothing could dial; an IPv6 address must be in brackets, and what is there must be one.
	host := u.Hostname()
	hostPort := net.JoinHostPort(host, strconv.Itoa(port))
	_, _, err = net.SplitHostPort(hostPort)
	switch {
	case strings.Contains(host, ":") && !strings.HasPrefix(u.Host, "["):
		err = fmt.Errorf("an IPv6 address goes in brackets, as in mqtt://[::1]:%d", DefaultPort)
	case err == nil && strings.ContainsAny(host, ":%"):
		_, err = netip.ParseAddr(host)
	}
	if err != nil {
		if hide {
			return bad("the host is not a host name or IP address")
		}
		return bad("host %q is not a host name or IP address: %v", u.Host, unwrapAddrError(err))
	}
	b.URL = &url.URL{Scheme: scheme, Host: hostPort}
	return b, nil
}

// redact hides the password of a broker URL: url.Redacted's for one that parses with it, and
// for any other the text passwordIn finds (which url.Parse, on a password that is not
// percent-encoded, may have taken for a port, path or query, or refused).
func redact(raw string) string {
	s, p := raw, passwordIn(raw)
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok {
			s = u.Redacted()
			if p == pw {
				return s
			}
			// Parsed differently ("mqtt://u:@pw#@host" has an empty password and a
			// fragment): hide both readings.
		}
	}
	if p != "" {
		s = strings.ReplaceAll(s, p, "xxxxx")
	}
	return s
}

// passwordIn returns what looks like the password of raw however malformed it is: between
// the first ":" after the scheme's "://" (or the start) and the last "@"; "" when there is none.
func passwordIn(raw string) string {
	s := raw
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+len("://"):]
	}
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return ""
	}
	_, pass, _ := strings.Cut(s[:at], ":")
	return pass
}

func unwrapAddrError(err error) error {
	if ae, ok := err.(*net.AddrError); ok {
		return errors.New(ae.Err)
	}
	return err
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
