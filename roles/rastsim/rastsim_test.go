package rastsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lpsdev/lps/internal/testutil"
	"github.com/lpsdev/lps/roles"
)

// slowType makes a command that the mascots2022 model sleeps about 93 s for, so that a test can
// hold requests in flight with the real model and end them by going away.
const slowType = 2_000_000

const slowMapping = `{"ID_REQ_KC_STORE7D3BPACKET": 9, "ID_SLOW": 2000000}`

// TestPredictionThroughHTTP checks X-Pred-Process-Time against the formula for PR1 = 0..4: k
// slow commands are held in flight (the in-flight gauge says when they arrived), then the
// measured alarm arrives with PR1 = k.
func TestPredictionThroughHTTP(t *testing.T) {
	for k := 0; k <= 4; k++ {
		t.Run(fmt.Sprintf("PR1=%d", k), func(t *testing.T) {
			ts := startSim(t, Config{Mapping: mustMapping(t, slowMapping)})
			var cancels []context.CancelFunc
			for i := range k {
				_, cancel := ts.hold(t, "/ID_SLOW", fmt.Sprintf("slow-%d", i))
				cancels = append(cancels, cancel)
			}
			testutil.Eventually(t, testDeadline, func() error {
				if ts.inFlight() != k {
					return fmt.Errorf("waiting for %d commands in flight", k)
				}
				return nil
			})

			res := ts.post(t, "/ID_REQ_KC_STORE7D3BPACKET", "measured")
			pred := headerSeconds(t, res, "X-Pred-Process-Time")
			measured := headerSeconds(t, res, "X-Process-Time")
			want := max(0, Predict(k, 0, AlarmRequestType))
			if math.Abs(pred-want) > 0.001 {
				t.Errorf("X-Pred-Process-Time = %v s, want %v s (max(0, Predict(%d, 0, 9))) within 1 ms", pred, want, k)
			}
			if measured < pred {
				t.Errorf("X-Process-Time = %v s < X-Pred-Process-Time = %v s", measured, pred)
			}

			for _, cancel := range cancels {
				cancel()
			}
			testutil.Eventually(t, testDeadline, func() error {
				if ts.inFlight() != 0 {
					return errors.New("waiting for held commands to end when their clients went away")
				}
				return nil
			})
			if c := ts.Counts(); c.Received != k+1 || c.Distinct != k+1 {
				t.Errorf("Counts = %+v, want %d received and distinct", c, k+1)
			}
		})
	}
}

func TestModelNoneAnswersAtOnce(t *testing.T) {
	ts := startSim(t, Config{Model: ModelNone})
	res := ts.post(t, "/ID_REQ_KC_STORE7D3BPACKET", "")
	if got := res.header.Get("X-Pred-Process-Time"); got != "0" {
		t.Errorf("X-Pred-Process-Time = %q, want 0", got)
	}
	if measured := headerSeconds(t, res, "X-Process-Time"); measured >= Predict(0, 0, 9) {
		t.Errorf("X-Process-Time = %v s, want less than the model's %v s", measured, Predict(0, 0, 9))
	}
}

