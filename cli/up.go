package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/lpsdev/lps/logging"
	"github.com/lpsdev/lps/roles/mqtt2http"
	"github.com/lpsdev/lps/roles/mqttbroker"
	"github.com/lpsdev/lps/tcptune"
	"github.com/lpsdev/lps/topology"
)

// upReadyTimeout bounds how long `lps up` waits for every role to be ready.
const upReadyTimeout = time.Minute

func (a *app) newUpCmd() *cobra.Command {
	var (
		cfg         topology.Config
		statusEvery time.Duration
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a whole topology (baseline or lps) in this process on loopback until Ctrl-C",
		Long: `up runs a whole topology in this one process: rast-sim (the simulated backend), three comp2,
three comp1 and, for --topology lps, the embedded broker and three of each bridge. When every role
is ready it prints where each one listens and the commands to try, then a status line whenever
something changed (alarms accepted, delivered, the broker's backlog, refused). The console shows
starts, readiness and warnings; the lines about single requests go to --log-file (and to the
console at --log-level debug).

The services a user talks to listen on fixed ports, as the compose files publish them: comp1
7081-7083, rast-sim 8084, the broker 1883 (admin 9090); the others on free ports.
--ephemeral-ports gives every service a free port (a second topology beside a first one).`,
		Example: `  lps up --topology lps
  lps up --topology baseline --model none
  lps up --topology lps --ephemeral-ports --log-file logs
  curl -X POST localhost:7081/api/v1/simple -H 'Content-Type: application/json' \
    -d '{"phone":"0151","branch":"2001","headnumber":"8023","triggertime":"2026-01-01T00:00:00Z"}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, closeLog, err := logging.New(logging.Config{Format: a.log.format, Level: a.log.level, FileDir: a.log.dir,
				ServiceName: "lps-up", QuietRequests: true})
			if err != nil {
				return &ConfigError{err}
			}
			defer closeLog()
			if statusEvery < 0 {
				return &ConfigError{fmt.Errorf("invalid --status-every %s: must not be negative", statusEvery)}
			}
			cfg.Logger = logger
			tcptune.Report(logger.Named("tcptune"), "", 0)
			t, err := topology.New(cfg)
			var le *topology.ListenError
			if errors.As(err, &le) {
				return errors.New(listenHint(le, cfg))
			}
			if err != nil {
				return &ConfigError{flagError(cmd.Flags(), err)} // a role's field that one of up's flags sets: --broker, --ca-file, --max-inflight
			}
			ctx, stop := a.signalContext(cmd.Context())
			defer stop()
			ctx, stopOrphan := stopWhenOrphaned(ctx, logger)
			defer stopOrphan()

			done := make(chan error, 1)
			go func() { done <- t.Run(ctx) }()
			rctx, cancel := context.WithTimeout(ctx, upReadyTimeout)
			err = t.WaitReady(rctx)
			cancel()
			if err != nil {
				stop()
				return errors.Join(fmt.Errorf("the topology did not get ready: %w", err), <-done)
			}
			out := cmd.OutOrStdout()
			printTopology(out, t)
			if statusEvery > 0 {
				go printStatus(ctx, out, t, statusEvery)
			}
			return <-done
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.Kind, "topology", topology.Baseline, "which topology: baseline or lps")
	fs.StringVar(&cfg.Host, "host", "127.0.0.1", "address every role binds")
	fs.IntVar(&cfg.Comp1Port, "comp1-port", topology.DefaultComp1Port, "port of the first comp1; the others take the next ones")
	fs.IntVar(&cfg.RastSimPort, "rast-sim-port", topology.DefaultRastSimPort, "port of rast-sim (the simulated backend)")
	fs.IntVar(&cfg.BrokerPort, "broker-port", topology.DefaultBrokerPort, "lps topology: MQTT port of the embedded broker")
	fs.IntVar(&cfg.BrokerAdminPort, "broker-admin-port", topology.DefaultBrokerAdminPort, "lps topology: the embedded broker's admin port (/stats, /metrics)")
	fs.BoolVar(&cfg.Ephemeral, "ephemeral-ports", false, "give every service a free port instead of the fixed ones")
	fs.IntVar(&cfg.Instances, "instances", 3, "instances of each proxy")
	fs.StringVar(&cfg.Model, "model", "mascots2022", "rast-sim delay model: mascots2022 or none")
	fs.BoolVar(&cfg.HTTP2, "http2", false, "every HTTP hop speaks h2c")
	fs.StringVar(&cfg.BrokerURL, "broker", "", "lps topology: use this external MQTT v5 broker instead of the embedded one")
	fs.StringVar(&cfg.BrokerCAFile, "ca-file", "", "lps topology: PEM bundle of the CA certificates an mqtts:// --broker is verified with (empty: the system's)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "lps topology: the embedded broker's data directory (empty: memory)")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", 0, fmt.Sprintf("lps topology: each mqtt2http's receive maximum and concurrency (0: its default, %d; 1 is the original's)", mqtt2http.DefaultMaxInflight))
	fs.DurationVar(&statusEvery, "status-every", 5*time.Second, "print a status line this often when something changed (0: never)")
	return cmd
}

// listenHint turns a service that cannot listen into one line: the address, the cause, and
// the flag that moves it.
func listenHint(le *topology.ListenError, cfg topology.Config) string {
	flag := "--host"
	switch le.Role {
	case topology.RoleComp1:
		flag = "--comp1-port"
	case topology.RoleRastSim:
		flag = "--rast-sim-port"
	case topology.RoleBroker:
		flag = "--broker-port"
		if _, p, err := net.SplitHostPort(le.Addr); err == nil && p == strconv.Itoa(cfg.BrokerAdminPort) {
			flag = "--broker-admin-port"
		}
	}
	cause := le.Err.Error()
	if errors.Is(le.Err, syscall.EADDRINUSE) {
		cause = "the address is in use (another lps up, or another program?)"
	}
	return fmt.Sprintf("%s cannot listen on %s: %s; move it with %s, or run with --ephemeral-ports", le.Service, le.Addr, cause, flag)
}

// printTopology prints where every service listens and what to try.
func printTopology(out io.Writer, t *topology.Topology) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nSERVICE\tROLE\tLISTENS ON\n")
	var sim, admin string
	for _, s := range t.Services {
		switch v := s.Value().(type) {
		case *mqttbroker.Broker:
			admin = "http://" + v.AdminAddr().String()
			fmt.Fprintf(w, "%s\t%s\tmqtt://%s (admin %s)\n", s.Name, s.Role, s.Addr, admin)
		case *mqtt2http.Bridge:
			fmt.Fprintf(w, "%s\t%s\tadmin http://%s\n", s.Name, s.Role, s.Addr)
		default:
			if s.Role == topology.RoleRastSim {
				sim = "http://" + s.Addr.String()
			}
			fmt.Fprintf(w, "%s\t%s\thttp://%s\n", s.Name, s.Role, s.Addr)
		}
	}
	w.Flush()
	urls := t.Comp1URLs()
	fmt.Fprintf(out, "\nready. Send an alarm the way a device does:\n")
	fmt.Fprintf(out, "  curl -X POST %s -H 'Content-Type: application/json' \\\n"+
		"    -d '{\"phone\":\"0151\",\"branch\":\"2001\",\"headnumber\":\"8023\",\"triggertime\":\"%s\"}'\n",
		urls[0], time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(out, "  curl -s %s/stats                    # what rast-sim received (per id: /stats/requests)\n", sim)
	if admin != "" {
		fmt.Fprintf(out, "  curl -s %s/stats                    # the broker: queue_depth is what the consumers still owe\n", admin)
	}
	load := "lps load --rate 300 --duration 60s"
	if !slices.Equal(urls, defaultLoadURLs) {
		load += " --url " + strings.Join(urls, ",")
	}
	fmt.Fprintf(out, "  %s --verify %s   # the alarm-device workload, checked at rast-sim\n", load, sim)
	fmt.Fprintf(out, "Ctrl-C stops.\n\n")
}

// printStatus prints a status line every interval in which something changed.
func printStatus(ctx context.Context, out io.Writer, t *topology.Topology, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	var last topology.Status
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st := t.Status()
		if st == last {
			continue
		}
		last = st
		backlog := "-"
		if st.Backlog >= 0 {
			backlog = strconv.Itoa(st.Backlog)
		}
		fmt.Fprintf(out, "%s  accepted %d  delivered %d  backlog %s  refused %d\n",
			time.Now().Format("15:04:05"), st.Accepted, st.Delivered, backlog, st.Refused)
	}
}

// stopWhenOrphaned ends ctx when the process that started this one goes away while it runs
// under `go run`: go run passes no signal on when it is stopped in the background (go run ... &
// and kill %1), and the topology would outlive it. Under any other parent nothing changes (a
// nohup'd lps up is meant to outlive its shell).
func stopWhenOrphaned(ctx context.Context, logger *zap.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	parent := os.Getppid()
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", parent))
	if strings.TrimSpace(string(comm)) != "go" {
		return ctx, cancel
	}
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if os.Getppid() != parent {
				logger.Warn("go run, which started lps up, is gone; stopping")
				cancel()
				return
			}
		}
	}()
	return ctx, cancel
}
