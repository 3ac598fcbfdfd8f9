package deadletters_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/alarm"
	"github.com/lpsdev/lps/deadletters"
	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/mqttconn"
	"github.com/lpsdev/lps/mqttconn/mqtttest"
	"github.com/lpsdev/lps/roles"
	"github.com/lpsdev/lps/roles/mqtt2http"
)

// backend is a component 2 stand-in that fails every alarm until fixed, and counts the
// alarms it accepted per Request-Id.
type backend struct {
	URL string
	mu  sync.Mutex
	ok  map[string]int
	bad bool
}

func startBackend(t *testing.T) *backend {
	b := &backend{ok: map[string]int{}, bad: true}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.bad {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		b.ok[r.Header.Get("Request-Id")]++
	}))
	t.Cleanup(srv.Close)
	b.URL = srv.URL
	return b
}

func (b *backend) fix() { b.mu.Lock(); b.bad = false; b.mu.Unlock() }

func (b *backend) accepted() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for k, v := range b.ok {
		out[k] = v
	}
	return out
}

// deadLetters runs mqtt2http with an attempt budget of one against a failing backend and
// sends it three alarms and a payload it cannot decode: four dead letters, published while
// nobody reads the dead-letter topic. The embedded broker's declared queue keeps them.
func deadLetters(t *testing.T, broker *mqtttest.Broker, up *backend) {
	t.Helper()
	reg := prometheus.NewRegistry()
	br, err := mqtt2http.New(mqtt2http.Config{
		ServiceName: "proxy2-1",
		Admin:       roles.Server{Listener: testutil.Listen(t)},
		Broker:      broker.URL,
		Upstream:    roles.Upstream{URL: up.URL, Timeout: 5 * time.Second},
		MaxAttempts: 1,
		Logger:      zap.NewNop(),
		Registry:    reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, br)
	// Subscribed before the alarms come: Mosquitto keeps nothing for a group nobody joined.
	testutil.Eventually(t, 10*time.Second, func() error {
		resp, err := http.Get("http://" + br.Addr().String() + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	pub := mqtttest.NewPublisher(t, broker.URL)
	for i := 1; i <= 3; i++ {
		a, _ := json.Marshal(alarm.Alarm{ID: "0151", Body: fmt.Sprintf("alarm %d", i), RequestID: fmt.Sprintf("r-%d", i)})
		pub.Publish(t, "proxy1-1/message", a, nil)
	}
	pub.Publish(t, "proxy1-1/message", []byte("not an alarm"), map[string]string{"request_id": "r-junk"})
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := testutil.Metric(t, reg, "lps_mqtt_dead_letters_total", nil); n != 4 {
			return fmt.Errorf("%v dead letters", n)
		}
		return nil
	})
}

func reader(t *testing.T, broker *mqtttest.Broker) *deadletters.Reader {
	t.Helper()
	r, err := deadletters.New(deadletters.Config{Broker: broker.URL, Idle: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func list(t *testing.T, broker *mqtttest.Broker) []deadletters.Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []deadletters.Entry
	res, err := reader(t, broker).List(ctx, func(e deadletters.Entry) { got = append(got, e) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Read != len(got) || res.Taken != 0 || res.More {
		t.Errorf("listing: %+v for %d entries; want every entry read, none taken", res, len(got))
	}
	return got
}

func requestIDs(es []deadletters.Entry) []string {
	var ids []string
	for _, e := range es {
		ids = append(ids, e.RequestID)
	}
	sort.Strings(ids)
	return ids
}

func TestListAndReplay(t *testing.T) {
	broker := mqtttest.StartEmbedded(t)
	up := startBackend(t)
	deadLetters(t, broker, up)

	got := list(t, broker)
	if ids := fmt.Sprint(requestIDs(got)); ids != "[r-1 r-2 r-3 r-junk]" {
		t.Fatalf("listed %s, want the four dead letters", ids)
	}
	for _, e := range got {
		want := mqtt2http.DeadMaxAttempts
		attempts := 1
		if e.RequestID == "r-junk" {
			want, attempts = mqtt2http.DeadUndecodable, 0
		}
		if e.Err != nil || e.Kind != want || e.Attempts != attempts || e.Topic != "proxy1-1/message" ||
			e.Service != "proxy2-1" || e.Age(time.Now()) < 0 || e.Age(time.Now()) > time.Minute {
			t.Errorf("dead letter %s: %+v (err %v)", e.RequestID, e.DeadLetter, e.Err)
		}
	}
	// Listing takes nothing: the same four, again, even after a restart of the broker.
	broker.Stop()
	broker.Start()
	if ids := fmt.Sprint(requestIDs(list(t, broker))); ids != "[r-1 r-2 r-3 r-junk]" {
		t.Fatalf("listed %s the second time", ids)
	}

	up.fix()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var replayed []string
	var errs []error
	res, err := reader(t, broker).ReplayAll(ctx, "", func(e deadletters.Entry, err error) {
		replayed = append(replayed, e.RequestID)
		errs = append(errs, err)
	})
	if err != nil {
		t.Fatalf("replay: %v (%+v)", err, res)
	}
	// The three alarms are delivered; the junk is dead-lettered again at once and, coming back
	// during the run, ends it.
	testutil.Eventually(t, 20*time.Second, func() error {
		if got := up.accepted(); len(got) != 3 || got["r-1"] != 1 || got["r-2"] != 1 || got["r-3"] != 1 {
			return fmt.Errorf("backend accepted %v", got)
		}
		return nil
	})
	if res.Taken != 4 {
		t.Errorf("replay took %d dead letters off the queue, want 4 (%v)", res.Taken, replayed)
	}
	if last := errs[len(errs)-1]; len(replayed) != 5 || !errors.Is(last, deadletters.ErrReplayedAgain) || replayed[4] != "r-junk" {
		t.Errorf("replay saw %v with errors %v; want the four, then the junk again", replayed, errs)
	}
	left := list(t, broker)
	if len(left) != 1 || left[0].RequestID != "r-junk" || left[0].Kind != mqtt2http.DeadUndecodable {
		t.Fatalf("after the replay the queue holds %v, want only the junk, dead-lettered again", requestIDs(left))
	}
	if d := up.accepted(); len(d) != 3 {
		t.Errorf("backend accepted %v after the replay", d)
	}
}

// A replay the broker would discard (no queue, no subscriber for the topic) takes nothing.
func TestReplayNobodyTakesKeepsEverything(t *testing.T) {
	broker := mqtttest.StartEmbedded(t)
	up := startBackend(t)
	deadLetters(t, broker, up)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := reader(t, broker).ReplayAll(ctx, "nobody/listens", func(deadletters.Entry, error) {})
	if err == nil || res.Taken != 0 {
		t.Fatalf("replay to a topic nobody takes: %+v, %v; want an error and nothing taken", res, err)
	}
	if n := len(list(t, broker)); n != 4 {
		t.Errorf("%d dead letters left, want all 4", n)
	}
}

func TestEmptyQueue(t *testing.T) {
	broker := mqtttest.StartEmbedded(t)
	if got := list(t, broker); len(got) != 0 {
		t.Errorf("listed %d dead letters of an empty queue", len(got))
	}
}

func TestConfigValidates(t *testing.T) {
	for _, cfg := range []deadletters.Config{
		{},
		{Broker: "http://x"},
		{Broker: "mqtt://127.0.0.1:1", Limit: -1},
		{Broker: "mqtt://127.0.0.1:1", Limit: 70000},
		{Broker: "mqtt://127.0.0.1:1", Idle: -time.Second},
		{Broker: "mqtt://127.0.0.1:1", Group: "a/b"},
		{Broker: "mqtt://127.0.0.1:1", Topic: "a/#/b"},
	} {
		if _, err := deadletters.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	if _, err := deadletters.New(deadletters.Config{Broker: "mqtt://127.0.0.1:1", MQTT: mqttconn.Options{}}); err != nil {
		t.Errorf("a minimal config: %v", err)
	}
}

// Mosquitto declares no queues: its dead letters are kept once the reader's persistent session
// has subscribed, as the README tells; listing then takes nothing there either.
func TestMosquittoKeepsDeadLettersOnceSubscribed(t *testing.T) {
	broker := mqtttest.StartMosquitto(t)
	if got := list(t, broker); len(got) != 0 {
		t.Fatalf("listed %d dead letters of a new broker", len(got))
	}
	up := startBackend(t)
	deadLetters(t, broker, up)
	for range 2 {
		if ids := fmt.Sprint(requestIDs(list(t, broker))); ids != "[r-1 r-2 r-3 r-junk]" {
			t.Fatalf("listed %s, want the four dead letters", ids)
		}
	}
}
