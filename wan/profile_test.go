package wan

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestBuiltin(t *testing.T) {
	p, ok := Builtin("corporate-wan")
	if !ok {
		t.Fatal("corporate-wan is not a builtin")
	}
	want := Profile{
		Name:       "corporate-wan",
		EgressRate: 5_000_000, IngressRate: 100_000_000,
		Delay: 30 * time.Millisecond, Jitter: 3 * time.Millisecond, LossPercent: 0.01,
	}
	if p != want {
		t.Errorf("corporate-wan = %+v, want %+v", p, want)
	}
	for _, name := range BuiltinNames() {
		p, ok := Builtin(name)
		if !ok || p.Name != name {
			t.Errorf("Builtin(%q) = %+v, %v", name, p, ok)
		}
		if err := p.Validate(); err != nil {
			t.Errorf("builtin %s is invalid: %v", name, err)
		}
	}
	if lan, _ := Builtin("lan"); !lan.IsZero() {
		t.Errorf("lan shapes: %v", lan)
	}
	if _, ok := Builtin("nope"); ok {
		t.Error("Builtin(nope) found something")
	}
}

func TestParseProfile(t *testing.T) {
	corp, _ := Builtin("corporate-wan")
	tests := []struct {
		spec    string
		want    Profile
		wantErr []string // substrings of the error; nil = no error
	}{
		{spec: "corporate-wan", want: corp},
		{spec: " lan ", want: Profile{Name: "lan"}},
		{
			spec: "rate-out=5mbit,rate-in=100mbit,delay=30ms,jitter=3ms,loss=0.01%",
			want: Profile{Name: "custom", EgressRate: 5e6, IngressRate: 100e6,
				Delay: 30 * time.Millisecond, Jitter: 3 * time.Millisecond, LossPercent: 0.01},
		},
		{
			spec: "RATE-OUT = 1.5Mbit , delay=1.5ms",
			want: Profile{Name: "custom", EgressRate: 1_500_000, Delay: 1500 * time.Microsecond},
		},
		{spec: "rate-in=2kibit", want: Profile{Name: "custom", IngressRate: 2048}},
		{spec: "rate-in=640bit", want: Profile{Name: "custom", IngressRate: 640}},
		{spec: "rate-out=1gbit,rate-in=unlimited", want: Profile{Name: "custom", EgressRate: 1e9}},
		{spec: "loss=100%", want: Profile{Name: "custom", LossPercent: 100}},
		{spec: "delay=0,loss=0", want: Profile{Name: "custom"}},
		{
			spec: "corporate-wan,delay=80ms,rate-in=0",
			want: Profile{Name: "corporate-wan+custom", EgressRate: 5e6,
				Delay: 80 * time.Millisecond, Jitter: 3 * time.Millisecond, LossPercent: 0.01},
		},

		{spec: "", wantErr: []string{"empty", "corporate-wan"}},
		{spec: "dialup", wantErr: []string{`unknown profile "dialup"`, "corporate-wan, lan"}},
		{spec: "rate-out=5mbit,,delay=1ms", wantErr: []string{"empty element"}},
		{spec: "rate-out", wantErr: []string{`"rate-out" is not key=value`}},
		{spec: "bandwidth=5mbit", wantErr: []string{`unknown key "bandwidth"`, "rate-out, rate-in, delay, jitter, loss"}},
		{spec: "rate-out=5", wantErr: []string{`rate-out="5"`, "unit"}},
		{spec: "rate-out=5mbps", wantErr: []string{`rate-out="5mbps"`, "ambiguous", "5mbit"}},
		{spec: "rate-in=fastmbit", wantErr: []string{`rate-in="fastmbit"`, "not a number"}},
		{spec: "rate-in=-3mbit", wantErr: []string{`rate-in="-3mbit"`, "negative"}},
		{spec: "rate-in=", wantErr: []string{`rate-in=""`, "missing rate"}},
		{spec: "rate-out=4bit", wantErr: []string{"rate-out 4bit is below 8bit"}},
		{spec: "delay=30", wantErr: []string{`delay="30"`, "duration"}},
		{spec: "delay=-30ms", wantErr: []string{`delay="-30ms"`, "negative"}},
		{spec: "jitter=forever", wantErr: []string{`jitter="forever"`}},
		{spec: "delay=2ms,jitter=3ms", wantErr: []string{"jitter 3ms exceeds delay 2ms"}},
		{spec: "loss=0.01", wantErr: []string{`loss="0.01"`, `needs its "%"`}},
		{spec: "loss=120%", wantErr: []string{`loss="120%"`, "outside"}},
		{spec: "loss=abc%", wantErr: []string{`loss="abc%"`, "not a number"}},
		{spec: "delay=1ms,delay=2ms", wantErr: []string{"delay given twice"}},
		{spec: "lan,corporate-wan", wantErr: []string{`"corporate-wan" is not key=value`}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseProfile(tt.spec)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("ParseProfile(%q) = %+v, want an error", tt.spec, got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseProfile(%q): %v", tt.spec, err)
			}
			if got != tt.want {
				t.Errorf("ParseProfile(%q) = %+v, want %+v", tt.spec, got, tt.want)
			}
		})
	}
}

func TestProfileStringRoundTrip(t *testing.T) {
	profiles := []Profile{{}}
	for _, name := range BuiltinNames() {
		p, _ := Builtin(name)
		profiles = append(profiles, p)
	}
	profiles = append(profiles,
		Profile{EgressRate: 1_500_000, IngressRate: 123, Delay: 1500 * time.Microsecond, Jitter: time.Millisecond, LossPercent: 2.5},
		Profile{IngressRate: 2048},
	)
	for _, p := range profiles {
		s := p.String()
		back, err := ParseProfile(s)
		if err != nil {
			t.Errorf("ParseProfile(%q) of %+v: %v", s, p, err)
			continue
		}
		back.Name, p.Name = "", ""
		if back != p {
			t.Errorf("%+v -> %q -> %+v", p, s, back)
		}
	}
	if got, _ := Builtin("corporate-wan"); got.String() != "rate-out=5mbit,rate-in=100mbit,delay=30ms,jitter=3ms,loss=0.01%" {
		t.Errorf("corporate-wan.String() = %q", got.String())
	}
}

func TestRateOnly(t *testing.T) {
	p, _ := Builtin("corporate-wan")
	r := p.RateOnly()
	if r.Delay != 0 || r.Jitter != 0 || r.LossPercent != 0 || r.EgressRate != p.EgressRate || r.IngressRate != p.IngressRate {
		t.Errorf("RateOnly = %+v", r)
	}
	if r.needsNetem() || !p.needsNetem() {
		t.Errorf("needsNetem: rate-only %v, full %v", r.needsNetem(), p.needsNetem())
	}
}

// A profile that shapes nothing must not touch the system, so it works
// without privileges and on any platform.
func TestApplyLANChangesNothing(t *testing.T) {
	p, _ := Builtin("lan")
	undo, err := Apply(context.Background(), "no-such-interface", p, zap.NewNop())
	if err != nil {
		t.Fatalf("Apply(lan): %v", err)
	}
	if err := undo(); err != nil {
		t.Fatalf("undo: %v", err)
	}
}

func TestApplyRejectsInvalidProfile(t *testing.T) {
	_, err := Apply(context.Background(), "", Profile{Name: "bad", Delay: time.Millisecond, Jitter: time.Second}, nil)
	if err == nil || !strings.Contains(err.Error(), "jitter 1s exceeds delay 1ms") {
		t.Fatalf("Apply(bad) error = %v", err)
	}
}
