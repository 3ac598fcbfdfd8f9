package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/mqttconn/mqtttest"
	"github.com/lpsdev/lps/roles/mqtt2http"
)

// deadLetterCmd runs `lps dead-letters` with args and returns its exit code and output.
func deadLetterCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot(Options{Stdout: &out, Stderr: &errOut, LookupEnv: env(nil)})
	code := Execute(root, append([]string{"dead-letters", "--log-level", "error", "--idle", "300ms", "--timeout", "30s"}, args...))
	return code, out.String(), errOut.String()
}

func TestDeadLettersListsAndReplays(t *testing.T) {
	broker := mqtttest.StartEmbedded(t)
	pub := mqtttest.NewPublisher(t, broker.URL)
	for i := 1; i <= 3; i++ {
		alarm, _ := json.Marshal(alarm.Alarm{ID: "0151", Body: fmt.Sprintf("alarm %d", i), RequestID: fmt.Sprintf("r-%d", i)})
		dl, _ := json.Marshal(mqtt2http.DeadLetter{
			Reason: "upstream failed 5 times, the maximum", Kind: mqtt2http.DeadMaxAttempts, Service: "proxy2-1",
			Topic: "proxy1-1/message", Attempts: 5, RequestID: fmt.Sprintf("r-%d", i),
			Payload: string(alarm), PayloadEncoding: "utf-8", Time: time.Now().Add(-time.Hour).UTC(),
		})
		pub.Publish(t, mqtt2http.DefaultDeadLetterTopic, dl, nil) // nobody reads the topic: the queue keeps it
	}

	code, out, errOut := deadLetterCmd(t, "--broker", broker.URL)
	if code != 0 || !strings.Contains(errOut, "3 dead letters (still in the queue)") {
		t.Fatalf("list: exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "AGE") {
		t.Fatalf("list printed:\n%s", out)
	}
	for i, l := range lines[1:] {
		for _, want := range []string{"1h0m0s", "max_attempts", fmt.Sprintf("r-%d", i+1), "proxy2-1", "5", "proxy1-1/message", "the maximum"} {
			if !strings.Contains(l, want) {
				t.Errorf("line %q lacks %q", l, want)
			}
		}
	}

	code, out, _ = deadLetterCmd(t, "--broker", broker.URL, "--json")
	if code != 0 {
		t.Fatalf("--json: exit %d", code)
	}
	for i, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var dl mqtt2http.DeadLetter
		if err := json.Unmarshal([]byte(l), &dl); err != nil || dl.RequestID != fmt.Sprintf("r-%d", i+1) {
			t.Errorf("--json line %d: %q (%v)", i, l, err)
		}
	}

	// A replay the broker would discard takes nothing and fails.
	code, _, errOut = deadLetterCmd(t, "--broker", broker.URL, "--replay", "--to", "nobody/listens")
	if code != 1 || !strings.Contains(errOut, "stay in the queue") {
		t.Errorf("replay to nowhere: exit %d, stderr %q; want 1 and the dead letters kept", code, errOut)
	}

	consumer := mqtttest.Subscribe(t, broker.URL, "$share/legacy_proxy/+/message")
	code, _, errOut = deadLetterCmd(t, "--broker", broker.URL, "--replay")
	if code != 0 || !strings.Contains(errOut, "3 dead letters replayed") {
		t.Fatalf("replay: exit %d, stderr %q", code, errOut)
	}
	got := consumer.Wait(t, 3, 10*time.Second)
	for i, m := range got {
		var a alarm.Alarm
		if err := json.Unmarshal(m.Payload, &a); err != nil || a.RequestID != fmt.Sprintf("r-%d", i+1) || m.User["request_id"] != a.RequestID || m.Topic != "proxy1-1/message" {
			t.Errorf("replayed message %d on %s: %s %v", i, m.Topic, m.Payload, m.User)
		}
	}
	code, out, errOut = deadLetterCmd(t, "--broker", broker.URL)
	if code != 0 || out != "" || !strings.Contains(errOut, "no dead letters") {
		t.Errorf("after the replay: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