// TestCorrMax: a medium command A (about 0.96 s) is in flight while the alarm B arrives and
// finishes; with CorrMax > 0, A re-predicts after its sleep with PR3 = 1 and sleeps about
// 0.062 s more, with CorrMax = 0 it does not.
func TestCorrMax(t *testing.T) {
	const mediumType = 60_000 // about 2.8 s, so B finishes well within A even on a loaded machine
	mapping := `{"ID_REQ_KC_STORE7D3BPACKET": 9, "ID_MEDIUM": 60000}`
	first := Predict(0, 0, mediumType)
	corrected := Predict(0, 1, mediumType)
	tests := []struct {
		corrMax  int
		want     float64
		lowSlack float64 // a corrected sleep is shorter by how late the first timer fired
	}{
		{0, first, 0.001},
		{1, corrected, 0.25},
		{3, corrected, 0.25}, // the second re-prediction sees nothing new and stops
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("corr-max=%d", tt.corrMax), func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zapcore.InfoLevel)
			ts := startSim(t, Config{Mapping: mustMapping(t, mapping), CorrMax: tt.corrMax, Server: roles.Server{Logger: zap.New(core)}})
			a, _ := ts.hold(t, "/ID_MEDIUM", "A")
			testutil.Eventually(t, testDeadline, func() error {
				if ts.inFlight() != 1 {
					return errors.New("waiting for A in flight")
				}
				return nil
			})
			ts.post(t, "/ID_REQ_KC_STORE7D3BPACKET", "B")
			if ts.inFlight() != 1 {
				t.Fatalf("A finished before B did; the machine is too slow for this test")
			}
			res := waitResult(t, a)
			if res.status != http.StatusOK {
				t.Fatalf("A = %d %q", res.status, res.body)
			}
			pred := headerSeconds(t, res, "X-Pred-Process-Time")
			if pred < tt.want-tt.lowSlack || pred > tt.want+0.001 {
				t.Errorf("X-Pred-Process-Time = %v s, want %v s (-%v/+0.001)", pred, tt.want, tt.lowSlack)
			}
			ende := logs.FilterMessage("UID: A, CMD-ENDE  ID_MEDIUM").All()
			if len(ende) != 1 {
				t.Fatalf("got %d CMD-ENDE lines for A, want 1", len(ende))
			}
			wantPR3 := int64(0)
			if tt.corrMax > 0 {
				wantPR3 = 1
			}
			if got := ende[0].ContextMap()["pr3"]; got != wantPR3 {
				t.Errorf("pr3 logged = %v, want %d", got, wantPR3)
			}
		})
	}
}

func TestRouting(t *testing.T) {
	ts := startSim(t, Config{Model: ModelNone})
	tests := []struct {
		method, path string
		wantStatus   int
		wantBody     string // exact; "" means not checked
		wantAllow    string
	}{
		{"POST", "/ID_REQ_KC_STORE7D3BPACKET", 200, "Success", ""},
		{"POST", "/id_req_kc_store7d3bpacket", 200, "Success", ""},
		{"POST", "/STORE7D3B", 200, "Success", ""},
		{"POST", "/NOPE", 404, "Command not found", ""},
		{"POST", "/", 404, "Command not found", ""},
		{"POST", "/ID_REQ_KC_STORE7D3BPACKET/x", 404, "Command not found", ""},
		{"POST", "/stats", 404, "Command not found", ""}, // not a command of the built-in mapping
		{"GET", "/ID_REQ_KC_STORE7D3BPACKET", 405, "", "POST"},
		{"PUT", "/ID_REQ_KC_STORE7D3BPACKET", 405, "", "POST"},
		{"GET", "/NOPE", 404, "Command not found", ""},
		{"GET", "/stats", 200, "", ""},
		{"GET", "/stats/requests", 200, "", ""},
		{"GET", "/healthz", 200, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
			defer cancel()
			res, err := ts.do(ctx, tt.method, tt.path, "")
			if err != nil {
				t.Fatal(err)
			}
			if res.status != tt.wantStatus {
				t.Errorf("status = %d, want %d (body %q)", res.status, tt.wantStatus, res.body)
			}
			if tt.wantBody != "" && res.body != tt.wantBody {
				t.Errorf("body = %q, want %q", res.body, tt.wantBody)
			}
			if got := res.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
			if !strings.HasPrefix(tt.path, "/healthz") && res.header.Get("Request-Id") == "" {
				t.Error("no Request-Id on the response")
			}
		})
	}
	// Only the three POSTs that matched were counted.
	if c := ts.Counts(); c.Received != 3 || c.ByCommand[AlarmCommand].Received != 3 {
		t.Errorf("Counts = %+v, want 3 alarms", c)
	}
}

