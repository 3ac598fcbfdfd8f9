package compose

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lpsdev/lps/broker"
	"github.com/lpsdev/lps/roles/mqtt2http"
	topo "github.com/lpsdev/lps/topology"
)

// composeService is what the compose test reads of a service in `docker compose config --format
// json`: the file as compose resolves it, with anchors merged and variables at their defaults.
type composeService struct {
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Ports       []struct {
		Target    int    `json:"target"`
		Published string `json:"published"`
	} `json:"ports"`
	DependsOn   map[string]json.RawMessage `json:"depends_on"`
	CapDrop     []string                   `json:"cap_drop"`
	CapAdd      []string                   `json:"cap_add"`
	SecurityOpt []string                   `json:"security_opt"`
}

// The compose files run the topology that topo.Describe plans, service by service: the
// same names, each running its role under its own SERVICE_NAME, published on the plan's port,
// forwarding (TARGET_URL) and connecting (MQTT_HOST) to the services the plan says it talks
// to, and started after them (depends_on). Nothing else runs. Compose v2 resolves the files
// (v1 has no JSON output); TestConfig checks that v1 reads them alike.
func TestComposeFilesFollowThePlan(t *testing.T) {
	var v2 *engine
	for _, e := range newEngines(t) {
		if e.name == "v2" {
			v2 = e
		}
	}
	if v2 == nil {
		t.Skip("skipping: only compose v2 prints the resolved files as JSON")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tt := range []struct {
		file, kind string
		// published maps a role's container port to its published one, as the plan's Port
		// and AdminPort are.
		listen, admin map[string]int
	}{
		{"baseline.yml", topo.Baseline, map[string]int{topo.RoleComp1: 8080, topo.RoleRastSim: 1337}, nil},
		{"lps.yml", topo.LPS, map[string]int{topo.RoleComp1: 8080, topo.RoleRastSim: 1337, topo.RoleBroker: 1883}, map[string]int{topo.RoleBroker: 9090}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			plan, err := topo.Describe(tt.kind, 0)
			if err != nil {
				t.Fatal(err)
			}
			passwords, err := broker.LoadPasswordFile("broker.passwd")
			if err != nil {
				t.Fatal(err)
			}
			// The published ports are the plan's only while nobody moves them.
			var env []string
			for _, v := range []string{"LPS_PORT_COMP1_1", "LPS_PORT_COMP1_2", "LPS_PORT_COMP1_3", "LPS_PORT_RAST_SIM", "LPS_PORT_BROKER", "LPS_PORT_BROKER_ADMIN", "LPS_BROKER_URL",
				"LPS_BROKER_USERNAME", "LPS_BROKER_PASSWORD", "LPS_MQTT2HTTP_MAX_INFLIGHT"} {
				env = append(env, v+"=")
			}
			out, err := v2.run(ctx, env, "lpsplan"+randomName(), []string{tt.file}, "config", "--format", "json")
			if err != nil {
				t.Fatalf("config: %v\n%s", err, out)
			}
			var file struct {
				Services map[string]composeService `json:"services"`
			}
			if err := json.Unmarshal([]byte(out), &file); err != nil {
				t.Fatalf("reading config --format json: %v\n%s", err, head(strings.Split(out, "\n"), 20))
			}
			for _, n := range plan.Services {
				s, ok := file.Services[n.Name]
				if !ok {
					t.Errorf("%s: the plan has it, %s does not", n.Name, tt.file)
					continue
				}
				delete(file.Services, n.Name)
				checkService(t, n, s, tt.listen[n.Role], tt.admin[n.Role])
				if tt.kind == topo.LPS {
					checkCredentials(t, n, s, passwords)
				}
				// The compose file runs mqtt2http with the product's measured default, not a
				// copy of it that was left behind when the default moved.
				if got, want := s.Environment["LPS_MAX_INFLIGHT"], strconv.Itoa(mqtt2http.DefaultMaxInflight); n.Role == topo.RoleMQTT2HTTP && got != want {
					t.Errorf("%s: LPS_MAX_INFLIGHT %q, mqtt2http's default is %s", n.Name, got, want)
				}
			}
			for name := range file.Services {
				t.Errorf("%s: %s runs it, the plan does not have it", name, tt.file)
			}
		})
	}
}

