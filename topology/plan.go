package topology

import (
	"fmt"
	"strings"
)

// Plan is a topology described once, as data: its services, the role each runs, the port a
// user reaches it on, and who talks to whom. The in-process runner (New), the fault suite's
// process runner (faults.StartCluster) and the compose files' test all start from a Plan, or
// check against one, so that a service's name or wiring is spelled in one place.
type Plan struct {
	Kind string // Baseline or LPS
	// Services are in start order: each comes after every service it talks to, and the
	// consumers (mqtt2http) come before the publishers (http2mqtt).
	Services []Node
}

// Node is one service of a Plan.
type Node struct {
	// Name is the original's name of the service (ars-comp-1-2, proxy2-1, broker, ars-comp-3):
	// the compose service, the --service-name, the process and its log file.
	Name string
	// Role is the lps subcommand it runs (RoleComp1, ...).
	Role string
	// Instance is 1..n among the replicated roles (comp1, comp2, the bridges), 0 for the single
	// ones (rast-sim, the broker).
	Instance int
	// Port is the fixed port a user reaches the service on, which compose publishes and lps up
	// binds (comp1, rast-sim, the broker's MQTT listener); 0 for a service only the others reach.
	Port int
	// AdminPort is the broker's admin API (/stats, /metrics) port; 0 for the others.
	AdminPort int
	// Upstreams are the services it forwards alarms to over HTTP, in the order of its
	// --upstream list: comp1 its next hop, comp2 rast-sim, and every mqtt2http all the comp2,
	// so that every copy of an alarm meets one dedup window (see transport.Upstreams).
	Upstreams []string
	// Broker is the MQTT broker service a bridge connects to; "" for the other roles.
	Broker string
}

// Talks lists every service n sends to: its upstreams, then its broker.
func (n Node) Talks() []string {
	out := append([]string(nil), n.Upstreams...)
	if n.Broker != "" {
		out = append(out, n.Broker)
	}
	return out
}

// Args are the command line that runs n as a process of the lps binary: its subcommand,
// --service-name, and the flags that wire it to the others. addr gives the host:port at which n
// reaches a service, which may be a proxy in between. The listen flags are the runner's.
func (n Node) Args(addr func(service string) string) []string {
	args := []string{n.Role, "--service-name", n.Name}
	if len(n.Upstreams) > 0 {
		urls := make([]string, len(n.Upstreams))
		for i, u := range n.Upstreams {
			urls[i] = "http://" + addr(u)
		}
		args = append(args, "--upstream", strings.Join(urls, ","))
	}
	if n.Broker != "" {
		args = append(args, "--broker", "mqtt://"+addr(n.Broker))
	}
	return args
}

// Describe plans a topology of kind (Baseline, LPS; "" means Baseline) with instances of each
// replicated role (0 means 3, as the original):
//
//	baseline: load -> ars-comp-1-i -> ars-comp-2-i -> ars-comp-3
//	lps:      load -> ars-comp-1-i -> proxy1-i -> broker -> proxy2-i -> every ars-comp-2 -> ars-comp-3
func Describe(kind string, instances int) (Plan, error) {
	if kind == "" {
		kind = Baseline
	}
	if kind != Baseline && kind != LPS {
		return Plan{}, fmt.Errorf("unknown topology %q (want %s or %s)", kind, Baseline, LPS)
	}
	if instances == 0 {
		instances = 3
	}
	if instances < 0 {
		return Plan{}, fmt.Errorf("instances %d: want at least 1", instances)
	}
	p := Plan{Kind: kind}
	const sim, broker = "ars-comp-3", "broker"
	name := func(format string, i int) string { return fmt.Sprintf(format, i) }
	each := func(f func(i int) Node) {
		for i := 1; i <= instances; i++ {
			p.Services = append(p.Services, f(i))
		}
	}

	p.Services = append(p.Services, Node{Name: sim, Role: RoleRastSim, Port: DefaultRastSimPort})
	comp2 := make([]string, instances)
	each(func(i int) Node {
		comp2[i-1] = name("ars-comp-2-%d", i)
		return Node{Name: comp2[i-1], Role: RoleComp2, Instance: i, Upstreams: []string{sim}}
	})
	next := func(i int) string { return comp2[i-1] } // where comp1 i forwards
	if kind == LPS {
		p.Services = append(p.Services, Node{Name: broker, Role: RoleBroker, Port: DefaultBrokerPort, AdminPort: DefaultBrokerAdminPort})
		each(func(i int) Node {
			return Node{Name: name("proxy2-%d", i), Role: RoleMQTT2HTTP, Instance: i, Upstreams: comp2, Broker: broker}
		})
		each(func(i int) Node {
			return Node{Name: name("proxy1-%d", i), Role: RoleHTTP2MQTT, Instance: i, Broker: broker}
		})
		next = func(i int) string { return name("proxy1-%d", i) }
	}
	each(func(i int) Node {
		return Node{Name: name("ars-comp-1-%d", i), Role: RoleComp1, Instance: i, Port: DefaultComp1Port + i - 1, Upstreams: []string{next(i)}}
	})
	return p, nil
}

// Node returns the service called name.
func (p Plan) Node(name string) (Node, bool) {
	for _, n := range p.Services {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// ByRole returns the services of one role, in order.
func (p Plan) ByRole(role string) []Node {
	var out []Node
	for _, n := range p.Services {
		if n.Role == role {
			out = append(out, n)
		}
	}
	return out
}

// Tiers groups the services in start order by role: a runner starts a tier once the tiers
// before it are ready, the services of one tier at once.
func (p Plan) Tiers() [][]Node {
	var out [][]Node
	for i, n := range p.Services {
		if i == 0 || p.Services[i-1].Role != n.Role {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], n)
	}
	return out
}