func TestCounts(t *testing.T) {
	ts := startSim(t, Config{Model: ModelNone, Mapping: mustMapping(t, `{"ID_REQ_KC_STORE7D3BPACKET": 9, "ID_OTHER": 1}`)})
	ts.post(t, "/ID_REQ_KC_STORE7D3BPACKET", "dup")
	ts.post(t, "/ID_REQ_KC_STORE7D3BPACKET", "dup")
	ts.post(t, "/ID_REQ_KC_STORE7D3BPACKET", "one")
	ts.post(t, "/ID_OTHER", "dup") // the same id with another command is a duplicate too
	ts.post(t, "/ID_OTHER", "two")

	want := Counts{
		Received: 5, Distinct: 3, Duplicates: 2,
		ByCommand: map[string]CommandCounts{
			AlarmCommand: {Received: 3, Duplicates: 1},
			"ID_OTHER":   {Received: 2, Duplicates: 1},
		},
	}
	if got := ts.Counts(); !reflect.DeepEqual(got, want) {
		t.Errorf("Counts() = %+v, want %+v", got, want)
	}
	var stats Counts
	if err := json.Unmarshal([]byte(ts.get(t, "/stats").body), &stats); err != nil {
		t.Fatalf("GET /stats: %v", err)
	}
	if !reflect.DeepEqual(stats, want) {
		t.Errorf("GET /stats = %+v, want %+v", stats, want)
	}

	wantIDs := map[string]int{"dup": 3, "one": 1, "two": 1}
	if got := ts.Received(); !reflect.DeepEqual(got, wantIDs) {
		t.Errorf("Received() = %v, want %v", got, wantIDs)
	}
	var reqs RequestsBody
	if err := json.Unmarshal([]byte(ts.get(t, "/stats/requests").body), &reqs); err != nil {
		t.Fatalf("GET /stats/requests: %v", err)
	}
	if !reflect.DeepEqual(reqs.Requests, wantIDs) {
		t.Errorf("GET /stats/requests = %v, want %v", reqs.Requests, wantIDs)
	}

	metrics := ts.get(t, "/metrics").body
	for _, line := range []string{
		`lps_rastsim_requests_total{command="ID_REQ_KC_STORE7D3BPACKET"} 3`,
		`lps_rastsim_requests_total{command="ID_OTHER"} 2`,
		`lps_rastsim_duplicates_total 2`,
		`lps_rastsim_distinct_requests 3`,
		`lps_rastsim_in_flight 0`,
		`lps_rastsim_predicted_process_time_seconds_count 5`,
		`lps_rastsim_process_time_seconds_count 5`,
		`lps_rastsim_unknown_commands_total 0`,
	} {
		if !strings.Contains(metrics, "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
}

func TestCountsSameIDTwice(t *testing.T) {
	ts := startSim(t, Config{Model: ModelNone})
	ts.post(t, "/ID_REQ_KC_STORE7D3BPACKET", "same")
	ts.post(t, "/ID_REQ_KC_STORE7D3BPACKET", "same")
	if c := ts.Counts(); c.Received != 2 || c.Distinct != 1 || c.Duplicates != 1 {
		t.Errorf("Counts = %+v, want received 2, distinct 1, duplicates 1", c)
	}
}

func TestLogLines(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	cfg := Config{Model: ModelNone}
	cfg.Logger = zap.New(core)
	ts := startSim(t, cfg)
	ts.post(t, "/store7d3b", "log-1") // the logged name is the mapping's, not the path

	var got []string
	for _, e := range logs.FilterMessageSnippet("UID: log-1").All() {
		got = append(got, e.Message)
	}
	want := []string{
		"UID: log-1, CMD-START ID_REQ_KC_STORE7D3BPACKET",
		"UID: log-1, CMD-ENDE  ID_REQ_KC_STORE7D3BPACKET",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("log lines = %q, want %q", got, want)
	}
	ende := logs.FilterMessage(want[1]).All()[0].ContextMap()
	for _, key := range []string{"request_id", "pred_process_time", "slept", "process_time", "pr1", "pr3"} {
		if _, ok := ende[key]; !ok {
			t.Errorf("CMD-ENDE line lacks field %q: %v", key, ende)
		}
	}
	if ende["request_id"] != "log-1" {
		t.Errorf("request_id = %v", ende["request_id"])
	}
}

// TestClientGoneEndsSleep: a sleeping command whose client goes away ends at once, leaves
// flight (so others' PR1 is right) and stays counted.
func TestClientGoneEndsSleep(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	cfg := Config{Mapping: mustMapping(t, slowMapping)}
	cfg.Logger = zap.New(core)
	ts := startSim(t, cfg)
	_, cancel := ts.hold(t, "/ID_SLOW", "gone")
	testutil.Eventually(t, testDeadline, func() error {
		if ts.inFlight() != 1 {
			return errors.New("waiting for the command in flight")
		}
		return nil
	})
	cancel()
	testutil.Eventually(t, testDeadline, func() error {
		if ts.inFlight() != 0 {
			return errors.New("waiting for the command to leave flight")
		}
		return nil
	})
	if c := ts.Counts(); c.Received != 1 {
		t.Errorf("Counts = %+v, want 1 received", c)
	}
	testutil.Eventually(t, testDeadline, func() error {
		if logs.FilterMessage("UID: gone, CMD-ENDE  ID_SLOW").Len() != 1 {
			return errors.New("waiting for the CMD-ENDE line")
		}
		return nil
	})
	if got := logs.FilterMessage("UID: gone, CMD-ENDE  ID_SLOW").All()[0].ContextMap()["aborted"]; got != "client gone" {
		t.Errorf("aborted = %v, want client gone", got)
	}
}

// TestShutdownEndsSleep: when Run's context ends, a sleeping command answers at once and Run
// returns.
func TestShutdownEndsSleep(t *testing.T) {
	ts := startSim(t, Config{Mapping: mustMapping(t, slowMapping)})
	held, _ := ts.hold(t, "/ID_SLOW", "late")
	testutil.Eventually(t, testDeadline, func() error {
		if ts.inFlight() != 1 {
			return errors.New("waiting for the command in flight")
		}
		return nil
	})
	start := time.Now()
	if err := ts.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	res := waitResult(t, held)
	if res.status != http.StatusOK || res.body != "Success" {
		t.Fatalf("held command = %d %q, want 200 Success", res.status, res.body)
	}
	if slept := headerSeconds(t, res, "X-Pred-Process-Time"); slept > time.Since(start).Seconds()+1 {
		t.Errorf("X-Pred-Process-Time = %v s; the sleep did not end at shutdown", slept)
	}
}

func TestMappingFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "mapping.json")
	if err := os.WriteFile(good, []byte(`{"ID_A": 1, "ID_REQ_KC_STORE7D3BPACKET": 9}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startSim(t, Config{Model: ModelNone, MappingFile: good})
	ts.post(t, "/ID_A", "")

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"ID_A": "x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ file, want string }{
		{bad, bad + `: reading mapping: request type of "ID_A" must be an integer`},
		{filepath.Join(dir, "missing.json"), "opening mapping:"},
	} {
		_, err := New(Config{MappingFile: tt.file, Server: roles.Server{Listen: "127.0.0.1:0"}})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New with mapping %s: error %v, want it to contain %q", tt.file, err, tt.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown model", Config{Model: "m0"}, `unknown model "m0"; use mascots2022 or none`},
		{"negative corr-max", Config{CorrMax: -1}, "CorrMax -1: must not be negative"},
		{"corr-max without a model", Config{Model: ModelNone, CorrMax: 2}, "CorrMax 2: needs a delay model"},
		{"model and predictor", Config{Model: ModelNone, Predictor: PredictorFunc(Predict)}, "set one"},
		{"mapping and mapping file", Config{Mapping: DefaultMapping(), MappingFile: "x.json"}, "set one"},
		{"bad listen address", Config{Server: roles.Server{Listen: "127.0.0.1:99999"}}, `Listen 127.0.0.1:99999: port "99999"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.Listen == "" {
				tt.cfg.Listen = "127.0.0.1:0"
			}
			s, err := New(tt.cfg)
			if err == nil {
				s.svc.Close()
				t.Fatalf("New succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestModelNamesAreCaseInsensitive(t *testing.T) {
	for _, model := range []string{"", "mascots2022", "MASCOTS2022", "None"} {
		s, err := New(Config{Model: model, Server: roles.Server{Listen: "127.0.0.1:0"}})
		if err != nil {
			t.Errorf("model %q: %v", model, err)
			continue
		}
		s.svc.Close()
	}
}

// TestPredictorSeam: a Predictor replaces the model; its result is clamped at 0.
func TestPredictorSeam(t *testing.T) {
	calls := make(chan [3]int, 1)
	ts := startSim(t, Config{Predictor: PredictorFunc(func(pr1, pr3, typ int) float64 {
		calls <- [3]int{pr1, pr3, typ}
		return -1
	})})
	res := ts.post(t, "/ID_REQ_KC_STORE7D3BPACKET", "")
	if got := res.header.Get("X-Pred-Process-Time"); got != "0" {
		t.Errorf("X-Pred-Process-Time = %q, want 0 for a negative prediction", got)
	}
	if got := <-calls; got != [3]int{0, 0, 9} {
		t.Errorf("Predictor called with (pr1, pr3, type) = %v; want [0 0 9]", got)
	}
}

// TestBodyLimit: the simulator reads (and ignores) bodies; one over the server's limit is
// answered 413 and not counted, whether its length was declared or not.
func TestBodyLimit(t *testing.T) {
	ts := startSim(t, Config{Model: ModelNone, Server: roles.Server{MaxBodyBytes: 16}})
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
			defer cancel()
			var body io.Reader = strings.NewReader(strings.Repeat("x", 100))
			if chunked {
				body = io.MultiReader(body) // hides the length
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.url+"/ID_REQ_KC_STORE7D3BPACKET", body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := ts.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("status = %d, want 413", resp.StatusCode)
			}
		})
	}
	if c := ts.Counts(); c.Received != 0 {
		t.Errorf("Counts = %+v, want nothing received", c)
	}
}

// TestRequestsLedgerEncoding: GET /stats/requests writes its entries itself; empty, it is an
// empty object, and ids that JSON must escape come back as they were sent.
func TestRequestsLedgerEncoding(t *testing.T) {
	ts := startSim(t, Config{Model: ModelNone})
	decode := func() map[string]int {
		t.Helper()
		res := ts.get(t, "/stats/requests")
		var reqs RequestsBody
		if err := json.Unmarshal([]byte(res.body), &reqs); err != nil {
			t.Fatalf("GET /stats/requests: %v in %q", err, res.body)
		}
		if reqs.Requests == nil {
			t.Fatalf("GET /stats/requests has no requests object: %q", res.body)
		}
		return reqs.Requests
	}
	if got := decode(); len(got) != 0 {
		t.Errorf("empty ledger: %v", got)
	}
	want := map[string]int{}
	for i, id := range []string{`a"b`, `c\d`, "<x>&", `{"}`, "plain"} { // the Request-Id middleware replaces ids with control or non-ASCII characters
		for range i%2 + 1 {
			ts.post(t, "/"+AlarmCommand, id)
			want[id]++
		}
	}
	if got := decode(); !reflect.DeepEqual(got, want) {
		t.Errorf("GET /stats/requests = %v, want %v", got, want)
	}
}