// checkService compares one compose service with its node of the plan.
func checkService(t *testing.T, n topo.Node, s composeService, listen, admin int) {
	t.Helper()
	if len(s.Command) == 0 || s.Command[0] != n.Role {
		t.Errorf("%s: command %q, want the %s role", n.Name, s.Command, n.Role)
	}
	if got := s.Environment["SERVICE_NAME"]; got != n.Name {
		t.Errorf("%s: SERVICE_NAME %q", n.Name, got)
	}
	checkHardened(t, n.Name, s.CapDrop, s.CapAdd, s.SecurityOpt, nil) // no capability, none to gain
	published := map[int]int{}
	for _, p := range s.Ports {
		port, err := strconv.Atoi(p.Published)
		if err != nil {
			t.Errorf("%s: published port %q: %v", n.Name, p.Published, err)
		}
		published[p.Target] = port
	}
	for _, want := range []struct {
		what         string
		target, port int
	}{{"port", listen, n.Port}, {"admin port", admin, n.AdminPort}} {
		if want.port == 0 {
			continue
		}
		if got := published[want.target]; got != want.port {
			t.Errorf("%s: %s %d published on %d, the plan says %d", n.Name, want.what, want.target, got, want.port)
		}
	}
	if n.Port == 0 && len(s.Ports) > 0 {
		t.Errorf("%s: publishes %v, the plan keeps it internal", n.Name, s.Ports)
	}

	var upstreams []string
	if v := s.Environment["TARGET_URL"]; v != "" {
		for _, raw := range strings.Split(v, ",") {
			u, err := url.Parse(raw)
			if err != nil {
				t.Errorf("%s: TARGET_URL %q: %v", n.Name, raw, err)
				continue
			}
			upstreams = append(upstreams, u.Hostname())
		}
	}
	if !slices.Equal(upstreams, n.Upstreams) {
		t.Errorf("%s: forwards to %v, the plan says %v", n.Name, upstreams, n.Upstreams)
	}
	if got := s.Environment["MQTT_HOST"]; got != n.Broker {
		t.Errorf("%s: MQTT_HOST %q, the plan's broker is %q", n.Name, got, n.Broker)
	}
	for _, to := range n.Talks() {
		if _, ok := s.DependsOn[to]; !ok {
			t.Errorf("%s: talks to %s but does not depend on it (depends on %v)", n.Name, to, keys(s.DependsOn))
		}
	}
}

// checkCredentials checks that the LPS topology runs with credentials and access rules: the
// broker reads broker.passwd and broker.acl (mounted at these paths), and each bridge connects
// as the user named after its service, with its password in broker.passwd (what each user may
// do is tested against the broker in package broker, TestComposeACL).
func checkCredentials(t *testing.T, n topo.Node, s composeService, passwords *broker.PasswordFile) {
	t.Helper()
	switch {
	case n.Role == topo.RoleBroker:
		if s.Environment["LPS_PASSWORD_FILE"] != "/etc/lps/broker.passwd" || s.Environment["LPS_ACL"] != "/etc/lps/broker.acl" {
			t.Errorf("%s: LPS_PASSWORD_FILE %q, LPS_ACL %q; want the mounted broker.passwd and broker.acl",
				n.Name, s.Environment["LPS_PASSWORD_FILE"], s.Environment["LPS_ACL"])
		}
	case n.Broker != "":
		user, pass := s.Environment["MQTT_USERNAME"], s.Environment["MQTT_PASSWORD"]
		if user != n.Name || !passwords.Check([]byte(user), []byte(pass)) {
			t.Errorf("%s: MQTT_USERNAME %q with MQTT_PASSWORD %q; want its own user, whose password broker.passwd holds", n.Name, user, pass)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
