package mqttconn

import (
	"strings"
	"testing"
	"time"
)

func TestParseBroker(t *testing.T) {
	tests := []struct {
		raw, url   string
		tls        bool
		user, pass string
	}{
		{raw: "mqtt://broker", url: "mqtt://broker:1883"},
		{raw: "mqtt://broker:1884", url: "mqtt://broker:1884"},
		{raw: "tcp://10.0.0.1", url: "mqtt://10.0.0.1:1883"},
		{raw: "MQTT://Broker:1883/", url: "mqtt://Broker:1883"},
		{raw: "mqtts://broker", url: "tls://broker:8883", tls: true},
		{raw: "ssl://broker:1234", url: "tls://broker:1234", tls: true},
		{raw: "tls://[::1]", url: "tls://[::1]:8883", tls: true},
		{raw: "mqtt://[::1]:1883", url: "mqtt://[::1]:1883"},
		{raw: "mqtt://alice:s3cret@broker", url: "mqtt://broker:1883", user: "alice", pass: "s3cret"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			b, err := ParseBroker(tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			if b.URL.String() != tt.url || b.TLS != tt.tls || b.Username != tt.user || b.Password != tt.pass {
				t.Errorf("got %s tls=%v user=%q pass=%q, want %s tls=%v user=%q pass=%q",
					b.URL, b.TLS, b.Username, b.Password, tt.url, tt.tls, tt.user, tt.pass)
			}
		})
	}
}

func TestParseBrokerErrors(t *testing.T) {
	tests := []struct{ raw, want string }{
		{"", "is empty"},
		{"broker:1883", "has no scheme"},
		{"http://broker:1883", `scheme "http" is not supported`},
		{"ws://broker:1883", `scheme "ws" is not supported`},
		{"mqtt://", "has no host"},
		{"mqtt://:1883", "has no host"},
		{"mqtt://broker:0", "port"},
		{"mqtt://broker:70000", "port"},
		{"mqtt://broker:abc", "invalid port"},
		{"mqtt://broker:", "empty port"},
		{"mqtt://broker/topic", "has a path"},
		{"mqtt://broker?x=1", "query"},
		{"mqtt://u:hunter2@broker/x", "has a path"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			_, err := ParseBroker(tt.raw)
			if err == nil {
				t.Fatalf("ParseBroker(%q) = nil error", tt.raw)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "invalid broker URL") || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q, want it to start with %q and contain %q", msg, "invalid broker URL", tt.want)
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("error %q shows the password", msg)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	if d := b.Delay(0); d != 0 {
		t.Errorf("Delay(0) = %s, want 0", d)
	}
	for n, full := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second, 1000: time.Second} {
		for range 100 {
			if d := b.Delay(n); d < full/2 || d > full {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", n, d, full/2, full)
			}
		}
	}
	if d := (Backoff{Base: time.Second}).Delay(1000); d <= 0 {
		t.Errorf("Delay without Max overflowed: %s", d)
	}
}

func TestTopics(t *testing.T) {
	for _, ok := range []string{"proxy1/message", "a", "a/b/c"} {
		if err := ValidateTopic(ok); err != nil {
			t.Errorf("ValidateTopic(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a/+", "a/#", "$SYS/x", "a\x00b", "\xff"} {
		if err := ValidateTopic(bad); err == nil {
			t.Errorf("ValidateTopic(%q) = nil", bad)
		}
	}
	for _, ok := range []string{"+/message", "#", "a/#", "+/retry/message", "a/+/b"} {
		if err := ValidateFilter(ok); err != nil {
			t.Errorf("ValidateFilter(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a/#/b", "a#", "a+/b", "#/a"} {
		if err := ValidateFilter(bad); err == nil {
			t.Errorf("ValidateFilter(%q) = nil", bad)
		}
	}

	g, f, ok, err := SplitShared("$share/legacy_proxy/+/message")
	if err != nil || !ok || g != "legacy_proxy" || f != "+/message" {
		t.Errorf("SplitShared = %q %q %v %v", g, f, ok, err)
	}
	if _, f, ok, err := SplitShared("+/message"); err != nil || ok || f != "+/message" {
		t.Errorf("SplitShared(plain) = %q %v %v", f, ok, err)
	}
	for _, bad := range []string{"$share/g", "$share//x", "$share/g/", "$share/g+/x"} {
		if _, _, _, err := SplitShared(bad); err == nil {
			t.Errorf("SplitShared(%q) = nil error", bad)
		}
	}

	matches := []struct {
		filter, topic string
		want          bool
	}{
		{"+/message", "proxy1/message", true},
		{"+/message", "proxy1/retry/message", false},
		{"+/retry/message", "proxy1/retry/message", true},
		{"#", "lps/dead-letter", true},
		{"a/#", "a", true},
		{"a/+", "a", false},
		{"+/+", "a/b", true},
		{"#", "$SYS/x", false},
		{"lps/dead-letter", "lps/dead-letter", true},
	}
	for _, m := range matches {
		if got := Match(m.filter, m.topic); got != m.want {
			t.Errorf("Match(%q, %q) = %v, want %v", m.filter, m.topic, got, m.want)
		}
	}
}
