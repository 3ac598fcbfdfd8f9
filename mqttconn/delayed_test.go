package mqttconn_test

import (
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/mqttconn"
)

func TestDelayedTopic(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "$delayed/0/a/b"},
		{-time.Second, "$delayed/0/a/b"},
		{time.Millisecond, "$delayed/1/a/b"},
		{1500 * time.Millisecond, "$delayed/2/a/b"},
		{10 * time.Second, "$delayed/10/a/b"},
		{100 * 24 * time.Hour, "$delayed/4294967/a/b"},
	} {
		if got := mqttconn.DelayedTopic(tc.d, "a/b"); got != tc.want {
			t.Errorf("DelayedTopic(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestParseDelayed(t *testing.T) {
	for _, tc := range []struct {
		topic   string
		delay   time.Duration
		target  string
		ok      bool
		wantErr string
	}{
		{topic: "a/b"},
		{topic: "$delayedx/1/a"},
		{topic: "$delayed/5/proxy2-1/retry/message", delay: 5 * time.Second, target: "proxy2-1/retry/message", ok: true},
		{topic: "$delayed/0/a", target: "a", ok: true},
		{topic: "$delayed/4294967/a", delay: 4294967 * time.Second, target: "a", ok: true},
		{topic: "$delayed/4294968/a", ok: true, wantErr: "whole number of seconds"},
		{topic: "$delayed/-1/a", ok: true, wantErr: "whole number of seconds"},
		{topic: "$delayed/+1/a", ok: true, wantErr: "whole number of seconds"},
		{topic: "$delayed/1.5/a", ok: true, wantErr: "whole number of seconds"},
		{topic: "$delayed/x/a", ok: true, wantErr: "whole number of seconds"},
		{topic: "$delayed/1", ok: true, wantErr: "no target topic"},
		{topic: "$delayed/1/", ok: true, wantErr: "is empty"},
		{topic: "$delayed/1/a/#", ok: true, wantErr: "wildcard"},
		{topic: "$delayed/1/$SYS/x", ok: true, wantErr: "reserved"},
	} {
		d, target, ok, err := mqttconn.ParseDelayed(tc.topic)
		if ok != tc.ok || d != tc.delay || target != tc.target {
			t.Errorf("ParseDelayed(%q) = %s, %q, %v; want %s, %q, %v", tc.topic, d, target, ok, tc.delay, tc.target, tc.ok)
		}
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("ParseDelayed(%q): %v", tc.topic, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("ParseDelayed(%q) error %v, want one saying %q", tc.topic, err, tc.wantErr)
		}
	}
}
