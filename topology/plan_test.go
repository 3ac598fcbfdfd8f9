package topology_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/lpsdev/lps/topology"
)

// The LPS plan is the original's docker-compose-ng.yml: names, roles, published ports, and who
// talks to whom, each service after the ones it talks to.
func TestDescribeLPS(t *testing.T) {
	p, err := topology.Describe(topology.LPS, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range p.Services {
		names = append(names, n.Name)
	}
	want := []string{"ars-comp-3", "ars-comp-2-1", "ars-comp-2-2", "ars-comp-2-3", "broker",
		"proxy2-1", "proxy2-2", "proxy2-3", "proxy1-1", "proxy1-2", "proxy1-3",
		"ars-comp-1-1", "ars-comp-1-2", "ars-comp-1-3"}
	if !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v", names, want)
	}
	// Every service comes after the services it talks to.
	seen := map[string]bool{}
	for _, n := range p.Services {
		for _, to := range n.Talks() {
			if !seen[to] {
				t.Errorf("%s talks to %s, which starts after it", n.Name, to)
			}
		}
		seen[n.Name] = true
	}
	for _, tt := range []struct {
		name, role string
		port       int
		talks      []string
	}{
		{"ars-comp-3", topology.RoleRastSim, 8084, nil},
		{"ars-comp-2-2", topology.RoleComp2, 0, []string{"ars-comp-3"}},
		{"broker", topology.RoleBroker, 1883, nil},
		{"proxy2-1", topology.RoleMQTT2HTTP, 0, []string{"ars-comp-2-1", "ars-comp-2-2", "ars-comp-2-3", "broker"}},
		{"proxy1-3", topology.RoleHTTP2MQTT, 0, []string{"broker"}},
		{"ars-comp-1-2", topology.RoleComp1, 7082, []string{"proxy1-2"}},
	} {
		n, ok := p.Node(tt.name)
		if !ok {
			t.Errorf("no %s", tt.name)
			continue
		}
		if n.Role != tt.role || n.Port != tt.port || !slices.Equal(n.Talks(), tt.talks) {
			t.Errorf("%s: role %s port %d talks to %v; want %s %d %v", tt.name, n.Role, n.Port, n.Talks(), tt.role, tt.port, tt.talks)
		}
	}
	if b, _ := p.Node("broker"); b.AdminPort != 9090 {
		t.Errorf("broker admin port %d", b.AdminPort)
	}
	var tiers []string
	for _, tier := range p.Tiers() {
		tiers = append(tiers, tier[0].Role+"×"+strings.Repeat("|", len(tier)))
	}
	if got := strings.Join(tiers, " "); got != "rast-sim×| comp2×||| broker×| mqtt2http×||| http2mqtt×||| comp1×|||" {
		t.Errorf("tiers %s", got)
	}
}

// The baseline wires comp1 i to comp2 i, as the original's docker-compose.yml.
func TestDescribeBaseline(t *testing.T) {
	p, err := topology.Describe("", 2)
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != topology.Baseline || len(p.Services) != 5 {
		t.Fatalf("plan %+v", p)
	}
	for _, n := range p.ByRole(topology.RoleComp1) {
		if want := []string{"ars-comp-2-" + string(rune('0'+n.Instance))}; !slices.Equal(n.Upstreams, want) {
			t.Errorf("%s forwards to %v, want %v", n.Name, n.Upstreams, want)
		}
	}
	if len(p.ByRole(topology.RoleBroker)) != 0 {
		t.Error("the baseline has a broker")
	}
}

func TestDescribeRejects(t *testing.T) {
	for _, tt := range []struct {
		kind      string
		instances int
		want      string
	}{
		{"mesh", 3, `unknown topology "mesh" (want baseline or lps)`},
		{topology.LPS, -1, "instances -1: want at least 1"},
	} {
		if _, err := topology.Describe(tt.kind, tt.instances); err == nil || err.Error() != tt.want {
			t.Errorf("Describe(%q, %d) = %v, want %q", tt.kind, tt.instances, err, tt.want)
		}
	}
}

// Args wire a process of the lps binary to the addresses its runner gives.
func TestNodeArgs(t *testing.T) {
	p, _ := topology.Describe(topology.LPS, 2)
	n, _ := p.Node("proxy2-2")
	got := n.Args(func(s string) string { return s + ":1" })
	want := []string{"mqtt2http", "--service-name", "proxy2-2", "--upstream", "http://ars-comp-2-1:1,http://ars-comp-2-2:1", "--broker", "mqtt://broker:1"}
	if !slices.Equal(got, want) {
		t.Errorf("args %q, want %q", got, want)
	}
}
