package compose

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	topo "github.com/lpsdev/lps/topology"
)

// hardenedService is what TestEveryServiceRunsWithoutPrivileges reads of a service in the
// resolved file (`config`, YAML under both compose majors).
type hardenedService struct {
	CapDrop     []string          `yaml:"cap_drop"`
	CapAdd      []string          `yaml:"cap_add"`
	SecurityOpt []string          `yaml:"security_opt"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
}

// checkHardened fails unless s runs with no capability but those in allowed and cannot gain
// any (no-new-privileges). Shared with the plan test.
func checkHardened(t *testing.T, name string, capDrop, capAdd, securityOpt []string, allowed []string) {
	t.Helper()
	if !slices.Equal(capDrop, []string{"ALL"}) {
		t.Errorf("%s: cap_drop %v, want [ALL]", name, capDrop)
	}
	if !slices.Contains(securityOpt, "no-new-privileges:true") {
		t.Errorf("%s: security_opt %v lacks no-new-privileges:true", name, securityOpt)
	}
	capAdd, allowed = slices.Sorted(slices.Values(capAdd)), slices.Sorted(slices.Values(allowed)) // compose sorts them
	if !slices.Equal(capAdd, allowed) && !(len(capAdd) == 0 && len(allowed) == 0) {
		t.Errorf("%s: cap_add %v, want %v", name, capAdd, allowed)
	}
}

// Every service of the compose files drops every capability and cannot gain one (issue 14);
// the WAN overlays add back NET_ADMIN alone to the services they shape (the LPS's comp2 keeps
// its dedup window there on a volume root owns, see lps.wan.yml). The admin listeners,
// loopback by default, are opened to the compose network where something outside the
// container reaches them (the broker's published port, the experiment's mqtt2http metrics).
// Under each compose command.
func TestEveryServiceRunsWithoutPrivileges(t *testing.T) {
	newEngines(t).each(t, func(t *testing.T, e *engine) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for _, tt := range []struct {
			files  []string
			count  int
			shaped func(topo.Node) bool // the services the overlay gives NET_ADMIN
			kind   string
		}{
			{[]string{"baseline.yml"}, len(baselineServices), nil, topo.Baseline},
			{[]string{"baseline.yml", "baseline.wan.yml"}, len(baselineServices), func(n topo.Node) bool { return n.Role != topo.RoleRastSim }, topo.Baseline},
			{[]string{"lps.yml"}, len(lpsServices), nil, topo.LPS},
			{[]string{"lps.yml", "lps.wan.yml"}, len(lpsServices), func(n topo.Node) bool { return n.Role != topo.RoleRastSim && n.Role != topo.RoleBroker }, topo.LPS},
		} {
			out, err := e.run(ctx, nil, "lpstest"+randomName(), tt.files, "config")
			if err != nil {
				t.Fatalf("%v config: %v\n%s", tt.files, err, out)
			}
			var file struct {
				Services map[string]hardenedService `yaml:"services"`
			}
			if err := yaml.Unmarshal([]byte(out), &file); err != nil {
				t.Fatalf("%v config: reading the YAML: %v", tt.files, err)
			}
			if len(file.Services) != tt.count {
				t.Errorf("%v: %d services, want %d", tt.files, len(file.Services), tt.count)
			}
			plan, err := topo.Describe(tt.kind, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range plan.Services {
				s, ok := file.Services[n.Name]
				if !ok {
					t.Errorf("%v: no service %s", tt.files, n.Name)
					continue
				}
				var allowed []string
				if tt.shaped != nil && tt.shaped(n) {
					allowed = []string{"NET_ADMIN"}
				}
				checkHardened(t, n.Name, s.CapDrop, s.CapAdd, s.SecurityOpt, allowed)
				if n.Role == topo.RoleBroker || n.Role == topo.RoleMQTT2HTTP {
					if got := s.Environment["LPS_ADMIN_LISTEN"]; got != "0.0.0.0:9090" {
						t.Errorf("%v: %s: LPS_ADMIN_LISTEN %q, want 0.0.0.0:9090 (the default is loopback)", tt.files, n.Name, got)
					}
				}
			}
		}
	})
}
